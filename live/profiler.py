"""Profile an OpenAI-compatible endpoint the way Dynamo's pre-deployment profiler does:
prefill TTFT over a sweep of prompt lengths (one request at a time), decode ITL over
concurrency x context, the KV capacity from the server when it says. The result is a
PerfProfile plus every repeated sample with its spread.

Prompts are unique random words, so no prefix cache can help; their token count is read
back from the server's `usage` (a first probe calibrates words per token). Requests go to
`/v1/completions` (no chat template in the count) with `ignore_eos` and `min_tokens` so a
decode run produces exactly the tokens asked for; a server that refuses those fields is
asked again without them.

Method as in Dynamo's profiler (docs/architecture/pre_deployment_profiling.md of
ai-dynamo): prefill thpt per GPU = ISL / TTFT / GPUs; a decode point is the ITL at
`concurrency` sequences of mean context `ISL + OSL/2`, at KV usage concurrency x context /
max_kv_tokens, with throughput concurrency / ITL / GPUs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from planner.errors import ConfigError
from planner.profile import PerfProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeasureSpec:
    """What to measure. Each point is repeated `repeats` times; the whole measurement stops
    at `budget_s` (points not reached are left out and reported)."""

    isls: tuple[int, ...] = (128, 512, 1024, 2048, 4096, 8192)
    contexts: tuple[int, ...] = (512, 2048, 8192)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    repeats: int = 3
    budget_s: float = 600.0
    gpus: int = 1
    max_kv_tokens: int | None = None
    min_decode_tokens: int = 32
    max_decode_tokens: int = 2048
    request_timeout_s: float = 300.0


@dataclass
class Point:
    """One measured point: where (the key), its samples, and their median and spread."""

    kind: str  # prefill | decode
    key: dict
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    def as_dict(self) -> dict:
        s = np.asarray(self.samples, dtype=float)
        return {
            "kind": self.kind,
            **self.key,
            "samples_ms": [round(float(x), 4) for x in s],
            "median_ms": round(float(np.median(s)), 4),
            "min_ms": round(float(s.min()), 4),
            "max_ms": round(float(s.max()), 4),
            "spread": round(float((s.max() - s.min()) / np.median(s)), 4) if s.size > 1 else 0.0,
        }


@dataclass
class Measurement:
    profile: PerfProfile
    points: list[Point]
    skipped: list[str]
    max_kv_tokens_source: str
    tokens_per_word: float
    wall_s: float

    def as_dict(self) -> dict:
        return {
            "points": [p.as_dict() for p in self.points],
            "skipped": self.skipped,
            "max_kv_tokens": self.profile.max_kv_tokens,
            "max_kv_tokens_source": self.max_kv_tokens_source,
            "tokens_per_word": self.tokens_per_word,
            "wall_s": round(self.wall_s, 2),
        }


class _Client:
    """Streams completions and times them; one aiohttp session for the whole run."""

    def __init__(self, base_url: str, model: str, timeout_s: float, seed: int = 0):
        self.url = base_url.rstrip("/") + "/v1/completions"
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.rng = np.random.default_rng(seed)
        self.extras = {"ignore_eos": True}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> _Client:
        self.session = aiohttp.ClientSession(timeout=self.timeout, trust_env=False)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    def prompt(self, words: int) -> str:
        """`words` random lowercase words of 3 letters: unique per request, no shared prefix."""
        letters = self.rng.integers(0, 26, size=(max(1, words), 3))
        chars = (letters + ord("a")).astype(np.uint8).tobytes().decode()
        return " ".join(chars[i : i + 3] for i in range(0, len(chars), 3))

    async def one(self, words: int, max_tokens: int) -> dict:
        """Send one streamed request; returns ttft_s, gaps_s, prompt and output tokens."""
        body = {
            "model": self.model,
            "prompt": self.prompt(words),
            "max_tokens": int(max_tokens),
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extras,
        }
        if "ignore_eos" in self.extras:
            body["min_tokens"] = int(max_tokens)
        t0 = time.perf_counter()
        first = None
        stamps: list[float] = []
        usage: dict = {}
        async with self.session.post(self.url, json=body) as resp:
            if resp.status == 400 and self.extras:
                text = await resp.text()
                if re.search(r"ignore_eos|min_tokens", text):
                    log.info("the server refuses ignore_eos/min_tokens; measuring without them")
                    self.extras = {}
                    return await self.one(words, max_tokens)
            if resp.status != 200:
                text = (await resp.text())[:300]
                raise ConfigError(f"HTTP {resp.status} from {self.url}: {text}", key="--endpoint")
            async for raw in resp.content:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if choice.get("text"):
                        now = time.perf_counter()
                        first = first if first is not None else now
                        stamps.append(now)
        if first is None:
            raise ConfigError(f"no token came back from {self.url}", key="--endpoint")
        return {
            "ttft_s": first - t0,
            "start_s": t0,
            "stamps": np.asarray(stamps),
            "prompt_tokens": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens", len(stamps)),
        }


async def _kv_tokens_from_metrics(base_url: str, metrics_url: str | None) -> int | None:
    """max_kv_tokens from the server's /metrics when it exports it: vLLM's
    `vllm:cache_config_info{block_size, num_gpu_blocks}` (vllm/v1/metrics/loggers.py)."""
    url = metrics_url or base_url.rstrip("/") + "/metrics"
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), trust_env=False
        ) as s:
            async with s.get(url) as resp:
                if resp.status != 200:
                    return None
                text = await resp.text()
    except (TimeoutError, aiohttp.ClientError):
        return None
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            try:
                return int(labels["num_gpu_blocks"]) * int(labels["block_size"])
            except (KeyError, ValueError):
                return None
    return None


async def measure(
    base_url: str,
    model: str,
    spec: MeasureSpec = MeasureSpec(),
    *,
    metrics_url: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    name: str = "measured",
) -> Measurement:
    """Measure the endpoint; ConfigError when it cannot be profiled (no tokens back, too
    few points within the budget, no KV capacity known)."""
    t_start = time.perf_counter()
    deadline = t_start + spec.budget_s
    total = len(spec.isls) + len(spec.contexts) * len(spec.concurrencies)
    done = 0
    skipped: list[str] = []

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, what)

    max_kv = spec.max_kv_tokens
    kv_source = "--max-kv-tokens"
    if max_kv is None:
        max_kv = await _kv_tokens_from_metrics(base_url, metrics_url)
        kv_source = "server /metrics (vllm:cache_config_info)"
    if max_kv is None:
        raise ConfigError(
            "the server does not say its KV capacity (no vllm:cache_config_info on /metrics); "
            "expected --max-kv-tokens N",
            key="--max-kv-tokens",
        )

    points: list[Point] = []
    async with _Client(base_url, model, spec.request_timeout_s) as client:
        probe = await client.one(256, 1)
        per_word = (probe["prompt_tokens"] or 256) / 256.0

        def words_for(tokens: int) -> int:
            return max(1, int(round(tokens / per_word)))

        # Prefill: single requests, one at a time; TTFT at the client.
        prefill: list[tuple[float, float]] = []
        for isl in spec.isls:
            if time.perf_counter() > deadline:
                skipped.append(f"prefill isl={isl}")
                tick(f"prefill isl={isl} skipped")
                continue
            pt = Point("prefill", {"isl": int(isl)})
            real = []
            for _ in range(spec.repeats):
                r = await client.one(words_for(isl), 1)
                pt.samples.append(r["ttft_s"] * 1000.0)
                real.append(r["prompt_tokens"] or isl)
            pt.key["isl"] = int(np.median(real))
            points.append(pt)
            prefill.append((pt.key["isl"], pt.median))
            tick(f"prefill isl={pt.key['isl']} ttft {pt.median:.1f} ms")
        if len(prefill) < 2:
            raise ConfigError(
                f"only {len(prefill)} prefill point(s) within --budget-s {spec.budget_s:g}; "
                "expected at least 2: raise the budget or measure fewer points",
                key="--budget-s",
            )
        xs = np.array([p[0] for p in prefill], dtype=float)
        ys = np.array([p[1] for p in prefill], dtype=float)

        # Decode: `b` requests at once of context `c`; ITL from the gaps while all b decode.
        decode: list[tuple[float, float, float, float]] = []
        itl_guess_ms = 20.0
        for ctx in spec.contexts:
            # One output length per context (Dynamo's profiler fixes ISL and OSL per
            # context, so every concurrency shares the context ISL + OSL/2), long enough
            # that the largest batch is complete for a while: its last request starts about
            # `b` prefills after its first.
            ttft_ms = float(np.interp(ctx, xs, ys))
            b_max = max(spec.concurrencies)
            tokens = int(
                np.clip(
                    math.ceil(2.0 * b_max * ttft_ms / max(itl_guess_ms, 0.1))
                    + spec.min_decode_tokens,
                    spec.min_decode_tokens,
                    spec.max_decode_tokens,
                )
            )
            for b in spec.concurrencies:
                label = f"decode context={ctx} concurrency={b}"
                if b * (ctx + tokens) > max_kv:
                    skipped.append(f"{label} (beyond the KV capacity)")
                    tick(f"{label} skipped")
                    continue
                if time.perf_counter() > deadline:
                    skipped.append(f"{label} (budget)")
                    tick(f"{label} skipped")
                    continue
                pt = Point("decode", {"context": int(ctx), "concurrency": int(b), "osl": tokens})
                for _ in range(spec.repeats):
                    runs = await asyncio.gather(
                        *(client.one(words_for(ctx), tokens) for _ in range(b))
                    )
                    itl = _steady_itl_ms(runs)
                    if itl is not None:
                        pt.samples.append(itl)
                if not pt.samples:
                    skipped.append(f"{label} (no steady window)")
                    tick(f"{label} skipped")
                    continue
                points.append(pt)
                itl_ms = pt.median
                if b == spec.concurrencies[0]:
                    itl_guess_ms = itl_ms
                context = ctx + tokens / 2.0
                decode.append((b * context / max_kv, context, itl_ms, b * 1000.0 / itl_ms))
                tick(f"{label} itl {itl_ms:.2f} ms")
    # A profile needs two KV usages per context to interpolate; a lone one is left out.
    per_ctx: dict[float, int] = {}
    for row in decode:
        per_ctx[row[1]] = per_ctx.get(row[1], 0) + 1
    for ctx, n in per_ctx.items():
        if n < 2:
            skipped.append(f"decode context={ctx:g} (only one concurrency measured)")
    decode = [row for row in decode if per_ctx[row[1]] >= 2]
    if len(decode) < 2:
        raise ConfigError(
            f"only {len(decode)} decode point(s) measured; expected at least 2: raise "
            "--budget-s or pick contexts and concurrencies that fit the KV capacity",
            key="--budget-s",
        )
    d = np.array(decode, dtype=float)
    profile = PerfProfile(
        prefill_isl=xs,
        prefill_ttft_ms=ys,
        prefill_thpt_per_gpu=xs / ys * 1000.0 / spec.gpus,
        decode_kv_usage=np.clip(d[:, 0], 0.0, 1.0),
        decode_context=d[:, 1],
        decode_itl_ms=d[:, 2],
        decode_thpt_per_gpu=d[:, 3] / spec.gpus,
        max_kv_tokens=int(max_kv),
        name=name,
        source=f"planlab profile measure {base_url}",
    )
    return Measurement(profile, points, skipped, kv_source, per_word, time.perf_counter() - t_start)


def _steady_itl_ms(runs: Sequence[dict]) -> float | None:
    """Mean gap between tokens over the window in which every request of the batch was
    decoding (after the last first token, before the first last token); None if empty."""
    start = max(r["stamps"][0] for r in runs if len(r["stamps"]))
    end = min(r["stamps"][-1] for r in runs if len(r["stamps"]))
    gaps: list[np.ndarray] = []
    for r in runs:
        s = r["stamps"]
        inside = s[(s >= start) & (s <= end)]
        if len(inside) >= 2:
            gaps.append(np.diff(inside))
    if not gaps:
        return None
    all_gaps = np.concatenate(gaps)
    return float(all_gaps.mean() * 1000.0) if len(all_gaps) >= 3 else None
