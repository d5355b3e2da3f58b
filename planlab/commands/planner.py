"""`planlab planner --config FILE`: the long-running planner daemon for a cluster (or, for
trying it out, a running emulator), with an advisory mode that decides but never scales.

The config file (YAML; deploy/configmap.yaml holds an example):

    name, model, cluster, sla, planner   as in a scenario file
    prometheus: {url, model, bearer_token_file, ca_file, verify_tls, timeout, retries,
                 backoff, metric_names: dynamo|vllm, job, staleness, scrape_interval}
    kubernetes: {namespace, mode: deployment|dgd, prefill_deployment, decode_deployment,
                 dgd_name, prefill_service, decode_service, startup_timeout, ...}
      or
    emulator: {url}            a running `planlab emulate` frontend (read-only: advisory)
      or
    server: {url, prefill, decode}   a bare OpenAI-compatible server (one vLLM) that
                               cannot be scaled: its /health says ready, the planner is
                               advisory (decides and records, never scales)
    metrics: {address, port}   where the daemon serves its own gauges
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from planner.errors import ConfigError

log = logging.getLogger(__name__)

TOP_KEYS = (
    "name",
    "model",
    "cluster",
    "sla",
    "planner",
    "prometheus",
    "kubernetes",
    "emulator",
    "server",
    "metrics",
)
PROM_KEYS = (
    "url",
    "model",
    "bearer_token_file",
    "ca_file",
    "verify_tls",
    "timeout",
    "retries",
    "backoff",
    "metric_names",
    "job",
    "staleness",
    "scrape_interval",
)

EXAMPLES = """examples:
  planlab planner --config deploy/planner.yaml
  planlab planner --config planner.yaml --advisory --out runs/planner --metrics-port 9091
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "planner",
        help="run the planner daemon against Prometheus and Kubernetes",
        description="Every planner.interval: read the frontend metrics from Prometheus, the "
        "replicas from Kubernetes (or an emulator), decide, scale (unless --advisory), log one "
        "line and export gauges on /metrics. Stops cleanly on SIGTERM or Ctrl-C.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="planner config (YAML)")
    p.add_argument("--advisory", action="store_true", help="decide and record, never scale")
    p.add_argument("--out", metavar="DIR", help="append decisions.jsonl in this directory")
    p.add_argument(
        "--metrics-port", type=int, help="port for /metrics (default: config, else 9091; 0: any)"
    )
    p.add_argument(
        "--metrics-address",
        help="address for /metrics (default: config, else 127.0.0.1; 0.0.0.0 in a pod)",
    )
    p.add_argument("--max-ticks", type=int, help=argparse.SUPPRESS)  # tests: stop after N ticks
    p.set_defaults(func=main)


def _fail(source: str, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"got {value!r}; expected {expected}", source=source, key=key)


def _mapping(data: Any, source: str, key: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(data, dict):
        raise _fail(source, key or "(top level)", data, "a mapping")
    for k in data:
        if k not in allowed:
            raise ConfigError(
                f"unknown key {k!r}; expected one of {', '.join(allowed)}",
                source=source,
                key=f"{key}.{k}" if key else str(k),
            )
    return data


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate the daemon config; returns the parsed parts (scenario, prometheus
    settings, connector settings, metrics address). ConfigError names file and key."""
    from scenario import parse_duration, parse_scenario
    from scenario.schema import load_yaml, yaml_error_text

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError("config file not found; expected a YAML file", source=source)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_text(exc), source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the file ({exc}); expected UTF-8 YAML", source=source
        ) from None
    data = _mapping(data, source, "", TOP_KEYS)
    data = dynamo_aliases(data, source)
    for key in ("model", "prometheus"):
        if key not in data:
            raise ConfigError("missing; expected a mapping", source=source, key=key)
    if sum(k in data for k in ("kubernetes", "emulator", "server")) != 1:
        raise ConfigError(
            "expected exactly one of kubernetes (scale Deployments or a DGD), emulator "
            "(a running planlab emulate frontend) or server (a bare server, advisory)",
            source=source,
            key="kubernetes",
        )
    prom = _mapping(data["prometheus"], source, "prometheus", PROM_KEYS)
    # The scenario sections are validated by the scenario parser (same messages and
    # rules); the workload is a placeholder the daemon never uses.
    scenario_data = {
        k: data[k] for k in ("name", "model", "cluster", "sla", "planner") if k in data
    }
    scenario_data.setdefault("name", path.stem)
    scenario_data["duration"] = 1
    scenario_data["workload"] = {
        "arrival": {"process": "constant", "rate": 1},
        "isl": {"dist": "fixed", "value": 1},
        "osl": {"dist": "fixed", "value": 1},
    }
    if "scrape_interval" in prom:
        scenario_data["prometheus"] = {"scrape_interval": prom["scrape_interval"]}
    scenario = parse_scenario(scenario_data, source)

    url = prom.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _fail(source, "prometheus.url", url, "an http:// or https:// URL")
    names = prom.get("metric_names", "dynamo")
    from live.prometheus import METRIC_SETS

    if names not in METRIC_SETS:
        raise _fail(source, "prometheus.metric_names", names, f"one of {', '.join(METRIC_SETS)}")
    retries = prom.get("retries", 3)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise _fail(source, "prometheus.retries", retries, "an integer >= 0")
    verify = prom.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise _fail(source, "prometheus.verify_tls", verify, "true or false")
    for key in ("model", "bearer_token_file", "ca_file", "job"):
        if key in prom and (not isinstance(prom[key], str) or not prom[key]):
            raise _fail(source, f"prometheus.{key}", prom[key], "a non-empty string")
    prometheus = {
        "url": url,
        "model": prom.get("model"),
        "bearer_token_file": prom.get("bearer_token_file"),
        "ca_file": prom.get("ca_file"),
        "verify_tls": verify,
        "timeout_s": parse_duration(
            prom.get("timeout", 5.0), "prometheus.timeout", source, positive=True
        ),
        "retries": retries,
        "backoff_s": parse_duration(prom.get("backoff", 0.5), "prometheus.backoff", source),
        "metric_names": names,
        "job": prom.get("job"),
        "staleness_s": parse_duration(
            prom.get("staleness", max(30.0, 5 * scenario.prometheus.scrape_interval_s)),
            "prometheus.staleness",
            source,
            positive=True,
        ),
    }

    kube = emulator = server = None
    if "kubernetes" in data:
        from live.kubernetes import parse_kubernetes_settings

        kube = parse_kubernetes_settings(data["kubernetes"], source)
    elif "server" in data:
        srv = _mapping(data["server"], source, "server", ("url", "prefill", "decode"))
        url = srv.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _fail(source, "server.url", url, "the server's http:// base URL")
        server = {"url": url.rstrip("/")}
        for role in ("prefill", "decode"):
            n = srv.get(role, 1)
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise _fail(source, f"server.{role}", n, "an integer >= 0 (replicas it counts as)")
            server[role] = n
    else:
        emu = _mapping(data["emulator"], source, "emulator", ("url",))
        emulator = emu.get("url")
        if not isinstance(emulator, str) or not emulator.startswith(("http://", "https://")):
            raise _fail(source, "emulator.url", emulator, "the emulator's http:// URL")

    metrics = _mapping(data.get("metrics") or {}, source, "metrics", ("address", "port"))
    port = metrics.get("port", 9091)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise _fail(source, "metrics.port", port, "a port number 0..65535")
    address = metrics.get("address", "127.0.0.1")
    if not isinstance(address, str) or not address:
        raise _fail(source, "metrics.address", address, "an address such as 127.0.0.1")
    return {
        "scenario": scenario,
        "prometheus": prometheus,
        "kubernetes": kube,
        "emulator": emulator,
        "server": server,
        "metrics": {"address": address, "port": port},
    }


# Dynamo 1.6's planner config keys (dynamo/planner/config/planner_config.py in the
# ai-dynamo 1.6.1 wheel) that mean what a planlab key means, accepted in the `planner:`
# section so a Dynamo user's settings carry over: alias -> (planlab key path, transform).
DYNAMO_ALIASES: dict[str, tuple[tuple[str, ...], Any]] = {
    "throughput_adjustment_interval_seconds": (("planner", "interval"), None),
    "adjustment_interval": (("planner", "interval"), None),  # Dynamo's flag before 1.6
    "max_gpu_budget": (("planner", "max_gpu_budget"), None),
    "min_endpoint": (("planner", "min_replicas"), None),
    "load_predictor": (("planner", "predictor"), None),
    "no_correction": (("planner", "correction"), "negate"),
    "prefill_engine_num_gpu": (("cluster", "prefill", "gpus_per_replica"), None),
    "decode_engine_num_gpu": (("cluster", "decode", "gpus_per_replica"), None),
    "ttft_ms": (("sla", "ttft_ms"), None),
    "itl_ms": (("sla", "itl_ms"), None),
    "metric_pulling_prometheus_endpoint": (("prometheus", "url"), None),
    "model_name": (("prometheus", "model"), None),
}


def dynamo_aliases(data: dict, source: str) -> dict:
    """A copy of the config with Dynamo's key names in `planner:` moved to planlab's; the
    same setting given under both names with different values is an error."""
    planner = data.get("planner")
    if not isinstance(planner, dict) or not any(k in DYNAMO_ALIASES for k in planner):
        return data
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    out["planner"] = dict(planner)
    for alias in [k for k in planner if k in DYNAMO_ALIASES]:
        path, transform = DYNAMO_ALIASES[alias]
        value = out["planner"].pop(alias)
        if transform == "negate":
            if not isinstance(value, bool):
                raise _fail(source, f"planner.{alias}", value, "true or false")
            value = not value
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise _fail(source, ".".join(path[: i + 1]), child, "a mapping")
            node[part] = child = dict(child)
            node = child
        leaf = path[-1]
        if leaf in node and node[leaf] != value:
            raise ConfigError(
                f"Dynamo's name for {'.'.join(path)} (= {value!r}), which is also given as "
                f"{node[leaf]!r}; expected one of the two",
                source=source,
                key=f"planner.{alias}",
            )
        node[leaf] = value
    return out


def build_daemon(cfg: dict[str, Any], args: argparse.Namespace):
    """The PlannerDaemon a validated config describes (connector, source, policy)."""
    from live.daemon import EmulatorConnector, PlannerDaemon
    from live.prometheus import METRIC_SETS, PrometheusSource
    from planlab.profiles import resolve_model
    from planner.loop import PlannerLoop
    from planner.policies import make_policy

    scenario = cfg["scenario"]
    advisory = bool(args.advisory)
    source_file = str(args.config)
    if cfg["emulator"] is not None:
        if not advisory:
            raise ConfigError(
                "the emulator connector is read-only (the emulator has no scaling API); "
                "run with --advisory",
                source=source_file,
                key="emulator",
            )
        connector = EmulatorConnector(cfg["emulator"])
    elif cfg.get("server") is not None:
        from live.advisory import AdvisoryConnector

        srv = cfg["server"]
        if not advisory:
            log.warning("server: %s cannot be scaled; the planner is advisory", srv["url"])
        advisory = True
        connector = AdvisoryConnector(
            f"{srv['url']}/health", prefill=srv["prefill"], decode=srv["decode"]
        )
    else:
        from live.kubernetes import KubernetesConnector

        connector = KubernetesConnector.from_settings(cfg["kubernetes"])
    p = dict(cfg["prometheus"])
    names, label = METRIC_SETS[p.pop("metric_names")]
    source = PrometheusSource(p.pop("url"), metric_names=names, model_label=label, **p)
    profile = resolve_model(scenario.model)
    pcfg = scenario.planner_config()
    planner = PlannerLoop(make_policy(pcfg, profile), pcfg)
    metrics = cfg["metrics"]
    port = args.metrics_port if args.metrics_port is not None else metrics["port"]
    address = args.metrics_address or metrics["address"]
    return PlannerDaemon(
        planner,
        source,
        connector,
        interval_s=pcfg.interval_s,
        advisory=advisory,
        metrics_address=address,
        metrics_port=port,
        decisions_path=Path(args.out) / "decisions.jsonl" if args.out else None,
    )


def main(args: argparse.Namespace) -> int:
    import asyncio

    from live.driver import tick_line

    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = load_config(args.config)
    daemon = build_daemon(cfg, args)
    port = daemon.start_metrics()
    print(
        f"planlab planner: {cfg['scenario'].planner.policy} every "
        f"{daemon.driver.interval_s:g} s{' (advisory)' if daemon.driver.advisory else ''}; "
        f"metrics on http://{daemon.metrics_address}:{port}/metrics",
        flush=True,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        limit = args.max_ticks

        def on_record(record) -> None:
            print(tick_line(record), flush=True)
            if limit is not None and len(daemon.driver.records) >= limit:
                stop.set()

        daemon.on_record = on_record
        await daemon.run(stop)

    asyncio.run(serve())
    print("planlab planner: stopped", flush=True)
    return 0
