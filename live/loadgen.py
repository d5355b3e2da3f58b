"""Streaming load driver: replays a workload in real time as OpenAI requests and times every token.

Each request is sent at its arrival time (scaled by `time_scale`) with `"stream": true`,
`max_tokens` = its OSL and a prompt of about ISL tokens ("the " repeated: one token per
word for common tokenizers, and exactly ISL by the emulator's chars/4 estimate). Each
prompt starts with a tag unique to the run and the request (same length in characters),
because identical prompts would be served from a prefix cache (vLLM's is on by default:
87% of prompt tokens were cache hits with identical prompts); the scenario has no
shared-prefix setting yet, and `unique_prompts=False` gives the identical prompts. TTFT,
every token gap and the end-to-end time are measured at the client with
time.perf_counter, from the request's scheduled arrival: a request held back by the
concurrency limit (or by a late event loop) has that wait in its TTFT and e2e, as a
user's would.

Per-request status (the `status` column of requests.csv, where anything but ok and
timeout counts as failed): ok; http_error (a non-200 answer); connection_error
(refused, reset or closed mid-stream); timeout (request_timeout_s passed); stream_error
(an error event or an `{"error": ...}` chunk in the stream); incomplete (the stream
ended without `data: [DONE]`). Each ends that request only; the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

log = logging.getLogger(__name__)

# The columns of requests.csv (planlab.results.REQUEST_COLUMNS; live may not import planlab).
REQUEST_COLUMNS = (
    "id",
    "arrival_s",
    "isl",
    "osl",
    "ttft_ms",
    "tpot_ms",
    "e2e_s",
    "prefill_worker",
    "decode_worker",
    "status",
    "error",
)
# Also in each live row: the tokens the server produced (its usage count, else the
# content chunks), which differs from osl when a server stops early.
OUTPUT_TOKENS_COLUMN = "output_tokens"
PREFILL_HEADER = "x-planlab-prefill-worker"
DECODE_HEADER = "x-planlab-decode-worker"
APIS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_WORD = "the "


class SSEParser:
    """Incremental Server-Sent Events parser: feed bytes as they arrive, get whole events.

    Handles events split across reads, LF and CRLF line ends, comments (`: ...`),
    `event:` names and multi-line `data:`. Each event is (name, data) with name ""
    when the server gave none.
    """

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        buf = self._buf + chunk if self._buf else chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._buf = buf
            return []
        # Only whole lines are decoded: a newline never falls inside a UTF-8 sequence.
        self._buf = buf[cut + 1 :]
        events: list[tuple[str, str]] = []
        for line in buf[:cut].decode("utf-8", "replace").split("\n"):
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append((self._event, "\n".join(self._data)))
                self._data = []
                self._event = ""
            elif line[0] == ":":
                continue
            else:
                name, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value
        return events

    def close(self) -> list[tuple[str, str]]:
        """Events left when the stream ends without a final blank line."""
        events = self.feed(b"\n\n") if (self._buf or self._data) else []
        return events


@dataclass(frozen=True)
class RequestResult:
    """One request as the client saw it; times in seconds from the run's start."""

    id: int
    arrival_s: float
    isl: int
    osl: int
    status: str
    error: str = ""
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int = 0
    # Gaps between consecutive content chunks (one per token when the server sends one
    # token per chunk): the raw material for ITL histograms.
    gaps_s: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    prefill_worker: str = ""
    decode_worker: str = ""
    wait_s: float = 0.0  # from scheduled arrival to the request being sent

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first."""
        if self.output_tokens < 2 or self.ttft_s is None or self.e2e_s is None:
            return None
        span = float(self.gaps_s.sum()) if len(self.gaps_s) else 0.0
        return span / (self.output_tokens - 1)

    def row(self) -> dict:
        tpot = self.tpot_s
        return {
            "id": self.id,
            "arrival_s": self.arrival_s,
            "isl": self.isl,
            "osl": self.osl,
            "ttft_ms": None if self.ttft_s is None else self.ttft_s * 1000.0,
            "tpot_ms": None if tpot is None else tpot * 1000.0,
            "e2e_s": self.e2e_s,
            "prefill_worker": self.prefill_worker,
            "decode_worker": self.decode_worker,
            "status": self.status,
            "error": self.error,
            OUTPUT_TOKENS_COLUMN: self.output_tokens,
        }


@dataclass(frozen=True)
class LoadResult:
    results: tuple[RequestResult, ...]
    wall_s: float

    def rows(self) -> list[dict]:
        return [r.row() for r in self.results]

    def gaps_s(self) -> np.ndarray:
        parts = [r.gaps_s for r in self.results if len(r.gaps_s)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.results)


class _StreamError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class LoadGenerator:
    """Replay a scenario.workload.Requests (arrival_s, isl, osl arrays) against base_url.

    api: "chat" or "completions". extensions: also send `planlab_isl`/`planlab_osl`
    (exact lengths for the emulator; vLLM accepts unknown fields but logs a warning for
    each request, hence opt-in). ignore_eos: send vLLM's `ignore_eos: true` so every
    request produces exactly OSL tokens, with `min_tokens` = OSL as well (opt-in: not
    every server knows them). unique_prompts: start every prompt with a tag unique to
    this run and request, so no two prompts share a prefix-cache block (prompt_salt
    fixes the run's part of it). time_scale: multiplies arrival times (0.5 replays twice
    as fast).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api: str = "chat",
        model: str = "planlab-emulated",
        concurrency_limit: int = 1000,
        request_timeout_s: float = 600.0,
        time_scale: float = 1.0,
        extensions: bool = False,
        ignore_eos: bool = False,
        unique_prompts: bool = True,
        prompt_salt: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        if api not in APIS:
            raise ValueError(f"api must be one of {sorted(APIS)}, got {api!r}")
        if concurrency_limit < 1 or request_timeout_s <= 0 or time_scale <= 0:
            raise ValueError("concurrency_limit, request_timeout_s and time_scale must be positive")
        self.url = base_url.rstrip("/") + APIS[api]
        self.chat = api == "chat"
        self.model = model
        self.concurrency_limit = concurrency_limit
        self.request_timeout_s = request_timeout_s
        self.time_scale = time_scale
        self.extensions = extensions
        self.ignore_eos = ignore_eos
        self.unique_prompts = unique_prompts
        self.prompt_salt = prompt_salt if prompt_salt is not None else secrets.token_hex(4)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self._words = _WORD * 1024

    def prompt(self, isl: int, request_id: int | None = None) -> str:
        """About isl tokens of text, cheap: a slice of a cached repeated-word string.

        With unique_prompts and a request_id, the first characters are replaced by
        "<salt>-<id> " (the length in characters stays 4 * isl).
        """
        n = len(_WORD) * max(1, int(isl))
        while len(self._words) < n:
            self._words += self._words
        if not self.unique_prompts or request_id is None:
            return self._words[:n]
        tag = f"{self.prompt_salt}-{request_id} "
        return tag + self._words[: max(0, n - len(tag))]

    def body(self, isl: int, osl: int, request_id: int | None = None) -> bytes:
        body: dict = {
            "model": self.model,
            "max_tokens": int(osl),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        prompt = self.prompt(isl, request_id)
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.extensions:
            body["planlab_isl"] = int(isl)
            body["planlab_osl"] = int(osl)
        if self.ignore_eos:
            body["ignore_eos"] = True
            body["min_tokens"] = int(osl)
        return json.dumps(body).encode()

    def run_sync(self, requests, **kwargs) -> LoadResult:
        return asyncio.run(self.run(requests, **kwargs))

    async def run(
        self,
        requests,
        *,
        on_result: Callable[[RequestResult], None] | None = None,
        start_s: float | None = None,
    ) -> LoadResult:
        """Send every request at its (scaled) arrival time; return when all have ended.

        start_s: the perf_counter time that arrival 0 maps to (default: now), so a caller
        can align the run with its own clock.
        """
        arrival = np.asarray(requests.arrival_s, dtype=np.float64) * self.time_scale
        isl = np.asarray(requests.isl, dtype=np.int64)
        osl = np.asarray(requests.osl, dtype=np.int64)
        sem = asyncio.Semaphore(self.concurrency_limit)
        connector = aiohttp.TCPConnector(
            limit=self.concurrency_limit, limit_per_host=0, force_close=False
        )
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        t0 = time.perf_counter() if start_s is None else start_s
        results: list[RequestResult | None] = [None] * len(arrival)
        tasks: set[asyncio.Task] = set()

        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:

            async def one(i: int) -> None:
                res = await self._one(
                    session, sem, t0, i, float(arrival[i]), int(isl[i]), int(osl[i])
                )
                results[i] = res
                if on_result is not None:
                    on_result(res)

            try:
                for i in range(len(arrival)):
                    delay = t0 + arrival[i] - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    task = asyncio.create_task(one(i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*list(tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise
        wall = time.perf_counter() - t0
        done = tuple(r for r in results if r is not None)
        log.info("load run: %d requests in %.1f s", len(done), wall)
        return LoadResult(results=done, wall_s=wall)

    async def _one(
        self, session, sem, t0: float, i: int, arrival_s: float, isl: int, osl: int
    ) -> RequestResult:
        scheduled = t0 + arrival_s
        times: list[float] = []
        usage_tokens = 0
        pw = dw = ""
        status, error = "ok", ""
        sent = scheduled
        async with sem:
            sent = time.perf_counter()
            try:
                async with session.post(
                    self.url, data=self.body(isl, osl, i), headers=self.headers
                ) as resp:
                    pw = resp.headers.get(PREFILL_HEADER, "")
                    dw = resp.headers.get(DECODE_HEADER, "")
                    if resp.status != 200:
                        text = (await resp.text(errors="replace"))[:300]
                        raise _StreamError("http_error", f"HTTP {resp.status}: {text}")
                    usage_tokens = await self._read_stream(resp, times)
            except _StreamError as exc:
                status, error = exc.status, str(exc)
            except TimeoutError:
                status, error = "timeout", f"no complete answer within {self.request_timeout_s} s"
            except aiohttp.ClientPayloadError as exc:
                status, error = "connection_error", f"stream broken: {exc}"
            except (aiohttp.ClientError, ConnectionError, OSError) as exc:
                status, error = "connection_error", f"{type(exc).__name__}: {exc}"
        end = time.perf_counter()
        n = max(len(times), usage_tokens)
        gaps = np.diff(np.asarray(times)) if len(times) > 1 else np.zeros(0)
        return RequestResult(
            id=i,
            arrival_s=arrival_s,
            isl=isl,
            osl=osl,
            status=status,
            error=error,
            ttft_s=(times[0] - scheduled) if times else None,
            e2e_s=end - scheduled if status == "ok" else None,
            output_tokens=n,
            gaps_s=gaps,
            prefill_worker=pw,
            decode_worker=dw,
            wait_s=sent - scheduled,
        )

    async def _read_stream(self, resp: aiohttp.ClientResponse, times: list[float]) -> int:
        """Read the SSE body, appending the arrival time of each content chunk; returns
        the usage chunk's completion_tokens (0 when absent)."""
        parser = SSEParser()
        usage_tokens = 0
        done = False
        chat = self.chat
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            for event, data in parser.feed(chunk):
                if data == "[DONE]":
                    done = True
                    continue
                usage_tokens = self._event(event, data, now, times, chat) or usage_tokens
        for event, data in parser.close():
            if data == "[DONE]":
                done = True
            else:
                usage_tokens = (
                    self._event(event, data, time.perf_counter(), times, chat) or usage_tokens
                )
        if not done:
            raise _StreamError(
                "incomplete", f"stream ended without [DONE] after {len(times)} tokens"
            )
        return usage_tokens

    @staticmethod
    def _event(event: str, data: str, now: float, times: list[float], chat: bool) -> int:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            if event == "error":
                raise _StreamError("stream_error", data[:300]) from None
            raise _StreamError("stream_error", f"unparseable event data {data[:100]!r}") from exc
        if event == "error" or (isinstance(obj, dict) and obj.get("error")):
            err = obj.get("error", obj) if isinstance(obj, dict) else obj
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise _StreamError("stream_error", str(msg)[:300])
        if not isinstance(obj, dict):
            return 0
        for choice in obj.get("choices") or ():
            if chat:
                delta = choice.get("delta") or {}
                content = delta.get("content") or delta.get("reasoning_content")
            else:
                content = choice.get("text")
            if content:
                times.append(now)
        usage = obj.get("usage")
        if usage:
            return int(usage.get("completion_tokens") or 0)
        return 0
