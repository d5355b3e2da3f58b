"""The emulator's OpenAI-compatible HTTP frontend (aiohttp) with Dynamo's frontend metrics.

Prompt length: the `planlab_isl` extension field when given, else the prompt's
characters / 4 (a rough tokenizer-free estimate; at least 1). Output length:
`planlab_osl` when given, else `max_tokens` (or `max_completion_tokens`), else 16.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from live.emulator.cluster import EmulatedCluster
from live.emulator.workers import END
from planner import metrics as m

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16
TOKEN_TEXT = " tok"
PREFILL_HEADER = "x-planlab-prefill-worker"
DECODE_HEADER = "x-planlab-decode-worker"


def _strip(name: str, suffix: str) -> str:
    # prometheus-client appends _total to counters itself.
    return name[: -len(suffix)] if name.endswith(suffix) else name


class FrontendMetrics:
    """The frontend metrics of ARCHITECTURE.md in their own registry, labelled by model."""

    def __init__(self, model: str, cluster: EmulatedCluster | None = None):
        self.registry = CollectorRegistry()
        self.model = model
        r = self.registry

        def hist(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, ["model"], buckets=m.BUCKETS[name], registry=r).labels(
                model=model
            )

        self.ttft = hist(m.TTFT, "Time to first token (s)")
        self.itl = hist(m.ITL, "Inter-token latency (s), one observation per token gap")
        self.duration = hist(m.REQUEST_DURATION, "Request duration (s)")
        self.isl = hist(m.ISL, "Input sequence length (tokens)")
        self.osl = hist(m.OSL, "Output sequence length (tokens)")
        self.requests = Counter(
            _strip(m.REQUESTS_TOTAL, "_total"),
            "Requests",
            ["model", "request_type", "status"],
            registry=r,
        )
        # Admitted requests, counted as the handler starts (Dynamo 1.6's demand signal).
        self.started = Counter(
            _strip(m.REQUESTS_STARTED_TOTAL, "_total"),
            "Requests started",
            ["model", "request_type"],
            registry=r,
        )
        self.output_tokens = Counter(
            _strip(m.OUTPUT_TOKENS_TOTAL, "_total"), "Output tokens", ["model"], registry=r
        ).labels(model=model)
        self.inflight = Gauge(m.INFLIGHT, "Requests in flight", ["model"], registry=r).labels(
            model=model
        )
        self.active = Gauge(m.ACTIVE, "Requests being handled", ["model"], registry=r).labels(
            model=model
        )
        self.queued = Gauge(m.QUEUED, "Requests waiting to start", ["model"], registry=r).labels(
            model=model
        )
        if cluster is not None:
            self.inflight.set_function(lambda: cluster.inflight)
            self.active.set_function(lambda: cluster.inflight)
            self.queued.set_function(cluster.queued)

    def count(self, request_type: str, status: str) -> None:
        self.requests.labels(model=self.model, request_type=request_type, status=status).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class BadRequest(Exception):
    pass


def _positive_int(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{key} must be a positive integer, got {value!r}")
    return value


def _prompt_chars(body: dict, chat: bool) -> int:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        n = 0
        for msg in messages:
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, str):
                n += len(content)
            elif isinstance(content, list):
                n += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
        return n
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return 4 * len(prompt)  # token ids: exactly len(prompt) tokens
        return sum(len(p) for p in prompt if isinstance(p, str))
    raise BadRequest("prompt must be a string or a list")


def parse_lengths(body: dict, chat: bool) -> tuple[int, int]:
    """(isl, osl) of a request body; BadRequest with a message for a bad field."""
    isl = _positive_int(body, "planlab_isl")
    if isl is None:
        isl = max(1, _prompt_chars(body, chat) // 4)
    osl = _positive_int(body, "planlab_osl")
    if osl is None:
        osl = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    return isl, osl or DEFAULT_MAX_TOKENS


class Frontend:
    """aiohttp application serving the OpenAI routes over an EmulatedCluster."""

    def __init__(self, cluster: EmulatedCluster, model: str = "planlab-emulated"):
        self.cluster = cluster
        self.model = model
        self.metrics = FrontendMetrics(model, cluster)
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get("/metrics", self.metrics_page),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- simple routes -----------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": "planlab"}
                ],
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        state = self.cluster.replica_state()
        return web.json_response(
            {
                "status": "healthy",
                "prefill_ready": state.prefill.ready,
                "decode_ready": state.decode.ready,
            }
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self.metrics.exposition())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    # -- completions -------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    def _error(self, status: int, message: str, request_type: str) -> web.Response:
        self.metrics.count(request_type, "error")
        return web.json_response(
            {
                "error": {
                    "message": message,
                    "type": "BadRequestError" if status == 400 else "error",
                    "code": status,
                }
            },
            status=status,
        )

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
        except (json.JSONDecodeError, UnicodeDecodeError, BadRequest) as exc:
            return self._error(400, f"invalid JSON body: {exc}", "unary")
        stream = bool(body.get("stream", False))
        request_type = "stream" if stream else "unary"
        try:
            isl, osl = parse_lengths(body, chat)
        except BadRequest as exc:
            return self._error(400, str(exc), request_type)
        model = body.get("model") or self.model
        start = time.perf_counter()
        self.metrics.started.labels(model=self.metrics.model, request_type=request_type).inc()
        self.metrics.isl.observe(isl)
        job = await self.cluster.submit(isl, osl)
        status = "error"
        try:
            if stream:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                resp, status = await self._stream(request, job, model, chat, include_usage, start)
            else:
                resp = await self._unary(job, model, chat, start)
                status = "success" if resp.status == 200 else "error"
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            status = "cancelled"
            raise
        finally:
            self.cluster.finished(job)
            self.metrics.count(request_type, status)

    def _headers(self, job) -> dict[str, str]:
        return {PREFILL_HEADER: job.prefill_worker.name, DECODE_HEADER: job.decode_worker.name}

    def _observe(self, start: float, times: list[float]) -> None:
        """Server-side latency metrics from the token times of one finished request."""
        metrics = self.metrics
        if times:
            metrics.ttft.observe(times[0] - start)
            prev = times[0]
            for t in times[1:]:
                metrics.itl.observe(t - prev)
                prev = t
        metrics.osl.observe(len(times))
        metrics.output_tokens.inc(len(times))
        metrics.duration.observe(time.perf_counter() - start)

    async def _stream(
        self, request, job, model: str, chat: bool, include_usage: bool, start: float
    ) -> tuple[web.StreamResponse, str]:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self._headers(job),
            }
        )
        await resp.prepare(request)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        # A fixed prefix and suffix around each token keep the per-token work to one write.
        head = f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{json.dumps(model)},"choices":[{{"index":0,'
        if chat:
            first = (
                head
                + '"delta":{"role":"assistant","content":'
                + json.dumps(TOKEN_TEXT)
                + '},"logprobs":null,"finish_reason":null}]}\n\n'
            ).encode()
            body_tok = (
                head
                + '"delta":{"content":'
                + json.dumps(TOKEN_TEXT)
                + '},"logprobs":null,"finish_reason":null}]}\n\n'
            ).encode()
            last = head + '"delta":{},"logprobs":null,"finish_reason":"length"}]}\n\n'
        else:
            first = body_tok = (
                head
                + '"text":'
                + json.dumps(TOKEN_TEXT)
                + ',"logprobs":null,"finish_reason":null}]}\n\n'
            ).encode()
            last = head + '"text":"","logprobs":null,"finish_reason":"length"}]}\n\n'
        times: list[float] = []
        tokens = job.tokens
        while True:
            t = await tokens.get()
            if t is END:
                break
            times.append(t)
            await resp.write(first if len(times) == 1 else body_tok)
        self._observe(start, times)
        if job.error is not None:
            err = {"error": {"message": job.error, "type": "InternalServerError", "code": 500}}
            await resp.write(f"event: error\ndata: {json.dumps(err)}\n\n".encode())
            await resp.write_eof()
            return resp, "error"
        tail = last
        if include_usage:
            usage = {
                "prompt_tokens": job.isl,
                "completion_tokens": len(times),
                "total_tokens": job.isl + len(times),
            }
            tail += f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{json.dumps(model)},"choices":[],"usage":{json.dumps(usage)}}}\n\n'
        await resp.write((tail + "data: [DONE]\n\n").encode())
        await resp.write_eof()
        return resp, "success"

    async def _unary(self, job, model: str, chat: bool, start: float) -> web.Response:
        times: list[float] = []
        while (t := await job.tokens.get()) is not END:
            times.append(t)
        self._observe(start, times)
        if job.error is not None:
            return web.json_response(
                {"error": {"message": job.error, "type": "InternalServerError", "code": 500}},
                status=500,
            )
        text = TOKEN_TEXT * len(times)
        usage = {
            "prompt_tokens": job.isl,
            "completion_tokens": len(times),
            "total_tokens": job.isl + len(times),
        }
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        choice: dict = {"index": 0, "finish_reason": "length", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        payload = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        return web.json_response(payload, headers=self._headers(job))
