"""Nothing of the user's is lost: `--out` over an existing directory is refused unless it is
an earlier planlab run replaced on purpose (`--force`), default run names never collide,
Ctrl-C while the report is drawn keeps the data, and a closed pipe ends quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from tiny_scenario import tiny_yaml

from planlab import results
from planlab.cli import main
from planner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_yaml(seed=1, rate="[[0, 2.0]]"))
    return path


def _run(scenario: Path, out: Path, *extra: str) -> int:
    return main(["run", str(scenario), "--out", str(out), "--no-report", "--quiet", *extra])


def test_out_holding_user_files_is_refused_and_left_alone(scenario_file, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    for extra in ((), ("--force",)):
        assert _run(scenario_file, out, *extra) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "notes.txt" in err and "did not write" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tiny.yaml"]


def test_out_that_is_a_file_is_refused(scenario_file, tmp_path, capsys):
    out = tmp_path / "file.txt"
    out.write_text("keep me")
    assert _run(scenario_file, out) == 2
    assert "not a directory" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_an_earlier_run_is_replaced_only_with_force(scenario_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(scenario_file, out) == 0
    first = (out / "summary.json").read_text()
    capsys.readouterr()
    assert _run(scenario_file, out, "--set", "seed=2") == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == first  # untouched
    assert _run(scenario_file, out, "--set", "seed=2", "--force") == 0
    assert json.loads((out / "summary.json").read_text())["extra"]["seed"] == 2
    # No temporary or moved-aside siblings are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.yaml"]


def test_an_empty_directory_is_fine(scenario_file, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert _run(scenario_file, out) == 0
    assert (out / "summary.json").is_file()


def test_force_never_deletes_a_file_added_to_a_run(scenario_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(scenario_file, out) == 0
    (out / "analysis.ipynb").write_text("{}")
    assert _run(scenario_file, out, "--force") == 2
    assert "analysis.ipynb" in capsys.readouterr().err
    assert (out / "analysis.ipynb").exists() and (out / "summary.json").exists()


def test_default_names_are_unique_for_runs_in_the_same_second(tmp_path):
    """Two writers racing for one default name both keep their files (-2 suffix)."""
    stamp = datetime(2026, 12, 1, 12, 0, 0)
    name = results.default_run_dir(tmp_path, "tiny", "dynamo", stamp)
    frames = _frames()

    def write(i: int) -> Path:
        return results.write_run(name, *frames, {"run": i}, unique=True)

    with ThreadPoolExecutor(4) as pool:
        written = list(pool.map(write, range(4)))
    assert len(set(written)) == 4
    assert sorted(p.name for p in written) == sorted(
        [name.name] + [f"{name.name}-{n}" for n in (2, 3, 4)]
    )
    runs = sorted(json.loads((p / "summary.json").read_text())["run"] for p in written)
    assert runs == [0, 1, 2, 3]


def test_two_parallel_cli_runs_of_one_scenario_both_survive(scenario_file, tmp_path):
    """Two processes started together, default --out, same scenario: two directories."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "planlab.cli", "run", str(scenario_file), "--no-report", "--quiet"]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL) for _ in range(2)
    ]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0]
    runs = [p for p in (tmp_path / "results").iterdir() if (p / "summary.json").is_file()]
    assert len(runs) == 2


def test_check_out_dir_tells_a_planlab_run_from_a_user_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("requests.csv", "summary.json", "report.html"):
        (run / name).write_text("x")
    (run / "plots").mkdir()
    results.check_out_dir(run, force=True)  # a planlab run: replaceable on purpose
    with pytest.raises(ConfigError, match="--force"):
        results.check_out_dir(run, force=False)
    (run / "summary.json").unlink()  # no marker: not recognisably planlab's
    with pytest.raises(ConfigError, match="did not write"):
        results.check_out_dir(run, force=True)
    results.check_out_dir(tmp_path / "absent", force=False)


def test_ctrl_c_while_drawing_the_report_keeps_the_data(
    scenario_file, tmp_path, monkeypatch, capsys
):
    import planlab.report

    def interrupted(run_dir, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(planlab.report, "write_report", interrupted)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(["run", str(scenario_file), "--out", str(out), "--quiet"])
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert "complete" in err and f"planlab report {out}" in err
    for name in results.FILES:
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["requests"]["arrived"] > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["decide", "--num-req", "600", "--isl", "3000", "--osl", "150", "--json"],
        ["profile", "list"],
        ["baseline", "show"],
        ["--help"],
    ],
    ids=["decide-json", "profile-list", "baseline-show", "help"],
)
def test_a_closed_pipe_ends_quietly(argv):
    """The reader is gone before the command writes (as after `| head -1`): the write fails
    with EPIPE, and planlab stops with 141 and no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: every write to the pipe fails
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "planlab.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    # argparse itself swallows a failed write of --help (exit 0); a command stops with 141.
    assert proc.returncode == (0 if argv == ["--help"] else 141), err


def _frames():
    import pandas as pd

    requests = pd.DataFrame({c: [] for c in results.REQUEST_COLUMNS})
    timeline = pd.DataFrame({c: [] for c in results.TIMELINE_COLUMNS})
    return requests, timeline, []


def test_compare_and_sweep_refuse_a_folder_of_the_users(scenario_file, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("chapter 1")
    assert main(["compare", str(scenario_file), "--policies", "static", "--out", str(mine),
                 "--quiet"]) == 2  # fmt: skip
    assert "thesis.tex" in capsys.readouterr().err
    assert main(["sweep", str(scenario_file), "--set", "seed=1,2", "--out", str(mine),
                 "--quiet"]) == 2  # fmt: skip
    assert "thesis.tex" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_compare_reruns_into_its_folder_only_with_force(scenario_file, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", str(scenario_file), "--policies", "static", "--out", str(out), "--quiet",
            "--jobs", "1"]  # fmt: skip
    assert main(argv) == 0
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert (out / "compare.csv").is_file()


def test_default_compare_folders_never_collide(tmp_path):
    first = results.claim_new_dir(tmp_path / "compare-x")
    second = results.claim_new_dir(tmp_path / "compare-x")
    assert (first.name, second.name) == ("compare-x", "compare-x-2")
