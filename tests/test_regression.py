"""CI regression on simulated traces: the suite under every policy against the recorded
baseline (scenarios/suite/baseline.json; `planlab baseline update` rewrites it on
purpose), and the suite's claim that slaplan beats static, dynamo, dynamo-legacy and
threshold everywhere."""

from __future__ import annotations

import json

import pytest

from planlab import baseline as bl
from planner.errors import ConfigError


@pytest.fixture(scope="module")
def suite_table() -> dict:
    suite = bl.suite_scenarios()
    runnable = [s.scenario for s in suite if s.scenario is not None]
    if not runnable:
        pytest.skip("no suite scenario can load here (../shared absent)")
    return bl.run_suite(runnable, jobs=2)


@pytest.mark.slow
def test_suite_has_not_regressed_against_the_baseline(suite_table) -> None:
    baseline = bl.read_baseline()
    missing = [
        f"{s}/{p}" for s, row in suite_table.items() for p in row if p not in baseline.get(s, {})
    ]
    assert not missing, f"not in the baseline (run `planlab baseline update`): {missing}"
    problems = bl.regressions(suite_table, baseline)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_slaplan_beats_dynamo_threshold_and_static_on_every_scenario(suite_table) -> None:
    failures = bl.claim_failures(suite_table)
    assert not failures, "\n".join(failures)


def _row(att: float, gpuh: float) -> dict:
    return {
        "joint_attainment": att,
        "gpu_hours": gpuh,
        "ttft_attainment": att,
        "itl_attainment": 1.0,
    }


def test_regressions_use_the_stated_tolerances() -> None:
    base = {"s": {"p": _row(0.990, 10.0)}}
    assert bl.regressions({"s": {"p": _row(0.9851, 10.29)}}, base) == []  # -0.49 pt, +2.9%
    drop = bl.regressions({"s": {"p": _row(0.9849, 10.0)}}, base)
    assert len(drop) == 1 and "drop 0.51 points" in drop[0]
    grow = bl.regressions({"s": {"p": _row(0.990, 10.31)}}, base)
    assert len(grow) == 1 and "+3.1%" in grow[0]
    assert bl.regressions({"other": {"p": _row(0.1, 99.0)}}, base) == []  # not in the baseline


def test_the_claim_needs_attainment_and_cost_or_two_points() -> None:
    assert bl.beats(_row(0.95, 10.5), _row(0.95, 10.0))  # same attainment, +5% GPU-h
    assert not bl.beats(_row(0.95, 10.6), _row(0.95, 10.0))  # +6% GPU-h
    assert bl.beats(_row(0.97, 30.0), _row(0.95, 10.0))  # two points better, any cost
    assert not bl.beats(_row(0.969, 30.0), _row(0.95, 10.0))
    # both meet the 0.99 target: the cheaper one wins even with a little less attainment
    assert bl.beats(_row(0.991, 3.7), _row(0.994, 4.3))
    assert not bl.beats(_row(0.989, 3.7), _row(0.994, 4.3))
    table = {"s": {"slaplan": _row(0.9, 1.0), "dynamo": _row(0.95, 1.0)}}
    assert bl.claim_failures(table) == [
        "s: slaplan 0.9000 / 1.00 GPU-h does not beat dynamo 0.9500 / 1.00 GPU-h"
    ]


def test_baseline_file_round_trips_and_bad_files_are_named(tmp_path) -> None:
    table = {"s": {"p": _row(0.99, 2.0)}}
    path = bl.write_baseline(table, tmp_path / "b.json")
    assert bl.read_baseline(path) == table
    with pytest.raises(ConfigError, match="planlab baseline update"):
        bl.read_baseline(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  'x': 1\n}")
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON \(line 2\)"):
        bl.read_baseline(bad)
    bad.write_text(json.dumps({"about": "x"}))
    with pytest.raises(ConfigError, match="results"):
        bl.read_baseline(bad)
