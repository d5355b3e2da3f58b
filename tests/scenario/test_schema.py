"""The scenario schema: durations, schedules, defaults, paths, overrides, the round trip,
and one test per kind of bad input (each message names the file, key path and value)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from planner.errors import ConfigError
from scenario import (
    DIST_KEYS,
    AnalyticSpec,
    ArrivalSpec,
    ClusterSpec,
    LengthDist,
    PiecewiseRate,
    PlannerSpec,
    RoleSpec,
    SineRate,
    SLASpec,
    SpikeRate,
    StepRate,
    apply_override,
    load_scenario,
    parse_duration,
    parse_scenario,
    scenario_to_dict,
)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"

# The example of ARCHITECTURE.md, as written there.
EXAMPLE = """
name: ramp-8b
seed: 7
duration: 30m
model:                     # one of: profile (a directory) or analytic
  analytic: {model: llama-3.1-8b, gpu: h200, dtype: fp8, tp: 1}
cluster:
  prefill: {replicas: 1, gpus_per_replica: 1, startup: 120s}
  decode:  {replicas: 1, gpus_per_replica: 1, startup: 120s}
  kv_transfer: {bandwidth_gbps: 200, latency_ms: 1}
workload:                  # generated, or a trace file
  arrival: {process: poisson, rate: [[0, 2.0], [10m, 8.0], [20m, 2.0]]}
  isl: {dist: lognormal, mean: 3000, cv: 0.5}
  osl: {dist: lognormal, mean: 150, cv: 0.5}
sla: {ttft_ms: 200, itl_ms: 20, target_attainment: 0.99}
planner:
  policy: dynamo           # static | dynamo | threshold | slaplan | oracle
  interval: 60s
  predictor: arima
  max_gpu_budget: 16
  min_replicas: 1
prometheus: {scrape_interval: 5s}
"""

MINIMAL = {
    "duration": "10m",
    "model": {"analytic": {"model": "llama-3.1-8b", "gpu": "h200"}},
    "workload": {"arrival": {"rate": 5}, "isl": 3000, "osl": 150},
}


def write(tmp_path: Path, data: dict | str, name: str = "scn.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_change(dotted: str, value) -> dict:
    data = copy.deepcopy(MINIMAL)
    apply_override(data, dotted, value)
    return data


def error_for(tmp_path: Path, data: dict | str) -> str:
    path = write(tmp_path, data, "bad-scenario.yaml")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert "bad-scenario.yaml" in msg
    return msg


# ---------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("22m30s", 1350.0),
        ("1d", 86400.0),
        ("45", 45.0),
        (12, 12.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text, "k", "f.yaml") == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["-5s", "5x", "", "m", "1h30", True, None, [1], float("inf")])
def test_parse_duration_rejects(bad):
    with pytest.raises(ConfigError) as info:
        parse_duration(bad, "planner.interval", "f.yaml")
    msg = str(info.value)
    assert "f.yaml" in msg and "planner.interval" in msg and repr(bad) in msg
    assert "duration" in msg


def test_parse_duration_positive_rejects_zero():
    assert parse_duration("0s", "k", "f") == 0.0
    with pytest.raises(ConfigError, match="positive"):
        parse_duration("0s", "k", "f", positive=True)


# ---------------------------------------------------------------------------
# Well-formed scenarios


def test_architecture_example(tmp_path):
    s = load_scenario(write(tmp_path, EXAMPLE))
    assert (s.name, s.seed, s.duration_s) == ("ramp-8b", 7, 1800.0)
    assert s.model.analytic == AnalyticSpec("llama-3.1-8b", "h200", "fp8", 1)
    assert s.model.profile is None
    assert s.cluster.prefill == RoleSpec(replicas=1, gpus_per_replica=1, startup_s=120.0)
    assert s.cluster.kv_transfer.bandwidth_gbps == 200.0
    assert s.workload.arrival == ArrivalSpec(
        "poisson", PiecewiseRate(((0.0, 2.0), (600.0, 8.0), (1200.0, 2.0)))
    )
    assert s.workload.isl == LengthDist("lognormal", mean=3000.0, cv=0.5)
    assert s.sla == SLASpec(200.0, 20.0, 0.99)
    assert (s.planner.policy, s.planner.interval_s, s.planner.max_gpu_budget) == (
        "dynamo",
        60.0,
        16,
    )
    assert s.prometheus.scrape_interval_s == 5.0
    cfg = s.planner_config()
    assert (cfg.interval_s, cfg.ttft_ms, cfg.startup_prefill_s) == (60.0, 200.0, 120.0)


def test_defaults(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL, "my-run.yaml"))
    assert s.name == "my-run" and s.seed == 0 and s.duration_s == 600.0
    assert s.cluster == ClusterSpec()
    assert s.sla == SLASpec() and s.planner == PlannerSpec()
    assert s.model.analytic.dtype == "fp8" and s.model.analytic.tp == 1
    # A bare number is a constant rate and a fixed length.
    assert s.workload.arrival == ArrivalSpec("poisson", PiecewiseRate(((0.0, 5.0),)))
    assert s.workload.isl == LengthDist("fixed", value=3000.0)
    assert s.source == tmp_path / "my-run.yaml"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"sine": {"mean": 10, "amplitude": 4, "period": "30m"}}, SineRate(10.0, 4.0, 1800.0, 0.0)),
        (
            {"sine": {"mean": 10, "amplitude": 4, "period": "30m", "phase": "5m"}},
            SineRate(10.0, 4.0, 1800.0, 300.0),
        ),
        ({"step": {"before": 2, "after": 9, "at": "3m"}}, StepRate(2.0, 9.0, 180.0)),
        (
            {"spike": {"base": 2, "peak": 10, "at": "5m", "duration": "2m"}},
            SpikeRate(2.0, 10.0, 300.0, 120.0),
        ),
        (
            [[0, 1], ["90s", 0], ["1h", 3.5]],
            PiecewiseRate(((0.0, 1.0), (90.0, 0.0), (3600.0, 3.5))),
        ),
    ],
)
def test_rate_shapes(tmp_path, raw, expected):
    s = load_scenario(write(tmp_path, with_change("workload.arrival.rate", raw)))
    assert s.workload.arrival.rate == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"dist": "fixed", "value": 100}, LengthDist("fixed", value=100.0)),
        ({"dist": "uniform", "low": 10, "high": 20}, LengthDist("uniform", low=10.0, high=20.0)),
        (
            {"dist": "lognormal", "mean": 500, "cv": 1, "min": 5, "max": 9000},
            LengthDist("lognormal", mean=500.0, cv=1.0, min=5, max=9000),
        ),
    ],
)
def test_length_dists(tmp_path, raw, expected):
    s = load_scenario(write(tmp_path, with_change("workload.osl", raw)))
    assert s.workload.osl == expected


def test_relative_paths_resolve_against_the_scenario_folder(tmp_path):
    sub = tmp_path / "scn"
    sub.mkdir()
    (tmp_path / "prof").mkdir()
    (tmp_path / "lengths.txt").write_text("10\n20\n")
    (tmp_path / "t.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n")
    data = with_change("model", {"profile": "../prof"})
    data["workload"]["isl"] = {"dist": "empirical", "path": "../lengths.txt"}
    s = load_scenario(write(sub, data))
    assert s.model.profile == tmp_path / "prof"
    assert s.workload.isl.path == tmp_path / "lengths.txt"
    data = with_change("workload", {"trace": {"path": "../t.csv", "format": "azure"}})
    s = load_scenario(write(sub, data))
    assert s.workload.trace.path == tmp_path / "t.csv"


def test_closed_loop_and_faults(tmp_path):
    data = copy.deepcopy(MINIMAL)
    data["workload"] = {"closed_loop": {"users": 8, "think_time": "2s"}, "isl": 100, "osl": 10}
    data["cluster"] = {
        "faults": [
            {"role": "decode", "at": "5m"},
            {"role": "prefill", "rate_per_hour": 0.5, "on_failure": "fail"},
        ]
    }
    s = load_scenario(write(tmp_path, data))
    assert s.workload.closed_loop.users == 8 and s.workload.closed_loop.think_time_s == 2.0
    assert s.cluster.faults[0].at_s == 300.0 and s.cluster.faults[0].on_failure == "retry"
    assert s.cluster.faults[1].rate_per_hour == 0.5 and s.cluster.faults[1].at_s is None


def test_dist_keys_match_the_samplers():
    from scenario.workload import LENGTH_DISTS

    assert set(DIST_KEYS) == set(LENGTH_DISTS)


def test_router_names_match_the_simulator_routers():
    from scenario import ROUTER_NAMES
    from sim.router import ROUTERS

    assert set(ROUTER_NAMES) == set(ROUTERS)


def test_policy_and_predictor_names_come_from_the_planner_registries(tmp_path):
    from planner.policies import POLICIES
    from planner.predictors import PREDICTORS

    data = yaml.safe_load(EXAMPLE)
    data["planner"]["policy"] = "no-such-policy"
    with pytest.raises(ConfigError) as err:
        parse_scenario(data, str(tmp_path / "s.yaml"))
    assert all(name in str(err.value) for name in POLICIES)
    data["planner"]["policy"] = "static"
    data["planner"]["predictor"] = "no-such-predictor"
    with pytest.raises(ConfigError) as err:
        parse_scenario(data, str(tmp_path / "s.yaml"))
    assert all(name in str(err.value) for name in PREDICTORS)


# ---------------------------------------------------------------------------
# Overrides


def test_overrides(tmp_path):
    path = write(tmp_path, EXAMPLE)
    s = load_scenario(
        path,
        {
            "planner.interval": "30s",
            "planner.policy": "static",
            "workload.arrival.rate": "[[0, 1], [5m, 4]]",
            "cluster.decode.startup": "5m",
        },
    )
    assert s.planner.interval_s == 30.0 and s.planner.policy == "static"
    assert s.workload.arrival.rate == PiecewiseRate(((0.0, 1.0), (300.0, 4.0)))
    assert s.cluster.decode.startup_s == 300.0 and s.cluster.prefill.startup_s == 120.0
    # The file on disk is unchanged.
    assert load_scenario(path).planner.interval_s == 60.0


def test_override_creates_missing_sections():
    data = copy.deepcopy(MINIMAL)
    apply_override(data, "planner.max_gpu_budget", "8")
    assert data["planner"] == {"max_gpu_budget": 8}


def test_override_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, EXAMPLE), {"planner.intervall": "30s"})
    msg = str(info.value)
    assert "planner.intervall" in msg and "scn.yaml" in msg and "interval" in msg


def test_override_bad_value_is_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, EXAMPLE), {"planner.interval": "-3s"})
    assert "planner.interval" in str(info.value) and "'-3s'" in str(info.value)


def test_override_through_a_scalar_fails():
    data = copy.deepcopy(MINIMAL)
    with pytest.raises(ConfigError, match="workload.arrival.rate is 5, not a mapping"):
        apply_override(data, "workload.arrival.rate.sine", "{mean: 1}")


# ---------------------------------------------------------------------------
# Round trip and the shipped examples


def example_files() -> list[Path]:
    return sorted(p for p in SCENARIOS.glob("*.yaml") if p.name != "trace-azure.yaml")


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_load_and_round_trip(path):
    s = load_scenario(path)
    raw = scenario_to_dict(s)
    assert parse_scenario(yaml.safe_load(yaml.safe_dump(raw)), str(s.source)) == s


def test_trace_example_loads(azure_trace):
    s = load_scenario(SCENARIOS / "trace-azure.yaml")
    # ../shared may be a symlink: compare the files, not the spellings of their paths.
    assert s.workload.trace.path.resolve() == azure_trace.resolve()
    assert parse_scenario(scenario_to_dict(s), str(s.source)) == s


def test_round_trip_of_every_section(tmp_path):
    (tmp_path / "lengths.csv").write_text("n\n5\n7\n")
    data = yaml.safe_load(EXAMPLE)
    data["workload"]["arrival"] = {
        "process": "gamma",
        "cv": 3,
        "rate": {"spike": {"base": 1, "peak": 5, "at": 60, "duration": 30}},
    }
    data["workload"]["isl"] = {
        "dist": "empirical",
        "path": "lengths.csv",
        "column": "n",
        "max": 100,
    }
    data["workload"]["isl_scale"] = {"step": {"before": 1, "after": 3, "at": "10m"}}
    data["cluster"]["faults"] = [{"role": "decode", "rate_per_hour": 2}]
    data["cluster"]["prefill"].update(max_batch_tokens=8192, startup_jitter="10s")
    data["planner"].update(max_replicas=6, predictor_options={"window": 12}, options={"prefill": 2})
    s = load_scenario(write(tmp_path, data))
    again = parse_scenario(yaml.safe_load(yaml.safe_dump(scenario_to_dict(s))), str(s.source))
    assert again == s


def test_quickstart_stays_small():
    from scenario.workload import generate

    s = load_scenario(SCENARIOS / "quickstart.yaml")
    n = len(generate(s.workload, s.duration_s, s.seed))
    # The ramp's integral: 2 req/s for 2 min, then 4..18 for a minute each, 20 for 5 min,
    # 8 for 2 min, 2 for 3 min = 12,840 requests expected; Poisson within 3 sigma.
    assert abs(n - 12840) < 3 * 12840**0.5
    assert s.duration_s == 1200.0 and s.planner.policy == "slaplan"


# ---------------------------------------------------------------------------
# Errors: one per kind, each naming file, key path and value


@pytest.mark.parametrize(
    "dotted, value, key, shown",
    [
        ("planner.intervl", "60s", "planner.intervl", "'intervl'"),
        ("colour", "red", "colour", "'colour'"),
        ("cluster.prefill.gpus", 2, "cluster.prefill.gpus", "'gpus'"),
    ],
)
def test_unknown_keys(tmp_path, dotted, value, key, shown):
    msg = error_for(tmp_path, with_change(dotted, value))
    assert key in msg and shown in msg and "unknown key" in msg


@pytest.mark.parametrize(
    "dotted, value, key, expected",
    [
        ("sla.ttft_ms", True, "sla.ttft_ms", "positive number"),  # bool is not a number
        ("seed", "abc", "seed", "integer"),
        ("seed", 1.5, "seed", "integer"),
        ("planner.correction", "yes please", "planner.correction", "true or false"),
        ("cluster.prefill", [1, 2], "cluster.prefill", "mapping"),
        ("planner.policy", 3, "planner.policy", "one of"),
        ("workload.arrival.rate", "fast", "workload.arrival.rate", "a rate"),
    ],
)
def test_wrong_types(tmp_path, dotted, value, key, expected):
    msg = error_for(tmp_path, with_change(dotted, value))
    assert key in msg and repr(value) in msg and expected in msg


@pytest.mark.parametrize(
    "dotted, value, key",
    [
        ("planner.interval", 0, "planner.interval"),
        ("planner.interval", "-1m", "planner.interval"),
        ("duration", "0s", "duration"),
        ("cluster.prefill.gpus_per_replica", 0, "cluster.prefill.gpus_per_replica"),
        ("sla.itl_ms", -5, "sla.itl_ms"),
        ("workload.arrival.rate", 0, "workload.arrival.rate"),
        ("workload.arrival.rate", [[0, 0], [60, 0]], "workload.arrival.rate"),
        ("workload.isl", -3, "workload.isl"),
        ("workload.osl", {"dist": "lognormal", "mean": 0, "cv": 1}, "workload.osl.mean"),
        ("prometheus.scrape_interval", "0s", "prometheus.scrape_interval"),
        ("planner.min_replicas", -1, "planner.min_replicas"),
        ("cluster.kv_transfer.bandwidth_gbps", 0, "cluster.kv_transfer.bandwidth_gbps"),
    ],
)
def test_non_positive_values(tmp_path, dotted, value, key):
    msg = error_for(tmp_path, with_change(dotted, value))
    assert key in msg and "expected" in msg
    shown = value["mean"] if isinstance(value, dict) else value
    assert f"got {shown!r}" in msg


@pytest.mark.parametrize(
    "target, ok", [(0, False), (-0.1, False), (1.5, False), (1, True), (0.5, True)]
)
def test_target_attainment_range(tmp_path, target, ok):
    data = with_change("sla.target_attainment", target)
    if ok:
        assert load_scenario(write(tmp_path, data)).sla.target_attainment == target
    else:
        msg = error_for(tmp_path, data)
        assert "sla.target_attainment" in msg and repr(target) in msg and "(0, 1]" in msg


@pytest.mark.parametrize(
    "drop, key",
    [("duration", "duration"), ("model", "model"), ("workload", "workload")],
)
def test_missing_required_top_keys(tmp_path, drop, key):
    data = copy.deepcopy(MINIMAL)
    del data[drop]
    msg = error_for(tmp_path, data)
    assert f": {key}: missing required key" in msg


def test_missing_lengths_and_users(tmp_path):
    data = copy.deepcopy(MINIMAL)
    del data["workload"]["osl"]
    assert "workload.osl: missing required key 'osl'" in error_for(tmp_path, data)
    data = with_change("workload", {"closed_loop": {"think_time": 1}, "isl": 1, "osl": 1})
    assert "workload.closed_loop.users: missing required key" in error_for(tmp_path, data)


def test_profile_and_analytic_exclusive(tmp_path):
    (tmp_path / "prof").mkdir()
    data = with_change("model.profile", "prof")
    msg = error_for(tmp_path, data)
    assert ": model: " in msg and "exactly one of profile" in msg
    msg = error_for(tmp_path, with_change("model", {}))
    assert ": model: " in msg and "exactly one of profile" in msg


@pytest.mark.parametrize(
    "workload, got",
    [
        ({"isl": 1, "osl": 1}, "none of them"),
        (
            {"arrival": {"rate": 1}, "closed_loop": {"users": 2}, "isl": 1, "osl": 1},
            "arrival and closed_loop",
        ),
    ],
)
def test_workload_modes_exclusive(tmp_path, workload, got):
    msg = error_for(tmp_path, with_change("workload", workload))
    assert (
        ": workload: " in msg and got in msg and "exactly one of arrival, trace, closed_loop" in msg
    )


@pytest.mark.parametrize(
    "dotted, value, key",
    [
        ("planner.policy", "magic", "planner.policy"),
        ("planner.predictor", "crystal_ball", "planner.predictor"),
        ("workload.arrival.process", "hawkes", "workload.arrival.process"),
        ("workload.isl", {"dist": "zipf", "a": 2}, "workload.isl.dist"),
        ("cluster.router", "random", "cluster.router"),
        ("model.analytic.dtype", "int3", "model.analytic.dtype"),
        ("model.analytic.model", "gpt-9", "model.analytic.model"),
        ("model.analytic.gpu", "tpu-v9", "model.analytic.gpu"),
    ],
)
def test_unknown_names(tmp_path, dotted, value, key):
    msg = error_for(tmp_path, with_change(dotted, value))
    name = value["dist"] if isinstance(value, dict) else value
    assert key in msg and repr(name) in msg and "expected one of" in msg


def test_policy_names_listed(tmp_path):
    msg = error_for(tmp_path, with_change("planner.policy", "magic"))
    assert "dynamo, dynamo-legacy, oracle, oracle-sla, slaplan, static, threshold" in msg


def test_unknown_trace_format(tmp_path):
    (tmp_path / "t.csv").write_text("x\n")
    data = with_change("workload", {"trace": {"path": "t.csv", "format": "splitwise"}})
    msg = error_for(tmp_path, data)
    assert "workload.trace.format" in msg and "'splitwise'" in msg and "azure" in msg


def test_budget_below_minimum(tmp_path):
    data = with_change("planner.min_replicas", 2)
    data["planner"]["max_gpu_budget"] = 3
    data["cluster"] = {"prefill": {"replicas": 2}, "decode": {"replicas": 2}}
    msg = error_for(tmp_path, data)
    assert "planner.max_gpu_budget" in msg and "3" in msg and "at least 4" in msg


def test_initial_replicas_checked_against_minimum_and_budget(tmp_path):
    msg = error_for(tmp_path, with_change("planner.min_replicas", 2))
    assert "cluster.prefill.replicas" in msg and "planner.min_replicas (2)" in msg
    data = with_change("planner.max_gpu_budget", 4)
    data["cluster"] = {"prefill": {"replicas": 3}, "decode": {"replicas": 2}}
    msg = error_for(tmp_path, data)
    assert "5 GPUs" in msg and "max_gpu_budget (4" in msg


def test_missing_profile_directory(tmp_path):
    msg = error_for(tmp_path, with_change("model", {"profile": "no-such-profile"}))
    assert "model.profile" in msg and "'no-such-profile'" in msg and "existing directory" in msg
    assert str(tmp_path / "no-such-profile") in msg


def test_missing_trace_file(tmp_path):
    data = with_change("workload", {"trace": {"path": "gone.csv", "format": "azure"}})
    msg = error_for(tmp_path, data)
    assert "workload.trace.path" in msg and "'gone.csv'" in msg and "existing file" in msg


def test_lengths_not_allowed_with_trace(tmp_path):
    (tmp_path / "t.csv").write_text("x\n")
    data = with_change("workload", {"trace": {"path": "t.csv", "format": "azure"}, "isl": 5})
    assert "workload.isl" in error_for(tmp_path, data)


def test_cv_only_for_gamma(tmp_path):
    msg = error_for(tmp_path, with_change("workload.arrival.cv", 2))
    assert "workload.arrival.cv" in msg and "gamma" in msg


@pytest.mark.parametrize(
    "rate, key, shown",
    [
        ([[5, 1], [10, 2]], "workload.arrival.rate[0][0]", "5"),
        ([[0, 1], ["2m", 2], ["1m", 3]], "workload.arrival.rate[2][0]", "'1m'"),
        ([[0, 1], [60]], "workload.arrival.rate[1]", "[60]"),
        ([[0, 1], [60, "x"]], "workload.arrival.rate[1][1]", "'x'"),
    ],
)
def test_bad_piecewise_rates(tmp_path, rate, key, shown):
    msg = error_for(tmp_path, with_change("workload.arrival.rate", rate))
    assert key in msg and shown in msg


def test_uniform_high_below_low(tmp_path):
    msg = error_for(
        tmp_path, with_change("workload.isl", {"dist": "uniform", "low": 10, "high": 5})
    )
    assert "workload.isl.high" in msg and ">= low" in msg


def test_key_from_another_dist(tmp_path):
    msg = error_for(tmp_path, with_change("workload.isl", {"dist": "fixed", "value": 3, "cv": 1}))
    assert "workload.isl.cv" in msg and "unknown key" in msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = "name: x\nduration: 10m\nmodel: {analytic: {model: llama-3.1-8b\nworkload: 3\n"
    msg = error_for(tmp_path, text)
    assert "line 4" in msg and "invalid YAML" in msg


def test_not_a_mapping_and_empty_file(tmp_path):
    assert "mapping" in error_for(tmp_path, "- 1\n- 2\n")
    assert "empty" in error_for(tmp_path, "")


def test_missing_scenario_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: scenario file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_stuck_starts_keys(tmp_path):
    data = copy.deepcopy(MINIMAL)
    data["cluster"] = {
        "prefill": {"startup": "60s", "stuck_probability": 0.25, "startup_timeout": "3m"}
    }
    s = load_scenario(write(tmp_path, data))
    assert s.cluster.prefill.stuck_probability == 0.25
    assert s.cluster.prefill.startup_timeout_s == 180.0
    again = parse_scenario(yaml.safe_load(yaml.safe_dump(scenario_to_dict(s))), str(s.source))
    assert again == s
    data["cluster"]["prefill"]["stuck_probability"] = 1.0
    msg = error_for(tmp_path, data)
    assert "cluster.prefill.stuck_probability" in msg and "[0, 1)" in msg
    data["cluster"]["prefill"].update(stuck_probability=0.1, startup_timeout="30s")
    msg = error_for(tmp_path, data)
    assert "cluster.prefill.startup_timeout" in msg and "more than startup (60 s)" in msg
