"""`planlab decide`: one observed interval in, the decision and its arithmetic out."""

from __future__ import annotations

import json

import pytest

from planlab.cli import main


def test_decide_on_the_h200_profile_matches_dynamos_expectation(h200_profile_dir, capsys) -> None:
    args = (
        "decide --profile".split()
        + [str(h200_profile_dir)]
        + "--num-req 1200 --isl 3000 --osl 150 --interval 60 --ttft 200 --itl 10".split()
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "decision: 2 prefill + 1 decode (3 GPUs)" in out
    # Dynamo 1.6's arithmetic: 20 req/s over one prefill engine's rate at the best batch
    assert "prefill = max(ceil(20.000 / " in out and "decode batch search" in out
    assert "GPU budget 8" in out


def test_decide_json_is_a_decision_record(capsys) -> None:
    args = "decide --num-req 600 --isl 3000 --osl 150 --interval 60 --json".split()
    assert main(args) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["policy"] == "dynamo" and rec["applied"] is False
    assert rec["observation"]["num_req"] == 600
    assert rec["target"]["prefill"] >= 1 and rec["target"]["decode"] >= 1
    assert rec["arithmetic"] and rec["rule"] == "scale"


def test_decide_with_observed_latencies_applies_correction(capsys) -> None:
    base = "decide --policy dynamo-legacy --num-req 1200 --isl 3000 --osl 150 --interval 60 --ttft 200 --itl 10 --json".split()
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    # Observed ITL twice the profile's: the ITL target halves, so decode needs more.
    extra = "--observed-ttft 50 --observed-itl 40 --request-duration 2 --decode-replicas 1"
    assert main(base + extra.split()) == 0
    corrected = json.loads(capsys.readouterr().out)
    assert corrected["capacity"]["d_corr"] > 1.5
    assert corrected["target"]["decode"] > plain["target"]["decode"]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--isl", "-5"], "--isl: got -5, expected a number > 0"),
        (["--budget", "1"], "planner.max_gpu_budget"),
        (["--policy", "nosuch"], "unknown policy 'nosuch'"),
        (["--observed-ttft", "50"], "give both --observed-ttft and --observed-itl"),
    ],
)
def test_decide_bad_input_exits_2_with_one_line(capsys, extra, needle) -> None:
    args = ["decide", "--num-req", "600", "--isl", "3000", "--osl", "150"] + extra
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_decide_dynamo_uses_requests_started_and_only_reduces_while_starting(
    h200_profile_dir, capsys
) -> None:
    base = ["decide", "--profile", str(h200_profile_dir)] + (
        "--num-req 600 --isl 3000 --osl 150 --interval 60 --ttft 200 --itl 10 --json".split()
    )
    # 600 finished but 1,200 admitted: Dynamo 1.6 sizes for 20 req/s -> 2P + 1D
    assert main(base + ["--requests-started", "1200"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert (rec["target"]["prefill"], rec["target"]["decode"]) == (2, 1)
    # one prefill replica ready and one starting: 2P is not a reduction, so it stays 2
    # (desired); at 600 admitted it wants 1, which cancels the starting one
    assert main(base + ["--prefill-starting", "1"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["target"]["prefill"] == 1 and "only reductions" in rec["reason"]
    assert main(base + ["--requests-started", "1200", "--prefill-starting", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["target"]["prefill"] == 2
