"""Bad input and size guards: each case is exit 2 with one message naming the file, key or
line and what was expected, and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_scenario import tiny_yaml

from planlab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _scenario(tmp_path: Path, text: str | None = None, **changes) -> Path:
    data = yaml.safe_load(text or tiny_yaml(seed=1, rate="[[0, 2.0]]"))
    for dotted, value in changes.items():
        node = data
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refused(argv: list[str], capsys, *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _nothing_written(tmp_path: Path, *keep: str) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_a_huge_scenario_is_refused_before_any_work(tmp_path, capsys):
    path = _scenario(tmp_path, duration="1000d")
    out = tmp_path / "run"
    err = _refused(
        ["run", str(path), "--out", str(out), "--quiet"],
        capsys,
        "s.yaml",
        "172,800,000 requests",  # 2 req/s for 1000 days
        "GiB",
        "--max-requests",
    )
    assert "Traceback" not in err
    _nothing_written(tmp_path, "s.yaml")


def test_a_huge_rate_written_as_1e9_is_a_number_and_refused(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(tiny_yaml(seed=1, rate="1e9"))
    _refused(["run", str(path), "--quiet"], capsys, "s.yaml", "120,000,000,000 requests")


def test_max_requests_lets_a_big_run_through(tmp_path, capsys):
    """The guard is a limit the user may raise: 2 req/s over 2 min is 240 requests."""
    path = _scenario(tmp_path)
    out = tmp_path / "run"
    _refused(["run", str(path), "--max-requests", "100", "--quiet"], capsys, "240 requests")
    assert main(["run", str(path), "--out", str(out), "--max-requests", "300", "--quiet",
                 "--no-report"]) == 0  # fmt: skip


def test_too_many_scrapes_are_refused(tmp_path, capsys):
    path = _scenario(tmp_path, duration="200d", workload__arrival__rate=0.0001)
    _refused(["run", str(path), "--quiet"], capsys, "s.yaml", "scrapes", "scrape_interval")


def test_duplicate_key_names_the_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    text = tiny_yaml(seed=1).replace("seed: 1\n", "seed: 1\nseed: 2\n")
    path.write_text(text)
    line = text.splitlines().index("seed: 2") + 1
    _refused(["run", str(path)], capsys, "s.yaml", f"line {line}", "'seed'", "twice")


def test_duplicate_key_in_a_nested_mapping(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(tiny_yaml(seed=1).replace("ttft_ms: 200,", "ttft_ms: 200, ttft_ms: 300,"))
    _refused(["run", str(path)], capsys, "s.yaml", "'ttft_ms'", "twice")


def test_unknown_policy_option_names_file_key_and_suggestion(tmp_path, capsys):
    path = _scenario(tmp_path, planner__options={"headroom_quantil": 0.5})
    _refused(
        ["run", str(path)],
        capsys,
        "s.yaml",
        "planner.options.headroom_quantil",
        "did you mean 'headroom_quantile'",
        "slaplan:",
    )


def test_an_option_of_another_policy_is_accepted(tmp_path):
    """One scenario's options serve every policy compare runs: slaplan's key under dynamo."""
    path = _scenario(tmp_path, planner__options={"headroom_quantile": 0.8})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0


def test_unknown_predictor_option(tmp_path, capsys):
    path = _scenario(tmp_path, planner__predictor="holt", planner__predictor_options={"windw": 3})
    _refused(["run", str(path)], capsys, "s.yaml", "planner.predictor_options.windw", "alpha, beta")


def test_bad_predictor_option_value_names_the_file(tmp_path, capsys):
    path = _scenario(
        tmp_path, planner__predictor="moving_average", planner__predictor_options={"window": -2}
    )
    _refused(["run", str(path)], capsys, "s.yaml: planner.predictor_options.window")


def test_bad_policy_option_value_names_the_file(tmp_path, capsys):
    """Found when the policy is built, still reported against the scenario file."""
    path = _scenario(tmp_path, planner__policy="slaplan", planner__options={"headroom_quantile": 5})
    _refused(["run", str(path), "--quiet"], capsys, "s.yaml: planner.options.headroom_quantile")
    _nothing_written(tmp_path, "s.yaml")


def test_a_run_whose_every_request_failed_says_why(tmp_path, capsys):
    """Prompts beyond a decode worker's KV capacity all fail; the summary says so."""
    path = _scenario(
        tmp_path,
        duration="30s",
        workload__arrival__rate=0.2,
        workload__isl={"dist": "fixed", "value": 960000, "max": 960000},
        workload__osl={"dist": "fixed", "value": 10},
    )
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    failed = summary["requests"]["failed"]
    assert failed > 0 and summary["requests"]["completed"] == 0
    reasons = summary["requests"]["failure_reasons"]
    assert sum(reasons.values()) == failed
    assert "KV capacity" in next(iter(reasons))
    line = next(ln for ln in printed.splitlines() if ln.startswith("failures"))
    assert f"{failed} x" in line and "KV capacity" in line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_decide_refuses_non_finite_numbers(value, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["decide", "--num-req", value, "--isl", "3000", "--osl", "150"])
    assert stop.value.code == 2
    assert "--num-req" in capsys.readouterr().err


def test_decide_outside_the_profile(h200_profile_dir, capsys):
    _refused(
        [
            "decide",
            "--profile",
            str(h200_profile_dir),
            "--num-req",
            "100",
            "--isl",
            "200000",
            "--osl",
            "150",
        ],  # fmt: skip
        capsys,
        "--isl",
        "outside the profile",
        "16372",
    )


def test_decide_beyond_kv_capacity(capsys):
    _refused(
        ["decide", "--num-req", "10", "--isl", "100000", "--osl", "900000"],
        capsys,
        "--osl",
        "KV capacity",
    )


def test_dynamo_flag_names_give_the_same_decision(capsys):
    common = ["decide", "--num-req", "1200", "--isl", "3000", "--osl", "150", "--ttft", "200",
              "--itl", "10", "--json"]  # fmt: skip
    assert main([*common, "--interval", "60", "--budget", "4", "--min-replicas", "1",
                 "--gpus-per-prefill", "1", "--gpus-per-decode", "1"]) == 0  # fmt: skip
    ours = json.loads(capsys.readouterr().out)
    assert main([*common, "--adjustment-interval", "60", "--max-gpu-budget", "4",
                 "--min-endpoint", "1", "--prefill-engine-num-gpu", "1",
                 "--decode-engine-num-gpu", "1"]) == 0  # fmt: skip
    theirs = json.loads(capsys.readouterr().out)
    assert ours["target"] == theirs["target"] and ours["arithmetic"] == theirs["arithmetic"]
    assert ours["observation"]["interval_s"] == theirs["observation"]["interval_s"] == 60


def test_no_correction_turns_the_correction_off(capsys):
    common = ["decide", "--policy", "dynamo-legacy", "--num-req", "1200", "--isl", "3000", "--osl",
              "150", "--interval", "60", "--ttft", "200", "--itl", "10", "--observed-ttft",
              "900", "--observed-itl", "30", "--json"]  # fmt: skip
    assert main(common) == 0
    corrected = json.loads(capsys.readouterr().out)["target"]
    assert main([*common, "--no-correction"]) == 0
    plain = json.loads(capsys.readouterr().out)["target"]
    assert main(common[:-7] + ["--json"]) == 0  # no observed latencies at all
    reference = json.loads(capsys.readouterr().out)["target"]
    assert (plain["prefill"], plain["decode"]) == (reference["prefill"], reference["decode"])
    assert (corrected["prefill"], corrected["decode"]) != (plain["prefill"], plain["decode"])


def test_garbage_npz_is_not_a_valid_npz_file(tmp_path, capsys):
    prof = tmp_path / "prof"
    prof.mkdir()
    for name in ("prefill_raw_data.npz", "decode_raw_data.npz"):
        (prof / name).write_bytes(b"\x80\x04garbage")
    _refused(["profile", "show", str(prof)], capsys, "prefill_raw_data.npz", "not a valid npz")


def test_daemon_config_takes_dynamo_key_names(tmp_path):
    from planlab.commands.planner import load_config

    base = yaml.safe_load((ROOT / "scenarios" / "live-step.yaml").read_text())
    cfg = {k: base[k] for k in ("model", "cluster", "sla")}
    cfg["planner"] = {
        "policy": "dynamo",
        "throughput_adjustment_interval_seconds": 30,
        "min_endpoint": 2,
        "max_gpu_budget": 12,
        "load_predictor": "constant",
        "no_correction": True,
        "prefill_engine_num_gpu": 2,
        "metric_pulling_prometheus_endpoint": "http://127.0.0.1:9090",
        "model_name": "llama",
    }
    del cfg["cluster"]["prefill"]["gpus_per_replica"]  # given by its Dynamo name above
    cfg["cluster"]["prefill"]["replicas"] = 2
    cfg["cluster"]["decode"]["replicas"] = 2
    cfg["prometheus"] = {}
    cfg["emulator"] = {"url": "http://127.0.0.1:8000"}
    path = tmp_path / "planner.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(path)
    s = loaded["scenario"]
    assert s.planner.interval_s == 30 and s.planner.min_replicas == 2
    assert s.planner.max_gpu_budget == 12 and s.planner.predictor == "constant"
    assert s.planner.correction is False
    assert s.cluster.prefill.gpus_per_replica == 2
    assert loaded["prometheus"]["url"] == "http://127.0.0.1:9090"
    assert loaded["prometheus"]["model"] == "llama"


def test_daemon_config_alias_clash_is_an_error(tmp_path, capsys):
    base = yaml.safe_load((ROOT / "scenarios" / "live-step.yaml").read_text())
    cfg = {k: base[k] for k in ("model", "cluster", "sla")}
    cfg["planner"] = {"interval": "10s", "throughput_adjustment_interval_seconds": 30}
    cfg["prometheus"] = {"url": "http://127.0.0.1:9090"}
    cfg["emulator"] = {"url": "http://127.0.0.1:8000"}
    path = tmp_path / "planner.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _refused(
        ["planner", "--config", str(path), "--advisory"],
        capsys,
        "planner.yaml",
        "planner.throughput_adjustment_interval_seconds",
        "expected one of the two",
    )


@pytest.mark.parametrize(
    "flags, flag",
    [(["--analytic", "gpt-9"], "--analytic"), (["--tp", "0"], "--tp"), (["--gpu", "x"], "--gpu")],
)
def test_decide_names_the_flag_not_the_scenario_key(flags, flag, capsys):
    err = _refused(
        ["decide", "--num-req", "10", "--isl", "3000", "--osl", "150", *flags], capsys, flag
    )
    assert "model.analytic" not in err


def test_a_directory_given_as_scenario(tmp_path, capsys):
    _refused(["run", str(tmp_path)], capsys, "is a directory")
