"""The emulator's OpenAI-compatible HTTP frontend (aiohttp) with Dynamo's frontend metrics.

Prompt length: the `planlab_isl` extension field when given, else the prompt counted by
a local Hugging Face tokenizer (chat template included, live.emulator.tokens) when the
frontend has one, else the prompt's characters / 4 (a rough estimate; at least 1).
Output length: `planlab_osl` when given, else `max_completion_tokens` (or `max_tokens`),
else 16. Every error is JSON in the OpenAI shape vLLM answers with:
{"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
import uuid

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from live.emulator.cluster import ClusterStopped, EmulatedCluster, RequestTooLong
from live.emulator.tokens import PromptCounter, TemplateError
from live.emulator.workers import END
from planner import metrics as m

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16
DEFAULT_MODEL = "planlab-emulated"
MAX_BODY_BYTES = 16 * 1024 * 1024  # a 4M-token prompt at 4 characters a token
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


class ApiError(Exception):
    """An answer other than 200, with the OpenAI error shape (param: the offending field)."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """{"error": ...} as vLLM's OpenAI server writes it: type from the HTTP status
    (BadRequestError, NotFoundError, ...), code the status number."""
    phrase = http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    kind = phrase if phrase.endswith("Error") else phrase + "Error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param)


def _positive_int(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"{key} must be a positive integer, got {value!r}", key)
    return value


# Parameters the emulator cannot honour, with the values that mean "not asked for":
# asking for more is refused rather than silently ignored.
UNSUPPORTED: dict[str, tuple] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "prompt_logprobs": (None,),
    "echo": (None, False),
    "suffix": (None, ""),
}


def check_supported(body: dict) -> None:
    for key, fine in UNSUPPORTED.items():
        value = body.get(key)
        if not any(value is f or (type(value) is type(f) and value == f) for f in fine):
            raise _bad(
                f"{key}={json.dumps(value)} is not supported by the planlab emulator "
                f"(it accepts {' or '.join(json.dumps(f) for f in fine)})",
                key,
            )
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise _bad(
            'response_format other than {"type": "text"} is not supported by the planlab '
            "emulator (its output is placeholder tokens)",
            "response_format",
        )
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, dict):
        raise _bad(
            "the planlab emulator never calls tools: tool_choice must be auto or none",
            "tool_choice",
        )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad(f"stream must be true or false, got {body['stream']!r}", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options must be an object", "stream_options")


def _text_of(content) -> str:
    """A message's content as text; content parts joined by newlines (as vLLM does)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type", "text") == "text"
        )
    return ""


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a role", "messages")
        out.append({**msg, "content": _text_of(msg.get("content"))})
    return out


def prompt_tokens(body: dict, chat: bool, counter: PromptCounter | None = None) -> int:
    """Input tokens of a request body (without planlab_isl): by the tokenizer when given,
    else characters / 4 (at least 1); a token-id prompt counts its ids."""
    if chat:
        messages = _messages(body)
        if counter is not None:
            try:
                return max(1, counter.count_chat(messages))
            except TemplateError as exc:
                raise _bad(str(exc), "messages") from None
        return max(1, sum(len(m["content"]) for m in messages) // 4)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch of one
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        return len(prompt)
    if isinstance(prompt, list):
        raise _bad(
            "prompt must be a string, a list of token ids or a list of one string (batched "
            "prompts are not supported by the planlab emulator)",
            "prompt",
        )
    if not isinstance(prompt, str):
        raise _bad("prompt must be a string or a list", "prompt")
    if counter is not None:
        return max(1, counter.count_text(prompt))
    return max(1, len(prompt) // 4)


def parse_lengths(body: dict, chat: bool, counter: PromptCounter | None = None) -> tuple[int, int]:
    """(isl, osl) of a request body; ApiError(400) naming a bad field."""
    isl = _positive_int(body, "planlab_isl")
    if isl is None:
        isl = prompt_tokens(body, chat, counter)
    elif chat:
        _messages(body)
    osl = _positive_int(body, "planlab_osl")
    if osl is None:
        osl = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    return isl, osl or DEFAULT_MAX_TOKENS


def usage(isl: int, completion_tokens: int) -> dict:
    """OpenAI's usage object. No prefix cache is emulated, so no prompt token is ever
    served from one: cached_tokens is 0."""
    return {
        "prompt_tokens": isl,
        "completion_tokens": completion_tokens,
        "total_tokens": isl + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every 4xx/5xx that aiohttp raises itself (unknown route, wrong method, a body
    over the size limit) in the same JSON shape as the handlers' own errors."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(
            error_body(exc.status, _http_message(request, exc)), status=exc.status
        )


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no route {request.method} {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    text = (exc.text or exc.reason or "").strip()
    return text.split(": ", 1)[1] if text.startswith(f"{exc.status}: ") else text


class Frontend:
    """aiohttp application serving the OpenAI routes over an EmulatedCluster.

    model: the served model id (requests naming another get 404; a request without one
    gets this). tokenizer: a PromptCounter to count input tokens with, else characters / 4.
    """

    def __init__(
        self,
        cluster: EmulatedCluster,
        model: str = DEFAULT_MODEL,
        *,
        tokenizer: PromptCounter | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        self.cluster = cluster
        self.model = model
        self.tokenizer = tokenizer
        self.metrics = FrontendMetrics(model, cluster)
        self.app = web.Application(middlewares=[json_errors], client_max_size=max_body_bytes)
        self.app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
                web.get("/v1/models", self.models),
                web.get("/v1/models/{model_id:.+}", self.model_info),
                web.get("/health", self.health),
                web.get("/metrics", self.metrics_page),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        # handler_cancellation: a client that goes away cancels its handler, so the
        # request's work is cancelled too (aiohttp >= 3.9 leaves handlers running by
        # default). The cluster fails held requests before the frontend stops, so the
        # shutdown wait is only a backstop.
        self._runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- simple routes -----------------------------------------------------------------

    def _model_card(self) -> dict:
        return {"id": self.model, "object": "model", "created": 0, "owned_by": "planlab"}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def model_info(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id != self.model:
            return self._not_found(model_id)
        return web.json_response(self._model_card())

    def _not_found(self, model_id: str) -> web.Response:
        return web.json_response(
            error_body(
                404,
                f"the model {model_id!r} does not exist; this server serves {self.model!r}",
                "model",
            ),
            status=404,
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

    def _error(self, exc: ApiError, request_type: str) -> web.Response:
        self.metrics.count(request_type, "error")
        return web.json_response(error_body(exc.status, str(exc), exc.param), status=exc.status)

    async def _body(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except web.HTTPException as exc:  # 413: over client_max_size
            raise ApiError(exc.status, _http_message(request, exc)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _bad(f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise _bad("invalid JSON body: the body must be a JSON object")
        return body

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        start = time.monotonic()  # the request is here: TTFT and duration count from now
        request_type = "unary"
        try:
            body = await self._body(request)
            request_type = "stream" if body.get("stream") is True else "unary"
            model = body.get("model") or self.model
            if model != self.model:
                self.metrics.count(request_type, "error")
                return self._not_found(model)
            check_supported(body)
            isl, osl = parse_lengths(body, chat, self.tokenizer)
            job = await self.cluster.submit(isl, osl)
        except ApiError as exc:
            return self._error(exc, request_type)
        except RequestTooLong as exc:
            return self._error(_bad(str(exc), "max_tokens"), request_type)
        except ClusterStopped as exc:
            return self._error(ApiError(503, str(exc)), request_type)
        except asyncio.CancelledError:
            log.debug("client went away while its request waited for a worker")
            self.metrics.count(request_type, "cancelled")
            raise
        # Admitted: what Dynamo 1.6's requests_started_total counts (and plans on).
        self.metrics.started.labels(model=self.metrics.model, request_type=request_type).inc()
        self.metrics.isl.observe(isl)
        status = "error"
        try:
            if request_type == "stream":
                resp, status = await self._stream(request, job, model, chat, body, start)
            else:
                resp = await self._unary(job, model, chat, start)
                status = "success" if resp.status == 200 else "error"
            return resp
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            # The client went away: one line, no traceback; finished() cancels the work.
            status = "cancelled"
            log.debug(
                "client went away: request %d after %d of %d tokens", job.id, job.generated, job.osl
            )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return web.Response(status=499)  # never reaches the client; ends the handler
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
        metrics.duration.observe(time.monotonic() - start)

    async def _stream(
        self, request, job, model: str, chat: bool, body: dict, start: float
    ) -> tuple[web.StreamResponse, str]:
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        # As vLLM: cumulative usage on every chunk only together with include_usage.
        continuous = include_usage and bool(options.get("continuous_usage_stats"))
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
                + '},"logprobs":null,"finish_reason":null}]'
            )
            body_tok = (
                head
                + '"delta":{"content":'
                + json.dumps(TOKEN_TEXT)
                + '},"logprobs":null,"finish_reason":null}]'
            )
            last = head + '"delta":{},"logprobs":null,"finish_reason":"length"}]'
        else:
            first = body_tok = (
                head
                + '"text":'
                + json.dumps(TOKEN_TEXT)
                + ',"logprobs":null,"finish_reason":null}]'
            )
            last = head + '"text":"","logprobs":null,"finish_reason":"length"}]'
        times: list[float] = []
        tokens = job.tokens
        if continuous:
            while (t := await tokens.get()) is not END:
                times.append(t)
                chunk = first if len(times) == 1 else body_tok
                u = json.dumps(usage(job.isl, len(times)))
                await resp.write(f'{chunk},"usage":{u}}}\n\n'.encode())
        else:
            first_b = (first + "}\n\n").encode()
            body_b = (body_tok + "}\n\n").encode()
            while (t := await tokens.get()) is not END:
                times.append(t)
                await resp.write(first_b if len(times) == 1 else body_b)
        self._observe(start, times)
        if job.error is not None:
            err = error_body(500, job.error)
            await resp.write(f"event: error\ndata: {json.dumps(err)}\n\n".encode())
            await resp.write_eof()
            return resp, "error"
        tail = last + (f',"usage":{json.dumps(usage(job.isl, len(times)))}' if continuous else "")
        tail += "}\n\n"
        if include_usage:
            tail += f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{json.dumps(model)},"choices":[],"usage":{json.dumps(usage(job.isl, len(times)))}}}\n\n'
        await resp.write((tail + "data: [DONE]\n\n").encode())
        await resp.write_eof()
        return resp, "success"

    async def _unary(self, job, model: str, chat: bool, start: float) -> web.Response:
        times: list[float] = []
        while (t := await job.tokens.get()) is not END:
            times.append(t)
        self._observe(start, times)
        if job.error is not None:
            return web.json_response(error_body(500, job.error), status=500)
        text = TOKEN_TEXT * len(times)
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
            "usage": usage(job.isl, len(times)),
        }
        return web.json_response(payload, headers=self._headers(job))
