"""The CLI progress bar: silent when asked, nothing for short runs, lines off a terminal."""

from __future__ import annotations

import io

from planlab.progress import ProgressBar


def test_quiet_bar_writes_nothing() -> None:
    out = io.StringIO()
    bar = ProgressBar(stream=out, enabled=False, tty=True)
    bar.sim(50.0, 100.0)
    bar.runs(1, 2, "a")
    bar.close()
    assert out.getvalue() == ""


def test_bar_waits_a_second_then_draws_and_ends_the_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(stream=out, tty=True)
    bar.sim(10.0, 100.0)
    assert out.getvalue() == ""  # runs shorter than a second draw nothing
    bar.t0 -= 2.0
    bar.sim(50.0, 100.0)
    bar.close()
    text = out.getvalue()
    assert "50.0%" in text and text.startswith("\r") and text.endswith("\n")


def test_off_a_terminal_each_finished_run_is_one_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(stream=out, delay_s=0.0)  # StringIO is not a terminal
    bar.sim(50.0, 100.0)  # no bar off a terminal
    bar.runs(1, 3, "steady/dynamo")
    bar.runs(2, 3, "steady/slaplan")
    bar.close()
    lines = out.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["[1/3] steady/dynamo", "[2/3] steady/slaplan"]
