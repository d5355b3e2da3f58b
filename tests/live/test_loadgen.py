"""The streaming load driver: SSE parsing, per-request failure handling, concurrency bound,
time scaling, and agreement with the emulator's own metrics."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from live.emulator import start_emulated_cluster
from live.emulator.workers import FixedTiming
from live.loadgen import OUTPUT_TOKENS_COLUMN, REQUEST_COLUMNS, LoadGenerator, SSEParser
from planner import metrics as m

pytestmark = pytest.mark.timeout(60)


def requests_of(arrival, isl, osl):
    return SimpleNamespace(
        arrival_s=np.asarray(arrival, dtype=float),
        isl=np.asarray(isl, dtype=np.int64),
        osl=np.asarray(osl, dtype=np.int64),
    )


# -- SSE parsing ------------------------------------------------------------------------

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
    b"event: note\ndata: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ("", '{"choices":[{"delta":{"role":"assistant","content":""}}]}'),
    ("", '{"choices":[{"delta":{"content":"a"}}]}'),
    ("note", "line one\nline two"),
    ("", "[DONE]"),
]


def test_sse_parser_whole_stream():
    assert SSEParser().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_sse_parser_any_split_point(cut):
    p = SSEParser()
    events = p.feed(STREAM[:cut]) + p.feed(STREAM[cut:]) + p.close()
    assert events == EXPECTED


def test_sse_parser_byte_by_byte_and_unterminated_last_event():
    p = SSEParser()
    events = []
    for i in range(len(STREAM) - 2):  # drop the final blank line
        events += p.feed(STREAM[i : i + 1])
    assert events == EXPECTED[:-1]
    assert p.close() == [("", "[DONE]")]


# -- a misbehaving server ---------------------------------------------------------------


def chunk(text: str) -> bytes:
    return (
        f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': text}}]})}\n\n".encode()
    )


class FaultyServer:
    """Picks its behaviour from max_tokens, so one run exercises every failure."""

    def __init__(self):
        self.active = 0
        self.max_active = 0
        self.received: list[float] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(time.perf_counter())
        mode = body["max_tokens"]
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self._serve(request, mode)
        finally:
            self.active -= 1

    async def _serve(self, request, mode):
        if mode == 1:
            return web.json_response({"error": {"message": "boom"}}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if mode == 2:  # reset mid-stream
            await resp.write(chunk("a"))
            await asyncio.sleep(0.05)
            request.transport.abort()
            return resp
        if mode == 3:  # stall past the client's timeout
            await resp.write(chunk("a"))
            await asyncio.sleep(5)
            return resp
        if mode == 4:  # frames split across writes, vLLM's empty role chunk, usage chunk
            await resp.write(
                b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
            )
            for text in ("x", "y", "z", "w"):
                frame = chunk(text)
                await resp.write(frame[:7])
                await asyncio.sleep(0.01)
                await resp.write(frame[7:])
            usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
            await resp.write(f": ping\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            return resp
        if mode == 5:  # Dynamo-style error event mid-stream
            await resp.write(chunk("a"))
            await resp.write(b'event: error\ndata: {"message": "engine died"}\n\n')
            return resp
        if mode == 6:  # vLLM-style error chunk mid-stream
            await resp.write(chunk("a"))
            await resp.write(b'data: {"error": {"message": "out of KV", "code": 500}}\n\n')
            await resp.write(b"data: [DONE]\n\n")
            return resp
        if mode == 7:  # closes cleanly without [DONE]
            await resp.write(chunk("a"))
            return resp
        # a slow, well-behaved stream for the concurrency test
        for text in ("a", "b"):
            await asyncio.sleep(0.05)
            await resp.write(chunk(text))
        await resp.write(b"data: [DONE]\n\n")
        return resp


async def serve(server: FaultyServer):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    app.router.add_post("/v1/completions", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def test_failures_are_per_request_and_the_run_completes():
    async def main():
        server = FaultyServer()
        runner, url = await serve(server)
        try:
            gen = LoadGenerator(url, request_timeout_s=1.0)
            return await gen.run(requests_of([0.0] * 7, [10] * 7, [1, 2, 3, 4, 5, 6, 7]))
        finally:
            await runner.cleanup()

    result = asyncio.run(main())
    by_osl = {r.osl: r for r in result.results}
    assert len(result.results) == 7
    assert by_osl[1].status == "http_error" and "500" in by_osl[1].error
    assert by_osl[2].status == "connection_error"
    assert by_osl[3].status == "timeout"
    assert by_osl[5].status == "stream_error" and "engine died" in by_osl[5].error
    assert by_osl[6].status == "stream_error" and "out of KV" in by_osl[6].error
    assert by_osl[7].status == "incomplete"
    ok = by_osl[4]
    assert ok.status == "ok" and ok.error == ""
    # the empty role chunk is not a token; four content chunks give three gaps
    assert ok.output_tokens == 4 and len(ok.gaps_s) == 3
    # each frame arrived in two writes 10 ms apart: a gap can only be measured after both
    assert ok.gaps_s.min() >= 0.009
    assert ok.ttft_s is not None and ok.ttft_s >= 0.009
    assert ok.e2e_s >= ok.ttft_s + ok.gaps_s.sum()
    row = ok.row()
    assert tuple(row) == (*REQUEST_COLUMNS, OUTPUT_TOKENS_COLUMN)
    # osl asked 4 and the server produced 4 (its usage chunk); requests.csv keeps both.
    assert row["osl"] == 4 and row[OUTPUT_TOKENS_COLUMN] == 4
    assert row["tpot_ms"] == pytest.approx(ok.gaps_s.sum() / 3 * 1000)
    failed = by_osl[1].row()
    assert failed["ttft_ms"] is None and failed["e2e_s"] is None


def test_request_columns_match_results_module():
    results = pytest.importorskip("planlab.results")
    assert REQUEST_COLUMNS == results.REQUEST_COLUMNS


def test_concurrency_limit_bounds_streams_and_waits_count_in_ttft():
    async def main():
        server = FaultyServer()
        runner, url = await serve(server)
        try:
            gen = LoadGenerator(url, concurrency_limit=2, request_timeout_s=5.0)
            return server, await gen.run(requests_of([0.0] * 6, [10] * 6, [50] * 6))
        finally:
            await runner.cleanup()

    server, result = asyncio.run(main())
    assert result.statuses() == {"ok": 6}
    assert server.max_active == 2
    # each stream takes >= 100 ms; six through two slots: the last pair waited >= 200 ms
    waits = sorted(r.wait_s for r in result.results)
    assert waits[-1] >= 0.19
    slowest = max(result.results, key=lambda r: r.wait_s)
    assert slowest.ttft_s >= slowest.wait_s + 0.05


def test_time_scale_compresses_arrivals():
    async def main():
        server = FaultyServer()
        runner, url = await serve(server)
        try:
            gen = LoadGenerator(url, time_scale=0.1, request_timeout_s=5.0)
            return server, await gen.run(requests_of([0.0, 2.0, 4.0], [10] * 3, [4] * 3))
        finally:
            await runner.cleanup()

    server, result = asyncio.run(main())
    assert [r.arrival_s for r in result.results] == pytest.approx([0.0, 0.2, 0.4])
    gaps = np.diff(server.received)
    assert gaps.min() >= 0.19  # never sent early
    assert result.statuses() == {"ok": 3}


def test_prompt_and_body_sizes():
    gen = LoadGenerator("http://127.0.0.1:1", api="completions", extensions=True, ignore_eos=True)
    body = json.loads(gen.body(3000, 7))
    assert len(body["prompt"]) == 4 * 3000 and body["prompt"].split() == ["the"] * 3000
    assert body["max_tokens"] == 7 and body["stream"] is True
    assert body["planlab_isl"] == 3000 and body["planlab_osl"] == 7 and body["ignore_eos"] is True
    plain = json.loads(LoadGenerator("http://127.0.0.1:1").body(5, 2))
    assert "planlab_isl" not in plain and "ignore_eos" not in plain
    assert plain["messages"][0]["content"] == "the " * 5
    assert "min_tokens" not in plain and body["min_tokens"] == 7


def test_prompts_are_unique_per_request_and_run_at_the_same_length():
    gen = LoadGenerator("http://127.0.0.1:1", api="completions", prompt_salt="ab12")
    prompts = [json.loads(gen.body(200, 4, i))["prompt"] for i in range(50)]
    assert len(set(prompts)) == 50
    assert all(len(p) == 4 * 200 for p in prompts)
    assert prompts[7].startswith("ab12-7 the the ")
    # vLLM hashes prompt tokens in blocks of 16: different first characters -> no shared block.
    assert len({p[:16] for p in prompts}) == 50
    other_run = LoadGenerator("http://127.0.0.1:1", api="completions")
    assert json.loads(other_run.body(200, 4, 7))["prompt"] != prompts[7]
    same = LoadGenerator("http://127.0.0.1:1", api="completions", unique_prompts=False)
    assert json.loads(same.body(200, 4, 7))["prompt"] == "the " * 200


def test_connection_refused_is_per_request():
    gen = LoadGenerator("http://127.0.0.1:9", request_timeout_s=2.0)  # discard port: closed
    result = gen.run_sync(requests_of([0.0, 0.0], [10, 10], [4, 4]))
    assert result.statuses() == {"connection_error": 2}


# -- against the emulator -----------------------------------------------------------------


def histogram(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram in a /metrics page."""
    for family in text_string_to_metric_families(text):
        if family.name == name:
            total = next(s.value for s in family.samples if s.name == name + "_sum")
            count = next(s.value for s in family.samples if s.name == name + "_count")
            return total, count
    raise AssertionError(f"{name} not exposed")


def test_client_latencies_agree_with_emulator_metrics():
    timing = FixedTiming(prefill_s_per_token=20e-6, decode_step_fixed_s=0.01)
    n = 40

    async def main():
        async with start_emulated_cluster(timing, prefill=1, decode=2) as h:
            gen = LoadGenerator(
                h.frontend_url, model=h.model, extensions=True, request_timeout_s=20
            )
            arrivals = np.arange(n) * 0.02
            result = await gen.run(requests_of(arrivals, [1000] * n, [20] * n))
            import aiohttp

            async with aiohttp.ClientSession() as s, s.get(h.metrics_url) as resp:
                return result, await resp.text()

    result, text = asyncio.run(main())
    assert result.statuses() == {"ok": n}
    assert result.output_tokens == 20 * n
    assert {r.decode_worker for r in result.results} == {"decode-0", "decode-1"}
    ttft_sum, ttft_count = histogram(text, m.TTFT)
    itl_sum, itl_count = histogram(text, m.ITL)
    gaps = result.gaps_s()
    assert ttft_count == n and itl_count == len(gaps) == 19 * n
    server_itl = itl_sum / itl_count
    client_itl = float(gaps.mean())
    assert client_itl == pytest.approx(server_itl, rel=0.15, abs=0.002)
    server_ttft = ttft_sum / ttft_count
    client_ttft = float(np.mean([r.ttft_s for r in result.results]))
    # the client's TTFT also holds the HTTP round trip: close, never below the server's
    assert client_ttft >= server_ttft * 0.98
    assert client_ttft == pytest.approx(server_ttft, rel=0.25, abs=0.005)
    # one prefill step of 1000 tokens (20 ms) plus one decode step (10 ms) at the least
    assert server_ttft >= 0.03
