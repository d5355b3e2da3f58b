"""The same compressed load step through the simulator and through the emulated cluster
(real time, real Prometheus): mean TTFT and mean ITL within 15%, the same replica
decisions at every common tick. Prints the measured differences."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from live_step import SCENARIO, live_step_run

from planlab.runner import run_scenario
from scenario import load_scenario

pytestmark = [pytest.mark.live, pytest.mark.timeout(240)]


def test_sim_and_emulator_agree():
    out = live_step_run()
    live_req = pd.read_csv(out / "requests.csv", keep_default_na=False, na_values=[""])
    live_recs = [json.loads(x) for x in (out / "decisions.jsonl").read_text().splitlines()]
    sim = run_scenario(load_scenario(SCENARIO), write=False)

    rows = []
    for key in ("ttft_ms", "tpot_ms"):
        s = sim.summary[key]["mean"]
        lv = float(live_req.loc[live_req["status"] == "ok", key].mean())
        rows.append((key, s, lv, (lv - s) / s))
    for key, s, lv, rel in rows:
        print(f"{key}: simulator {s:.2f}  emulator {lv:.2f}  difference {rel:+.1%}")
    for key, _, _, rel in rows:
        assert abs(rel) <= 0.15, key

    sim_targets = {
        round(r.t_s): (r.decision.prefill, r.decision.decode) for r in sim.result.records
    }
    live_targets = {
        round(r["t_s"]): (r["target"]["prefill"], r["target"]["decode"]) for r in live_recs
    }
    common = sorted(set(sim_targets) & set(live_targets))
    print("tick  sim  live:", [(t, sim_targets[t], live_targets[t]) for t in common])
    assert len(common) >= 10
    assert [sim_targets[t] for t in common] == [live_targets[t] for t in common]
