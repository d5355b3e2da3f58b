"""Studies on a real dask.distributed cluster on 127.0.0.1 (no mock): the same compare on a
LocalCluster and in local processes gives the same compare.csv and the same run directories;
a worker killed by PID mid-study loses no run; Ctrl-C stops the study and its workers; a
scenario's trace travels to a worker that does not have it; nothing is left running."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny_scenario import tiny_yaml

import planlab.compare as cmp
from planlab.cli import main as cli_main
from planlab.distributed import (
    NO_SHARED_FILES_ENV,
    Backend,
    Task,
    _remote,
    make_backend,
    run_tasks,
)
from planner.errors import ConfigError
from scenario import load_scenario

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'planlab[dask]')"
)
psutil = pytest.importorskip("psutil", reason="psutil comes with dask.distributed")

pytestmark = pytest.mark.live

# Run files that must be the same bytes; summary.json differs only in its wall-clock fields.
SAME_BYTES = ("requests.csv", "timeline.csv", "decisions.jsonl", "scenario.yaml")
WALL_KEYS = ("wall_s", "sim_requests_per_wall_s")


def _children() -> set[int]:
    """Our child processes, less multiprocessing's resource tracker (one per interpreter,
    started by the first process pool or cluster, gone when the interpreter exits)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _normalized_csv(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "compare.csv")
    df["run_dir"] = df["run_dir"].map(
        lambda d: os.path.relpath(d, out) if isinstance(d, str) else d
    )
    return df


def _assert_same_runs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "runs").iterdir())
    assert names == sorted(p.name for p in (b / "runs").iterdir()) and names
    for name in names:
        for f in SAME_BYTES:
            assert (a / "runs" / name / f).read_bytes() == (b / "runs" / name / f).read_bytes(), (
                name,
                f,
            )
        sa = json.loads((a / "runs" / name / "summary.json").read_text())
        sb = json.loads((b / "runs" / name / "summary.json").read_text())
        for s in (sa, sb):
            assert set(s.pop("wall")) == set(WALL_KEYS)
        assert sa == sb, name


@pytest.fixture
def scenario(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_yaml(seed=5))
    return path


def test_local_cluster_compare_is_identical_to_processes(scenario, tmp_path):
    before = _children()
    local = tmp_path / "local"
    dask_out = tmp_path / "dask"
    cmp.compare([scenario], ["static", "dynamo"], 2, local, backend=Backend(jobs=1))
    seen: list[str] = []
    cmp.compare(
        [scenario],
        ["static", "dynamo"],
        2,
        dask_out,
        backend=Backend(jobs=2, cluster="local"),
        progress=lambda done, total, label: seen.append(f"{done}/{total}"),
    )
    pd.testing.assert_frame_equal(_normalized_csv(local), _normalized_csv(dask_out))
    assert (local / "compare.csv").read_text().replace(str(local), "X") == (
        dask_out / "compare.csv"
    ).read_text().replace(str(dask_out), "X")
    _assert_same_runs(local, dask_out)
    assert seen == ["1/4", "2/4", "3/4", "4/4"]
    assert not list(dask_out.glob("runs/.*"))  # no temporary directory left behind
    time.sleep(0.5)
    assert _alive(_children() - before) == []  # the LocalCluster's workers are gone


def test_run_tasks_keeps_order_and_raises(tmp_path):
    backend = Backend(jobs=2, cluster="local")
    assert list(run_tasks(pow, [(2, k) for k in range(6)], backend)) == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ZeroDivisionError):
        list(run_tasks(divmod, [(1, 1), (1, 0)], backend))


def test_bad_cluster_address_is_exit_2(scenario, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--cluster"):
        make_backend(None, "http://somewhere")
    rc = cli_main(["compare", str(scenario), "--cluster", "8786", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "tcp://HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_trace_travels_to_a_worker_without_the_file(tmp_path):
    """A worker on another machine: the trace's bytes arrive with the task, the run is the
    same as one that reads the file, and its scenario.yaml names the user's path."""
    trace = tmp_path / "trace.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:{m:02d}:{s:02d}.000,{800 + 37 * s},{40 + s}" for m in range(2)
             for s in range(0, 60, 3)]  # fmt: skip
    trace.write_text("\n".join(rows) + "\n")
    path = tmp_path / "t.yaml"
    path.write_text(
        tiny_yaml(seed=3).replace(
            "  arrival: {process: poisson, rate: [[0, 2.0], [50s, 24.0]]}\n"
            "  isl: {dist: lognormal, mean: 3000, cv: 0.3, max: 16000}\n"
            "  osl: {dist: lognormal, mean: 100, cv: 0.3, max: 1000}\n",
            f"  trace: {{path: {trace}, format: azure}}\n",
        )
    )
    sc = load_scenario(path)
    here = tmp_path / "here"
    there = tmp_path / "there"
    data = trace.read_bytes()
    elsewhere = "/nonexistent-planlab-host/trace.csv"
    moved = dataclasses.replace(
        sc,
        workload=dataclasses.replace(
            sc.workload, trace=dataclasses.replace(sc.workload.trace, path=Path(elsewhere))
        ),
    )
    cmp._run_one(sc, "static", 3, here / "runs" / "r", False)
    task = Task(cmp._run_one, (moved, "static", 3, there / "runs" / "r", False), 3)
    row, files, back = _remote(task, {elsewhere: (hashlib.sha256(data).hexdigest(), data)})
    assert row["run_dir"] != str(there / "runs" / "r")  # it ran in the worker's own folder
    assert back[row["run_dir"]] == str(there / "runs" / "r")
    for f in ("requests.csv", "timeline.csv", "decisions.jsonl"):
        assert files[f] == (here / "runs" / "r" / f).read_bytes()
    assert elsewhere in files["scenario.yaml"].decode()
    assert row["requests"] == 40  # 40 trace rows in the 2-minute window


def test_profile_directory_travels_to_a_worker_without_it(tmp_path):
    """A scenario whose model is a profile directory, run where that directory does not
    exist: the worker rebuilds it from the bytes and the run equals one that reads it."""
    from planlab.distributed import _scenario_files
    from planlab.profiles import resolve_model, write_profile

    sc = load_scenario(_write(tmp_path / "s.yaml", tiny_yaml(seed=8)))
    prof_dir = tmp_path / "prof"
    write_profile(resolve_model(sc.model), prof_dir, {"model": "x"})
    here = dataclasses.replace(
        sc, model=dataclasses.replace(sc.model, profile=prof_dir, analytic=None)
    )
    elsewhere = Path("/nonexistent-planlab-host/prof")
    moved = dataclasses.replace(here, model=dataclasses.replace(here.model, profile=elsewhere))
    files = {}
    for name, path in _scenario_files(here).items():
        data = path.read_bytes()
        files[str(elsewhere / Path(name).relative_to(prof_dir))] = (
            hashlib.sha256(data).hexdigest(),
            data,
        )
    assert files  # the profile's file(s)
    cmp._run_one(here, "dynamo", 8, tmp_path / "here" / "r", False)
    task = Task(cmp._run_one, (moved, "dynamo", 8, tmp_path / "there" / "r", False), 3)
    row, produced, back = _remote(task, files)
    for f in ("requests.csv", "timeline.csv", "decisions.jsonl"):
        assert produced[f] == (tmp_path / "here" / "r" / f).read_bytes()
    assert str(elsewhere) in produced["scenario.yaml"].decode()  # the user's path, not a copy
    assert "planlab-dask-files" not in produced["scenario.yaml"].decode()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_trace_fetched_once_by_a_worker_that_may_not_read_it(tmp_path, monkeypatch):
    """On a real LocalCluster whose workers are told not to read the user's paths: the
    scattered trace reaches the workers, which write it into their own cache, and the runs
    match local ones."""
    trace = tmp_path / "trace.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:{m:02d}:{s:02d}.000,{900 + 11 * s},{30 + s}" for m in range(2)
             for s in range(0, 60, 2)]  # fmt: skip
    trace.write_text("\n".join(rows) + "\n")
    path = tmp_path / "t.yaml"
    path.write_text(
        tiny_yaml(seed=4).replace(
            "  arrival: {process: poisson, rate: [[0, 2.0], [50s, 24.0]]}\n"
            "  isl: {dist: lognormal, mean: 3000, cv: 0.3, max: 16000}\n"
            "  osl: {dist: lognormal, mean: 100, cv: 0.3, max: 1000}\n",
            f"  trace: {{path: {trace}, format: azure}}\n",
        )
    )
    local = tmp_path / "local"
    cmp.compare([path], ["static", "dynamo"], 1, local, backend=Backend(jobs=1))
    workers_tmp = tmp_path / "workers-tmp"
    workers_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(workers_tmp))  # the spawned workers' tempfile.gettempdir()
    monkeypatch.setenv(NO_SHARED_FILES_ENV, "1")
    out = tmp_path / "dask"
    df = cmp.compare([path], ["static", "dynamo"], 1, out, backend=Backend(jobs=2, cluster="local"))
    assert (df[df["kind"] == "run"]["requests"] == 60).all()
    _assert_same_runs(local, out)
    digest = hashlib.sha256(trace.read_bytes()).hexdigest()
    copies = list(workers_tmp.glob(f"planlab-dask-files/{digest[:32]}/trace.csv"))
    assert copies and copies[0].read_bytes() == trace.read_bytes()


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


@pytest.mark.timeout(240)
def test_worker_killed_mid_study_loses_no_run(tmp_path):
    """A scheduler and two worker processes (no nanny, so nothing restarts the killed one);
    one worker is killed by PID while it runs a simulation; the study completes on the other
    with every run, the same rows as a local run."""
    path = tmp_path / "s.yaml"
    # long enough (a few seconds of simulation each) that the kill lands mid-task
    path.write_text(tiny_yaml(seed=11).replace("duration: 2m", "duration: 20m"))
    sched_file = tmp_path / "scheduler.json"
    procs = [
        _start(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            tmp_path / "scheduler.log",
        )  # fmt: skip
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for k in range(2):
            procs.append(
                _start(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--no-nanny",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--name",
                        f"w{k}",
                    ],
                    tmp_path / f"worker{k}.log",
                )  # fmt: skip
            )
        killed: dict[str, int] = {}

        def kill_one_when_busy() -> None:
            with distributed.Client(address, timeout="30s") as watcher:
                watcher.wait_for_workers(2, timeout=60)
                pids = watcher.run(os.getpid)  # {worker address: its process id}
                t_end = time.monotonic() + 120
                while time.monotonic() < t_end:
                    busy = {w: ks for w, ks in watcher.processing().items() if ks}
                    if busy:
                        addr = sorted(busy)[0]
                        time.sleep(0.5)  # into the simulation
                        pid = pids[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed.update(pid=pid)
                        return
                    time.sleep(0.05)

        with distributed.Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        watcher = threading.Thread(target=kill_one_when_busy)
        watcher.start()
        out = tmp_path / "cluster"
        df = cmp.compare([path], ["static", "dynamo"], 2, out, backend=Backend(cluster=address))
        watcher.join(timeout=60)
        assert "pid" in killed and _alive([killed["pid"]]) == []
        runs = df[df["kind"] == "run"]
        assert len(runs) == 4 and (runs["status"] == "ok").all(), runs[["policy", "error"]]
        for d in runs["run_dir"]:
            assert (Path(d) / "summary.json").is_file()
        local = tmp_path / "local"
        cmp.compare([path], ["static", "dynamo"], 2, local, backend=Backend(jobs=1))
        pd.testing.assert_frame_equal(_normalized_csv(local), _normalized_csv(out))
    finally:
        _stop(procs)
    assert _alive([p.pid for p in procs]) == []


@pytest.mark.timeout(180)
def test_ctrl_c_cancels_the_study_and_stops_its_workers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(tiny_yaml(seed=2).replace("duration: 2m", "duration: 20m"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "planlab", "compare", str(path), "--policies", "static,dynamo",
         "--seeds", "4", "--cluster", "local", "--jobs", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(pids) < 2:
            try:
                pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        time.sleep(3)  # the workers are running simulations
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert len(pids) >= 2  # the LocalCluster's worker processes did start
    time.sleep(1)
    assert _alive(pids) == []
    assert not (out / "compare.csv").exists()  # no half-written comparison


def test_sweep_on_a_local_cluster_is_resumable(scenario, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", str(scenario), "--set", "cluster.prefill.replicas=1,2",
            "--cluster", "local", "--jobs", "2", "--out", str(out), "--quiet"]  # fmt: skip
    assert cli_main(argv) == 0
    first = pd.read_csv(out / "sweep.csv")
    assert (first["status"] == "ok").all() and not first["reused"].any()
    local = tmp_path / "local"
    cli_main(["sweep", str(scenario), "--set", "cluster.prefill.replicas=1,2", "--jobs", "1",
              "--out", str(local), "--quiet"])  # fmt: skip
    for name in ("cluster.prefill.replicas=1", "cluster.prefill.replicas=2"):
        for f in SAME_BYTES:
            assert (out / "points" / name / f).read_bytes() == (
                local / "points" / name / f
            ).read_bytes()
    capsys.readouterr()
    assert cli_main(argv) == 0  # everything is there: nothing runs, no cluster starts
    assert "2 kept from an earlier run" in capsys.readouterr().out
    assert pd.read_csv(out / "sweep.csv")["reused"].all()
