"""`planlab planner --advisory` as a subprocess against the emulated cluster and a real
Prometheus: it ticks, records, exports its gauges, never scales, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from live.emulator.launch import EmulatorThread
from live.loadgen import LoadGenerator
from scenario import load_scenario
from scenario.workload import Requests

pytestmark = [pytest.mark.live, pytest.mark.timeout(150)]

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "live-step.yaml"
RATE = 26.0  # req/s: the planner wants 2 prefill workers at this load (see the scenario)


def _config(tmp_path: Path, frontend: str, prometheus: str, model: str) -> Path:
    raw = yaml.safe_load(SCENARIO.read_text())
    cfg = {
        "name": "daemon-test",
        "model": raw["model"],
        "cluster": raw["cluster"],
        "sla": raw["sla"],
        "planner": {**raw["planner"], "interval": "5s"},
        "prometheus": {"url": prometheus, "model": model, "scrape_interval": "1s"},
        "emulator": {"url": frontend},
        "metrics": {"address": "127.0.0.1", "port": 0},
    }
    path = tmp_path / "planner.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _load_in_background(frontend: str, model: str, seconds: float) -> threading.Thread:
    n = int(seconds * RATE)
    reqs = Requests(
        arrival_s=np.arange(n) / RATE,
        isl=np.full(n, 500, dtype=np.int64),
        osl=np.full(n, 50, dtype=np.int64),
    )
    gen = LoadGenerator(frontend, model=model, extensions=True)
    t = threading.Thread(target=lambda: asyncio.run(gen.run(reqs)), daemon=True)
    t.start()
    return t


def _gauges(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("planlab_planner_"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_advisory_daemon_records_and_never_scales(tmp_path):
    scenario = load_scenario(SCENARIO)
    with EmulatorThread(scenario, prometheus=True) as emu:
        cfg = _config(tmp_path, emu.frontend_url, emu.prometheus_url, emu.model)
        out = tmp_path / "out"
        load = _load_in_background(emu.frontend_url, emu.model, 30.0)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "planlab",
                "planner",
                "--config",
                str(cfg),
                "--advisory",
                "--out",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            first = proc.stdout.readline()
            assert "(advisory)" in first, first + proc.stderr.read()
            url = first.rsplit(" ", 1)[1].strip()
            ticks: list[str] = []
            wanted_two = False
            deadline = time.monotonic() + 60
            # Read tick lines until the planner has asked for 2 prefill workers twice.
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                ticks.append(line)
                if "target P 2" in line:
                    if wanted_two:
                        break
                    wanted_two = True
            gauges = _gauges(httpx.get(url, timeout=5).text)
            state = emu.connector.state()
            proc.send_signal(signal.SIGTERM)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        load.join(timeout=40)

    assert proc.returncode == 0, err
    assert "stopped" in rest
    records = [json.loads(x) for x in (out / "decisions.jsonl").read_text().splitlines()]
    assert len(records) == len(ticks) >= 2
    # Advisory: nothing applied, and the emulator kept its one prefill worker although the
    # planner asked for two.
    assert all(r["applied"] is False and "advisory" in r["note"] for r in records)
    assert any(r["target"]["prefill"] == 2 for r in records)
    assert state.prefill.desired == 1 and state.prefill.ready == 1
    assert all(r["current"]["prefill"]["ready"] == 1 for r in records)
    # Gauges match the records: the target gauge is a target the planner recorded, the
    # current gauge is the emulator's count, one tick counted per record (by rule).
    assert gauges['planlab_planner_current_replicas{role="prefill"}'] == 1.0
    assert gauges['planlab_planner_target_replicas{role="prefill"}'] in {
        float(r["target"]["prefill"]) for r in records
    }
    ticks_total = sum(v for k, v in gauges.items() if k.startswith("planlab_planner_ticks_total"))
    assert ticks_total == len(records)
    assert "planlab_planner_observed_num_req" in gauges
    assert "planlab_planner_predicted_num_req" in gauges
    # At 26 req/s over a 5 s window Prometheus saw about 130 requests once the load ran.
    busy = [r["observation"]["num_req"] for r in records if r["target"]["prefill"] == 2]
    assert busy and all(90 <= n <= 170 for n in busy)


def test_bad_config_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"analytic": {"model": "llama-3.1-8b", "gpu": "l40s"}},
                "prometheus": {"url": "localhost:9090"},
                "emulator": {"url": "http://127.0.0.1:1"},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "planlab", "planner", "--config", str(path), "--advisory"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "prometheus.url" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_emulator_connector_needs_advisory(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"analytic": {"model": "llama-3.1-8b", "gpu": "l40s"}},
                "planner": {"interval": "5s", "polcy": "dynamo"},
                "prometheus": {"url": "http://127.0.0.1:1"},
                "emulator": {"url": "http://127.0.0.1:1"},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "planlab", "planner", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The misspelt key is reported first, by the scenario parser, with its path.
    assert proc.returncode == 2 and "planner.polcy" in proc.stderr
    path.write_text(path.read_text().replace("polcy", "policy"))
    proc = subprocess.run(
        [sys.executable, "-m", "planlab", "planner", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--advisory" in proc.stderr
