"""`--stack` and `planlab stack`: bad input is one line and exit 2, nothing written."""

from __future__ import annotations

import pytest

from planlab.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stack", "dynamo"], "--stack: only applies to a live run; add --live"),
        (
            ["--live", "--stack-startup", "hidden"],
            "--stack-startup: only applies with --stack NAME",
        ),
        (["--live", "--stack", "nope"], "unknown stack 'nope'; expected one of dynamo, vllm"),
        (["--live", "--stack", "dynamo", "--emulate"], "--stack starts its own frontend"),
        (
            ["--live", "--stack", "dynamo", "--frontend", "http://x"],
            "drop --frontend",
        ),
    ],
)
def test_bad_stack_flags_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "r"
    assert main(["run", "scenarios/live-step.yaml", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_stack_command_rejects_unknown_stack_and_bad_port(capsys):
    assert main(["stack", "nope"]) == 2
    assert "unknown stack 'nope'" in capsys.readouterr().err
    assert main(["stack", "dynamo", "--port", "70000"]) == 2
    assert "--port: expected a port 0-65535, got 70000" in capsys.readouterr().err


def test_missing_extra_names_it(tmp_path, capsys, monkeypatch):
    import live.stacks.dynamo as dynamo

    monkeypatch.setattr(dynamo.importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "r"
    assert (
        main(["run", "scenarios/live-step.yaml", "--live", "--stack", "dynamo", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "pip install 'planlab[dynamo]'" in err and "--no-deps ai-dynamo==1.6.1" in err
    assert not out.exists()
