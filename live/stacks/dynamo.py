"""NVIDIA Dynamo 1.6 on this machine: its own frontend, mocker prefill and decode workers
timed from the scenario's profile, a real Prometheus scraping them all, and a
ProcessConnector that scales the mocker workers for real (optional extra planlab[dynamo]).

No etcd or NATS: discovery goes through files (DYN_DISCOVERY_BACKEND=file,
DYN_FILE_KV=<workdir>/kv), requests over TCP, events over ZMQ. The HTTP, status and
request-plane servers bind 127.0.0.1 (Dynamo's ZMQ event publishers bind 0.0.0.0 and
advertise 127.0.0.1; no setting for their bind address was found). What planlab writes
for the mocker:

- a model directory with a tokenizer built by the `tokenizers` package (no hub): a word
  tokenizer of 32000 words, so "the " * n is exactly n tokens and every random token id
  the mocker emits decodes to a non-empty word (with a small vocabulary most ids decode to
  nothing and the frontend drops those chunks); a chat template that is the message
  text itself; a Llama-style config.json;
- the mocker's timing tables (`--planner-profile-data`, an npz with prefill_isl,
  prefill_ttft_ms, decode_active_kv_tokens, decode_context_length, decode_itl) evaluated
  from any PerfProfile planlab loads, the analytic default included. The layout is the
  one `dynamo/mocker/utils/planner_profiler_perf_data_converter.py` writes and
  `is_mocker_format_npz` checks (ai-dynamo 1.6.1); Dynamo's converter itself fits its
  planner's regression and imports aisimulate, so planlab evaluates its own profile.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import random
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.emulator.prometheus_server import PrometheusServer
from live.processes import (
    ProcessConnector,
    RoleConfig,
    Worker,
    WorkerSpec,
    _signal_group,
    spawn,
    stop_process,
)
from live.stacks import StackError
from planner.errors import ConfigError
from scenario import Scenario

log = logging.getLogger(__name__)

EXTRA_HINT = (
    "the dynamo stack needs the planlab[dynamo] extra: pip install 'planlab[dynamo]' "
    "&& pip install --no-deps ai-dynamo==1.6.1 (ai-dynamo's aisimulate dependency is only "
    "a stub on PyPI)"
)
VOCAB_SIZE = 32000
BLOCK_SIZE = 64  # vLLM's default KV block; the mocker's default for engine-type vllm
DEFAULT_MODEL = "planlab-dynamo"
# The mocker logs this once its --startup-time has passed (dynamo_llm::mocker, 1.6.1). Its
# /health stays 503 "notready" for its whole life (no health-check payload is registered)
# and a decode worker's endpoint reads "ready" from its first second, so this line is the
# only sign that the simulated engine has started.
STARTED_LINE = b"Engine startup simulation completed"
_WORKER_ID = re.compile(r'dynamo_component_uptime_seconds\{[^}]*worker_id="([0-9a-f]+)"')
_LOOPBACK = "127.0.0.1"
STARTUP_MODES = ("mocker", "hidden")


def low_port(lo: int = 20000, hi: int = 32767) -> int:
    """A free 127.0.0.1 port below 32768: Dynamo 1.6 reads DYN_SYSTEM_PORT as a signed
    16-bit integer and a worker given 57681 exits at start ("expected i16")."""
    for port in random.Random().sample(range(lo, hi + 1), 200):
        with socket.socket() as s:
            try:
                s.bind((_LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {lo}-{hi} on {_LOOPBACK}")


def check_installed() -> None:
    """ConfigError naming the extra when Dynamo or tokenizers is missing."""
    for mod in ("dynamo.mocker", "dynamo.frontend", "tokenizers"):
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigError(f"{mod} is not installed; {EXTRA_HINT}", key="--stack")


# -- what planlab writes for the mocker ------------------------------------------------


def write_model_dir(path: Path, *, max_len_tokens: int = 131072) -> Path:
    """A model directory the frontend and the mocker load without a hub: tokenizer.json
    (a 32000-word WordLevel tokenizer), tokenizer_config.json (chat template = the text)
    and config.json. Kept when already written with the same content."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": max_len_tokens,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    }
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": max_len_tokens,
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    }
    stamp = path / ".planlab-model.json"
    want = json.dumps({"vocab": VOCAB_SIZE, "config": config, "tok": tok_config}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == want and (path / "tokenizer.json").exists():
        return path
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "the": 3}
    vocab.update({f"w{i}": i for i in range(len(vocab), VOCAB_SIZE)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1))
    (path / "config.json").write_text(json.dumps(config, indent=1))
    stamp.write_text(want)
    return path


def _grid(lo: float, hi: float, n: int) -> np.ndarray:
    """n even steps and n log-spaced ones from lo to hi, merged: fine where curves bend
    (short prompts, small contexts) and over the whole range. The mocker binary-searches
    the axis, so the points need only be increasing."""
    lo = max(lo, 1e-9)
    return np.unique(np.concatenate([np.linspace(lo, hi, n), np.geomspace(lo, hi, n)]))


def mocker_tables(profile, *, resolution: int = 128) -> dict[str, np.ndarray]:
    """The mocker's timing tables from a PerfProfile.

    Prefill: TTFT (ms) of one prompt at each ISL of a grid over the profile's ISL range.
    Decode: ITL (ms) on a grid of active KV tokens (0..max_kv_tokens) x context length
    (1..the profile's largest context), the profile asked at kv usage
    active / max_kv_tokens with every sequence at that context: the mocker looks a step up
    at (its active KV tokens, active KV tokens / batch size).
    """
    isl = np.asarray(profile.prefill_isl, dtype=np.float64)
    prefill_isl = _grid(max(1.0, isl.min()), isl.max(), 2 * resolution)
    prefill_ttft = np.asarray(profile.prefill_ttft_ms_at(prefill_isl), dtype=np.float64)
    max_kv = float(profile.max_kv_tokens)
    ctx = np.asarray(profile.decode_context, dtype=np.float64)
    kv_tokens = np.concatenate([[0.0], _grid(1.0, max_kv, resolution)])
    context = _grid(1.0, max(2.0, float(ctx.max())), resolution)
    kk, cc = np.meshgrid(kv_tokens / max_kv, context, indexing="ij")
    itl = np.asarray(profile.decode_itl_ms_at(kk.ravel(), cc.ravel()), dtype=np.float64)
    return {
        "prefill_isl": prefill_isl,
        "prefill_ttft_ms": prefill_ttft,
        "decode_active_kv_tokens": kv_tokens,
        "decode_context_length": context,
        "decode_itl": itl.reshape(len(kv_tokens), len(context)),
    }


def write_mocker_npz(profile, path: Path, *, resolution: int = 128) -> Path:
    """mocker_tables(profile) saved where --planner-profile-data can read it."""
    tables = mocker_tables(profile, resolution=resolution)
    bad = [k for k, v in tables.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ConfigError(f"the profile gives non-finite values for {bad[0]}", key="model")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **tables)
    return path


# -- the stack -------------------------------------------------------------------------


def _max_workers(scenario: Scenario, role: str, cap: int) -> int:
    p = scenario.planner
    rs = getattr(scenario.cluster, role)
    n = cap
    if p.max_replicas is not None:
        n = min(n, p.max_replicas)
    if p.max_gpu_budget is not None:
        n = min(n, max(1, p.max_gpu_budget // max(1, rs.gpus_per_replica)))
    return max(n, rs.replicas, 1)


def _http(url: str, timeout_s: float = 1.0) -> tuple[int, str] | None:
    """(status, body) or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def _log_has(path: Path | None, needle: bytes) -> bool:
    if path is None or not path.exists():
        return False
    with open(path, "rb") as f:
        return needle in f.read()


@dataclass
class DynamoStack:
    """A running Dynamo stack. frontend_url is the OpenAI base URL without /v1."""

    frontend_url: str
    prometheus_url: str | None
    connector: ProcessConnector
    model: str
    workdir: Path
    frontend_pid: int
    system_ports: dict[str, list[int]]
    prometheus_pid: int | None = None
    metric_names: str = "dynamo"
    _stack: contextlib.ExitStack | None = None

    def worker_metrics_url(self, worker: Worker) -> str:
        return f"http://{_LOOPBACK}:{self.system_ports[worker.role][worker.slot]}/metrics"

    def pids(self) -> set[int]:
        """Every process of the stack now running (frontend and workers; not Prometheus)."""
        return {self.frontend_pid} | self.connector.pids()

    def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()


def _base_env(workdir: Path) -> dict[str, str]:
    return {
        "DYN_DISCOVERY_BACKEND": "file",
        "DYN_FILE_KV": str(workdir / "kv"),
        "DYN_REQUEST_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq",
        "DYN_SYSTEM_HOST": _LOOPBACK,
        "DYN_TCP_RPC_HOST": _LOOPBACK,
        "DYN_TCP_RESPONSE_STREAM_HOST": _LOOPBACK,
        "DYN_EVENT_PLANE_HOST": _LOOPBACK,
    }


def _mocker_role(
    scenario: Scenario,
    role: str,
    *,
    model: str,
    model_dir: Path,
    npz: Path,
    profile,
    env: dict[str, str],
    system_ports: list[int],
    bootstrap_ports: list[int],
    drain_timeout_s: float,
    startup: str,
) -> RoleConfig:
    rs = getattr(scenario.cluster, role)
    startup_s = max(0.0, rs.startup_s)
    blocks = max(1, int(profile.max_kv_tokens) // BLOCK_SIZE)
    kv_bytes = getattr(profile, "kv_bytes_per_token", None)
    argv = [
        sys.executable,
        "-m",
        "dynamo.mocker",
        "--model-path",
        str(model_dir),
        "--model-name",
        model,
        "--disaggregation-mode",
        role,
        "--planner-profile-data",
        str(npz),
        "--discovery-backend",
        "file",
        "--request-plane",
        "tcp",
        "--startup-time",
        f"{startup_s if startup == 'mocker' else 0.0:g}",
        "--num-gpu-blocks-override",
        str(blocks),
        "--block-size",
        str(BLOCK_SIZE),
        # Every live prompt is "the the ...": with the mocker's default prefix caching
        # nearly all of it would be a cache hit, which planlab's simulator does not model.
        "--no-enable-prefix-caching",
        # planlab's KV transfer bandwidth is in gigabits/s, the mocker's in gigabytes/s.
        "--kv-transfer-bandwidth",
        f"{scenario.cluster.kv_transfer.bandwidth_gbps / 8.0:g}",
    ]
    if kv_bytes:
        argv += ["--kv-bytes-per-token", str(int(kv_bytes))]
    if scenario.cluster.prefill.max_batch_tokens:
        argv += ["--max-num-batched-tokens", str(scenario.cluster.prefill.max_batch_tokens)]
    if role == "decode" and rs.max_num_seqs:
        argv += ["--max-num-seqs", str(rs.max_num_seqs)]

    def command(slot: int) -> WorkerSpec:
        extra = ["--bootstrap-ports", str(bootstrap_ports[slot])] if role == "prefill" else []
        wenv = dict(env, DYN_SYSTEM_PORT=str(system_ports[slot]))
        full = argv + extra
        if startup == "hidden" and startup_s > 0:
            # The same PID sleeps out the startup, then becomes the mocker (exec): nothing
            # is registered in discovery before the worker is ready.
            full = ["/bin/sh", "-c", 'sleep "$0" && exec "$@"', f"{startup_s:g}", *full]
        return WorkerSpec(tuple(full), tuple(sorted(wenv.items())))

    def ready(w: Worker) -> bool:
        answer = _http(f"http://{_LOOPBACK}:{system_ports[w.slot]}/metrics", 1.0)
        if answer is None or answer[0] != 200:
            return False
        found = _WORKER_ID.search(answer[1])
        if found:
            w.info["worker_id"] = found.group(1)
        return found is not None and _log_has(w.log_path, STARTED_LINE)

    timeout = rs.startup_timeout_s if rs.startup_timeout_s is not None else 3 * rs.startup_s
    return RoleConfig(
        command=command,
        ready=ready,
        # Dynamo's own graceful shutdown on SIGTERM: the instance leaves discovery at once
        # (the frontend stops routing to it), in-flight requests finish, then it exits.
        stop_sending=lambda w: _signal_group(w.pid, signal.SIGTERM),
        inflight=None,
        startup_timeout_s=max(30.0, timeout),
        drain_timeout_s=drain_timeout_s,
        stop_grace_s=10.0,
        max_workers=len(system_ports),
    )


def _wait_frontend(url: str, model: str, proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Dynamo frontend exited with code {proc.returncode}")
        answer = _http(f"{url}/v1/models", 1.0)
        if answer is not None and answer[0] == 200:
            try:
                ids = [m.get("id") for m in json.loads(answer[1]).get("data", [])]
            except ValueError:
                ids = []
            if model in ids:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"the Dynamo frontend at {url} did not list model {model!r} in {timeout_s:.0f} s"
    )


@contextlib.contextmanager
def start_stack(
    scenario: Scenario,
    workdir: Path,
    *,
    profile=None,
    prometheus: bool = True,
    frontend_port: int = 0,
    prometheus_port: int = 0,
    scrape_interval_s: float | None = None,
    max_workers: int = 4,
    drain_timeout_s: float = 300.0,
    ready_timeout_s: float | None = None,
    startup: str = "mocker",
) -> Iterator[DynamoStack]:
    """Start Dynamo's frontend, the scenario's prefill and decode mocker workers and a
    Prometheus scraping them; yield when the frontend lists the model and every worker has
    started; stop everything by PID on the way out.

    profile: the PerfProfile to time the mocker with (default: the scenario's analytic
    model). max_workers: slots per role (the scenario's max_replicas or GPU budget may
    lower it); each slot has its own system (metrics) port, which Prometheus scrapes
    whether or not a worker holds it. startup: "mocker" passes the role's startup to the
    mocker's --startup-time (the mocker registers in discovery at once and the frontend
    routes to it while it "starts"); "hidden" waits the startup out before starting the
    mocker, so a worker gets traffic only once ready, as planlab's simulator assumes.
    """
    if startup not in STARTUP_MODES:
        raise ConfigError(
            f"expected startup one of {', '.join(STARTUP_MODES)}, got {startup!r}", key="startup"
        )
    check_installed()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kv").mkdir(exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    from live.emulator.launch import scenario_profile  # one rule for every live target

    profile = scenario_profile(scenario, profile)
    model = DEFAULT_MODEL
    if scenario.model.analytic is not None:
        model = scenario.model.analytic.model
    model_dir = write_model_dir(workdir / "model")
    npz = write_mocker_npz(profile, workdir / "mocker_perf.npz")
    env = _base_env(workdir)
    slots = {r: _max_workers(scenario, r, max_workers) for r in ("prefill", "decode")}
    taken: set[int] = {frontend_port} if frontend_port else set()

    def ports(n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            p = low_port()
            if p not in taken:
                taken.add(p)
                out.append(p)
        return out

    system_ports = {r: ports(n) for r, n in slots.items()}
    bootstrap_ports = ports(slots["prefill"])
    roles = {
        r: _mocker_role(
            scenario,
            r,
            model=model,
            model_dir=model_dir,
            npz=npz,
            profile=profile,
            env=env,
            system_ports=system_ports[r],
            bootstrap_ports=bootstrap_ports,
            drain_timeout_s=drain_timeout_s,
            startup=startup,
        )
        for r in ("prefill", "decode")
    }
    c = scenario.cluster
    initial = {"prefill": c.prefill.replicas, "decode": c.decode.replicas}
    startup = max(c.prefill.startup_s, c.decode.startup_s)
    wait_s = ready_timeout_s if ready_timeout_s is not None else 60.0 + 2 * startup
    port = frontend_port or ports(1)[0]
    url = f"http://{_LOOPBACK}:{port}"

    with contextlib.ExitStack() as stack:
        fe_env = dict(env)
        fe_argv = [
            sys.executable,
            "-m",
            "dynamo.frontend",
            "--http-host",
            _LOOPBACK,
            "--http-port",
            str(port),
            "--discovery-backend",
            "file",
            "--request-plane",
            "tcp",
        ]
        frontend = spawn(fe_argv, env=fe_env, log_path=logs / "frontend.log")
        stack.callback(stop_process, frontend, grace_s=10.0)
        log.info("dynamo frontend pid %d on %s", frontend.pid, url)
        connector = stack.enter_context(ProcessConnector(roles, initial=initial, log_dir=logs))
        t0 = time.monotonic()
        try:
            connector.wait_ready(wait_s)
            _wait_frontend(url, model, frontend, max(5.0, wait_s - (time.monotonic() - t0)))
        except (TimeoutError, RuntimeError) as exc:
            raise StackError(f"the Dynamo stack did not come up: {exc}; logs in {logs}") from exc
        prom_url = prom_pid = None
        if prometheus:
            targets = [f"{_LOOPBACK}:{port}"] + [
                f"{_LOOPBACK}:{p}" for r in ("prefill", "decode") for p in system_ports[r]
            ]
            interval = scrape_interval_s or scenario.prometheus.scrape_interval_s
            prom = PrometheusServer(targets, scrape_interval_s=interval, port=prometheus_port)
            stack.callback(prom.stop)
            prom_url = prom.start()
            prom_pid = prom._proc.pid if prom._proc is not None else None
        handle = DynamoStack(
            frontend_url=url,
            prometheus_url=prom_url,
            connector=connector,
            model=model,
            workdir=workdir,
            frontend_pid=frontend.pid,
            system_ports=system_ports,
            prometheus_pid=prom_pid,
        )
        log.info(
            "dynamo stack up in %.1f s: %d prefill, %d decode mocker workers; logs in %s",
            time.monotonic() - t0,
            initial["prefill"],
            initial["decode"],
            logs,
        )
        handle._stack = stack.pop_all()
    try:
        yield handle
    finally:
        handle.close()


__all__ = [
    "DynamoStack",
    "check_installed",
    "mocker_tables",
    "start_stack",
    "write_mocker_npz",
    "write_model_dir",
]
