"""NVIDIA's aiperf drives the emulator for real (100 streamed chat requests, a tokenizer
built here with `tokenizers`): aiperf's own TTFT and ITL agree with the emulator's
histograms within 5%, its token counts with the emulator's usage, and its scrape of
/metrics finds Dynamo's histograms.

aiperf is heavy (about 1.2 GB with transformers, datasets, dash, ...) and pins versions
of pandas and prometheus-client below the project's, so it lives in a virtualenv of its
own: `.venv-aiperf` at the repository root (.ci/run makes it), `aiperf` on PATH, or the
executable named by $PLANLAB_AIPERF."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tokenizer_kit import bpe_tokenizer

from live.emulator import EmulatorThread
from live.emulator.workers import FixedTiming
from planner import metrics as m

pytestmark = [pytest.mark.live, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
REQUESTS, CONCURRENCY, ISL, OSL = 100, 10, 200, 20
# The chat template's own tokens around one user message (tokenizer_kit.CHAT_TEMPLATE):
# <s> <|user|> \n ... </s> \n <|assistant|> \n
TEMPLATE_TOKENS = 7
# Long enough that aiperf's own overheads (sending a request took it 7-10 ms, a fresh
# connection 5-90 ms, on a loaded 2-core machine) are small against them.
TIMING = FixedTiming(prefill_overhead_s=0.6, decode_step_fixed_s=0.03)


def _aiperf() -> str:
    named = os.environ.get("PLANLAB_AIPERF")
    for candidate in (named, ROOT / ".venv-aiperf" / "bin" / "aiperf", shutil.which("aiperf")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip(
        "aiperf is not installed: python3 -m venv .venv-aiperf && "
        ".venv-aiperf/bin/pip install 'aiperf>=0.13,<0.14' (or set PLANLAB_AIPERF)"
    )


def _group_members(pgid: int) -> list[int]:
    """PIDs of live processes in process group pgid (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _hist_mean_ms(text: str, name: str) -> float:
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return 1000.0 * values[name + "_sum"] / values[name + "_count"]


def test_aiperf_against_the_emulator(tmp_path):
    aiperf = _aiperf()
    pytest.importorskip("tokenizers", reason="needs the tokenizer extra")
    pytest.importorskip("jinja2", reason="needs the tokenizer extra")
    tokenizer = bpe_tokenizer(tmp_path / "tokenizer")
    out = tmp_path / "aiperf"
    with EmulatorThread(TIMING, model="tiny-bpe", tokenizer=tokenizer) as h:
        cmd = [
            aiperf,
            "profile",
            "--model",
            "tiny-bpe",
            "--tokenizer",
            str(tokenizer),
            "--url",
            h.frontend_url,
            "--endpoint-type",
            "chat",
            "--streaming",
            "--request-count",
            str(REQUESTS),
            "--concurrency",
            str(CONCURRENCY),
            "--prompt-input-tokens-mean",
            str(ISL),
            "--prompt-input-tokens-stddev",
            "0",
            "--prompt-output-tokens-mean",
            str(OSL),
            "--prompt-output-tokens-stddev",
            "0",
            "--random-seed",
            "1",
            "--no-gpu-telemetry",
            # few processes: on 2 cores aiperf's own services compete with the emulator
            "--workers-max",
            "2",
            "--record-processor-service-count",
            "1",
            "--ui",
            "none",
            "--output-artifact-dir",
            str(out),
        ]
        env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_OFFLINE", None)  # aiperf then looks for a hub cache, not the path
        # its own session, so that every process aiperf starts can be found by group
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=240)
        finally:
            left = _group_members(proc.pid)
            if proc.poll() is None or left:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, output[-3000:]
        assert left == [], f"aiperf left processes running: {left}"
        metrics = h.frontend.metrics.exposition().decode()
    report = json.loads((out / "profile_export_aiperf.json").read_text())
    scraped = (out / "server_metrics_export.json").read_text()

    ttft_aiperf = report["time_to_first_token"]["avg"]
    itl_aiperf = report["inter_token_latency"]["avg"]
    ttft_emulator = _hist_mean_ms(metrics, m.TTFT)
    itl_emulator = _hist_mean_ms(metrics, m.ITL)
    print(
        f"TTFT aiperf {ttft_aiperf:.2f} ms, emulator {ttft_emulator:.2f} ms "
        f"({ttft_aiperf / ttft_emulator - 1:+.1%}); ITL aiperf {itl_aiperf:.3f} ms, "
        f"emulator {itl_emulator:.3f} ms ({itl_aiperf / itl_emulator - 1:+.1%})"
    )
    assert report["request_count"]["avg"] == REQUESTS
    assert report["error_summary"] in ([], None, {})
    assert abs(ttft_aiperf / ttft_emulator - 1) <= 0.05
    assert abs(itl_aiperf / itl_emulator - 1) <= 0.05
    # aiperf counts the output with the same tokenizer: exactly the tokens asked for
    assert report["output_sequence_length"]["avg"] == OSL
    assert report["usage_completion_tokens"]["avg"] == OSL
    # the emulator's prompt count is aiperf's plus the chat template's tokens
    assert report["input_sequence_length"]["avg"] == ISL
    assert report["usage_prompt_tokens"]["avg"] == ISL + TEMPLATE_TOKENS
    assert m.TTFT in scraped and m.ITL in scraped
