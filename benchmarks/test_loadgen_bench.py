"""Load-driver throughput: streams sustained, tokens per second and client-side TTFT overhead
against a minimal SSE server on loopback that runs in its own process (its own core).

The server is a raw asyncio protocol (no framework) that writes the first token as soon as a
request is read (prefill done) and then, from one ticker, a token to every open stream
each `ITL_S`, like a decode step; it records, per request, when the
request arrived and when its first token was written (time.perf_counter, which is
CLOCK_MONOTONIC on Linux and so comparable across processes). The request index travels
in the prompt length (isl = index + 1), so client and server records pair up exactly.

Run: python -m pytest benchmarks/test_loadgen_bench.py -q -s
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from live.loadgen import LoadGenerator

N_REQUESTS = 600
RAMP_S = 2.0  # arrivals spread uniformly over the ramp
OSL = 150
ITL_S = 0.025  # each stream: 150 tokens over 3.75 s; all 600 open during [2 s, 3.75 s]
WINDOW_S = (RAMP_S + 0.1, OSL * ITL_S - 0.1)


# -- the server (run in a subprocess) ---------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.streams: list[list] = []  # [transport, index, tokens sent, osl]
        self.recv: dict[int, float] = {}
        self.first: dict[int, float] = {}
        self.max_active = 0
        self.token = b'data: {"choices":[{"index":0,"delta":{"content":" tok"}}]}\n\n'
        self.tail = b'data: {"choices":[],"usage":{"completion_tokens":%d}}\n\ndata: [DONE]\n\n'

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            next_t += ITL_S
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            still = []
            for s in self.streams:
                transport, index, sent, osl = s
                if transport.is_closing():
                    continue
                transport.write(self.token)
                s[2] = sent = sent + 1
                if sent >= osl:
                    transport.write(self.tail % osl)
                    transport.close()
                else:
                    still.append(s)
            self.streams = still


def _protocol(server: _Server):
    class Conn(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buf = b""

        def data_received(self, data):
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            recv = time.perf_counter()
            if head.startswith("GET /stats"):
                body = json.dumps(
                    {"recv": server.recv, "first": server.first, "max_active": server.max_active}
                ).encode()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(body), body)
                )
                self.transport.close()
                return
            req = json.loads(self.buf[end + 4 : end + 4 + length])
            prompt = req["messages"][0]["content"] if "messages" in req else req["prompt"]
            index = len(prompt) // 4 - 1
            server.recv[index] = recv
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            # The first token goes out at once (prefill done), the rest on the decode ticks.
            self.transport.write(server.token)
            server.first[index] = time.perf_counter()
            server.streams.append([self.transport, index, 1, int(req["max_tokens"])])
            server.max_active = max(server.max_active, len(server.streams))

    return Conn


async def _serve() -> None:
    server = _Server()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _protocol(server)(), "127.0.0.1", 0, backlog=2048)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await server.tick()


# -- the benchmark ------------------------------------------------------------------------


@pytest.fixture
def sse_server():
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.timeout(120)
def test_loadgen_sustains_500_streams(benchmark, sse_server):
    n = N_REQUESTS
    requests = SimpleNamespace(
        arrival_s=np.linspace(0.0, RAMP_S, n),
        isl=np.arange(1, n + 1),  # the request index, recovered by the server
        osl=np.full(n, OSL),
    )
    gen = LoadGenerator(sse_server, concurrency_limit=1000, request_timeout_s=60)
    box = {}

    def run():
        t0 = time.perf_counter() + 0.05
        box["t0"] = t0
        box["result"] = gen.run_sync(requests, start_s=t0)

    benchmark.pedantic(run, rounds=1, iterations=1)
    result, t0 = box["result"], box["t0"]
    with urllib.request.urlopen(sse_server + "/stats", timeout=10) as resp:
        stats = json.loads(resp.read())

    assert result.statuses() == {"ok": n}
    # tokens received by the client inside the window where every stream is open
    lo, hi = t0 + WINDOW_S[0], t0 + WINDOW_S[1]
    in_window = 0
    overhead, send_lag, deliver_lag = [], [], []
    for r in result.results:
        first = t0 + r.arrival_s + r.ttft_s
        times = first + np.concatenate([[0.0], np.cumsum(r.gaps_s)])
        in_window += int(((times >= lo) & (times < hi)).sum())
        recv, sent_first = stats["recv"][str(r.id)], stats["first"][str(r.id)]
        overhead.append(r.ttft_s - (sent_first - recv))
        send_lag.append(recv - (t0 + r.arrival_s))
        deliver_lag.append(first - sent_first)
    tokens_per_s = in_window / (hi - lo)
    figures = {
        "concurrent_streams_server_max": stats["max_active"],
        "tokens_per_s_in_window": round(tokens_per_s),
        "ttft_overhead_ms_p50": round(1000 * float(np.median(overhead)), 3),
        "ttft_overhead_ms_p90": round(1000 * float(np.percentile(overhead, 90)), 3),
        "send_lag_ms_p50": round(1000 * float(np.median(send_lag)), 3),
        "deliver_lag_ms_p50": round(1000 * float(np.median(deliver_lag)), 3),
        "itl_ms_p50_client": round(1000 * float(np.median(result.gaps_s())), 3),
        "wall_s": round(result.wall_s, 2),
    }
    benchmark.extra_info.update(figures)
    print(figures)
    assert stats["max_active"] >= 500
    assert tokens_per_s >= 20_000
    assert np.median(overhead) < 0.002


if __name__ == "__main__" and "--serve" in sys.argv:
    asyncio.run(_serve())
