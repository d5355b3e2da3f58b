"""One `planlab run --live --emulate` of scenarios/live-step.yaml, run once per test
session and shared by the end-to-end and the sim-vs-emulator tests (two minutes of wall
time each would be too much to pay twice)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from planlab.cli import main

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "live-step.yaml"


@functools.cache
def live_step_run() -> Path:
    """The results directory of the live run (raises if the run failed)."""
    root = Path(tempfile.mkdtemp(prefix="planlab-live-e2e-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    out = root / "run"
    rc = main(["run", str(SCENARIO), "--live", "--emulate", "--out", str(out), "--no-report"])
    if rc != 0:
        raise RuntimeError(f"planlab run --live --emulate exited with {rc}")
    return out
