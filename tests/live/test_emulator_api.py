"""The emulator under abuse and at the OpenAI API's edges, over real HTTP on loopback:
requests that could never be scheduled, clients that go away, oversized bodies, unknown
models and routes, unsupported parameters, usage accounting and tokenizer counting."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tokenizer_kit import word_tokenizer

from live.emulator import EmulatorThread, start_emulated_cluster
from live.emulator.cluster import EmulatedCluster
from live.emulator.frontend import Frontend
from live.emulator.workers import FixedTiming
from planner import metrics as m

pytestmark = pytest.mark.timeout(60)

FAST = FixedTiming(prefill_s_per_token=1e-6, decode_step_fixed_s=0.002)
SLOW = FixedTiming(decode_step_fixed_s=0.005)  # 1000 tokens take 5 s: long enough to leave


def requests_total(text: str, status: str) -> float:
    """Requests of that status, over both request types."""
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == m.REQUESTS_TOTAL and s.labels["status"] == status
    )


def assert_error_shape(payload: dict, status: int, kind: str, param=None) -> str:
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["code"], err["param"]) == (kind, status, param)
    assert isinstance(err["message"], str) and err["message"]
    return err["message"]


async def wait_for(predicate, what: str, limit_s: float = 10.0) -> None:
    for _ in range(int(limit_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not {what} after {limit_s} s")


# -- requests that could never be scheduled --------------------------------------------


def test_request_beyond_kv_capacity_is_refused_and_the_server_keeps_serving():
    async def main():
        async with (
            start_emulated_cluster(FAST, max_kv_tokens=1000) as h,
            aiohttp.ClientSession() as s,
        ):
            url = h.frontend_url + "/v1/completions"
            big = {"prompt": "p", "planlab_isl": 990, "max_tokens": 20, "stream": True}
            async with s.post(url, json=big) as resp:
                refused = (resp.status, await resp.json())
            # 4004 characters are 1001 tokens by the emulator's estimate: beyond alone
            chat = {"messages": [{"role": "user", "content": "x" * 4004}], "max_tokens": 1}
            async with s.post(h.frontend_url + "/v1/chat/completions", json=chat) as resp:
                refused_chat = resp.status
            # exactly at capacity is fine, and so is everything after
            fits = {"prompt": "p", "planlab_isl": 980, "max_tokens": 20}
            async with s.post(url, json=fits) as resp:
                fit = (resp.status, (await resp.json())["usage"]["completion_tokens"])
            async with s.post(url, json={"prompt": "p", "max_tokens": 3}) as resp:
                after = (resp.status, (await resp.json())["usage"]["completion_tokens"])
            async with s.get(h.frontend_url + "/health") as resp:
                health = (await resp.json())["status"]
            async with s.get(h.metrics_url) as resp:
                metrics = await resp.text()
            decode = h.cluster.workers["decode"][0]
            return refused, refused_chat, fit, after, health, metrics, h.cluster, decode

    refused, refused_chat, fit, after, health, metrics, cluster, decode = asyncio.run(main())
    assert refused[0] == 400
    message = assert_error_shape(refused[1], 400, "BadRequestError", "max_tokens")
    assert "1010" in message and "1000" in message  # what it needs, what a worker holds
    assert refused_chat == 400
    assert fit == (200, 20)
    assert after == (200, 3)
    assert health == "healthy"
    assert requests_total(metrics, "error") == 2
    assert requests_total(metrics, "success") == 2
    assert cluster.inflight == 0 and not decode.waiting and not decode.running


def test_the_simulator_profile_capacity_is_the_limit():
    from planner.analytic import analytic_profile

    profile = analytic_profile("llama-3.1-8b", "h200")

    async def main():
        async with start_emulated_cluster(profile) as h, aiohttp.ClientSession() as s:
            body = {"prompt": "p", "planlab_isl": int(profile.max_kv_tokens), "max_tokens": 1}
            async with s.post(h.frontend_url + "/v1/completions", json=body) as resp:
                return resp.status, await resp.json()

    status, payload = asyncio.run(main())
    assert status == 400
    assert f"{int(profile.max_kv_tokens):d}" in payload["error"]["message"]


def test_shutdown_ends_held_requests_at_once():
    """A stream in flight and a request waiting for a worker when the emulator stops:
    the stream gets the workers' error event and the waiting one a 503 (the handlers
    finish on their own, not by the frontend's shutdown timeout)."""

    async def main():
        async with aiohttp.ClientSession() as s:
            async with start_emulated_cluster(SLOW, startup_s={"prefill": 60.0}) as h:
                url = h.frontend_url + "/v1/completions"
                body = {"prompt": "p", "max_tokens": 1000, "stream": True}
                resp = await s.post(url, json=body)
                await resp.content.readline()  # the first token is here
                h.connector.scale(0, 1)  # the only prefill worker drains (idle: stops)
                await wait_for(lambda: not h.cluster.ready_workers("prefill"), "drained")
                h.connector.scale(1, 1)  # a new one, ready only in 60 s
                waiting = asyncio.create_task(s.post(url, json={"prompt": "p"}))
                await wait_for(lambda: h.cluster.waiting_for_workers == 1, "waiting")
            text = (await resp.read()).decode()
            late = await waiting
            return text, late.status, await late.json()

    text, status, payload = asyncio.run(main())
    assert "event: error" in text and "worker stopped" in text
    assert status == 503
    assert "shutting down" in assert_error_shape(payload, 503, "ServiceUnavailableError")


# -- clients that go away ------------------------------------------------------------------


def _quiet_disconnect_records(caplog) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
    gone = [r for r in caplog.records if "client went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.DEBUG


def test_client_leaving_mid_stream_cancels_its_work_in_one_debug_line(caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        async with start_emulated_cluster(SLOW) as h:
            async with aiohttp.ClientSession() as s:
                body = {"prompt": "p", "max_tokens": 1000, "stream": True}
                resp = await s.post(h.frontend_url + "/v1/completions", json=body)
                for _ in range(3):
                    await resp.content.readline()
                resp.close()  # drops the connection
            decode = h.cluster.workers["decode"][0]
            await wait_for(lambda: h.cluster.inflight == 0, "cancelled")
            await wait_for(lambda: not decode.running, "out of the batch")
            async with aiohttp.ClientSession() as s, s.get(h.metrics_url) as r:
                metrics = await r.text()
            return metrics, decode

    metrics, decode = asyncio.run(main())
    assert requests_total(metrics, "cancelled") == 1
    assert decode._reserved == 0  # its KV reservation was given back
    out = next(
        s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == m.OUTPUT_TOKENS_TOTAL
    )
    assert out < 1000  # it stopped making tokens: far from the 1000 asked
    _quiet_disconnect_records(caplog)


def test_client_leaving_a_unary_request_cancels_its_work(caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        async with start_emulated_cluster(SLOW) as h:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
                with pytest.raises(asyncio.TimeoutError):
                    body = {"prompt": "p", "max_tokens": 1000}
                    async with s.post(h.frontend_url + "/v1/completions", json=body) as r:
                        await r.read()
            decode = h.cluster.workers["decode"][0]
            await wait_for(lambda: h.cluster.inflight == 0, "cancelled")
            await wait_for(lambda: not decode.running, "out of the batch")
            async with aiohttp.ClientSession() as s, s.get(h.metrics_url) as r:
                metrics = await r.text()
            return metrics, decode

    metrics, decode = asyncio.run(main())
    assert requests_total(metrics, "cancelled") == 1
    assert decode._reserved == 0
    _quiet_disconnect_records(caplog)


# -- the error shape of every 4xx ----------------------------------------------------------


def test_every_4xx_has_the_json_error_shape():
    async def main():
        cluster = EmulatedCluster(FAST)
        await cluster.start()
        frontend = Frontend(cluster, model="m", max_body_bytes=2000)
        url = await frontend.start()
        out = {}
        try:
            async with aiohttp.ClientSession() as s:
                body = {"prompt": "x" * 5000, "max_tokens": 1}
                async with s.post(url + "/v1/completions", json=body) as r:
                    out["413"] = (r.status, await r.json())
                async with s.post(url + "/v1/completions", data=b"{not json") as r:
                    out["400"] = (r.status, await r.json())
                async with s.get(url + "/v1/nothing") as r:
                    out["404"] = (r.status, await r.json())
                async with s.get(url + "/v1/completions") as r:
                    out["405"] = (r.status, await r.json())
                async with s.get(url + "/metrics") as r:
                    metrics = await r.text()
        finally:
            await cluster.stop()
            await frontend.stop()
        return out, metrics

    out, metrics = asyncio.run(main())
    assert out["413"][0] == 413
    message = assert_error_shape(out["413"][1], 413, "RequestEntityTooLargeError")
    assert "2000" in message  # the limit
    assert out["400"][0] == 400
    assert "invalid JSON" in assert_error_shape(out["400"][1], 400, "BadRequestError")
    assert out["404"][0] == 404
    assert "/v1/nothing" in assert_error_shape(out["404"][1], 404, "NotFoundError")
    assert out["405"][0] == 405
    assert_error_shape(out["405"][1], 405, "MethodNotAllowedError")
    assert requests_total(metrics, "error") == 2  # the two completion requests


# -- models, parameters, usage -------------------------------------------------------------


def test_served_model_id_and_unknown_models():
    openai = pytest.importorskip("openai")
    with EmulatorThread(FAST, model="org/emu-8b") as h:
        client = openai.OpenAI(base_url=h.frontend_url + "/v1", api_key="unused")
        assert client.models.retrieve("org/emu-8b").id == "org/emu-8b"
        with pytest.raises(openai.NotFoundError) as missing:
            client.models.retrieve("other")
        with pytest.raises(openai.NotFoundError) as wrong:
            client.chat.completions.create(
                model="other", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        ok = client.completions.create(model="org/emu-8b", prompt="hi", max_tokens=2)
    assert missing.value.body["param"] == "model"
    assert "'other'" in wrong.value.body["message"] and "org/emu-8b" in wrong.value.body["message"]
    assert ok.model == "org/emu-8b" and ok.usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 3}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_unsupported_chat_parameters_are_refused_by_name(params, name):
    openai = pytest.importorskip("openai")
    with EmulatorThread(FAST, model="m") as h:
        client = openai.OpenAI(base_url=h.frontend_url + "/v1", api_key="unused")
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **params
            )
        # the values that ask for nothing are accepted
        fine = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            n=1,
            logprobs=False,
            temperature=0.7,
            seed=3,
        )
    assert exc.value.body["param"] == name
    assert name in exc.value.body["message"]
    assert len(fine.choices) == 1


def test_unsupported_completion_parameters_are_refused_by_name():
    async def main():
        async with start_emulated_cluster(FAST) as h, aiohttp.ClientSession() as s:
            out = {}
            for params in ({"echo": True}, {"best_of": 3}, {"logprobs": 0}, {"suffix": "!"}):
                body = {"prompt": "p", "max_tokens": 1, **params}
                async with s.post(h.frontend_url + "/v1/completions", json=body) as r:
                    out[next(iter(params))] = (r.status, (await r.json())["error"]["param"])
            return out

    out = asyncio.run(main())
    assert out == {k: (400, k) for k in ("echo", "best_of", "logprobs", "suffix")}


def test_usage_cached_tokens_and_continuous_usage_stats():
    openai = pytest.importorskip("openai")
    with EmulatorThread(FAST, model="m") as h:
        client = openai.OpenAI(base_url=h.frontend_url + "/v1", api_key="unused")
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "x" * 40}],
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True, "continuous_usage_stats": True},
            )
        )
        plain = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "x" * 40}],
                max_tokens=5,
                stream=True,
                extra_body={"stream_options": {"continuous_usage_stats": True}},
            )
        )
        unary = client.completions.create(model="m", prompt="y" * 80, max_tokens=3)
    with_choices = [c for c in chunks if c.choices]
    # one usage per token chunk, cumulative, then the finish chunk and the usage-only one
    assert [c.usage.completion_tokens for c in with_choices] == [1, 2, 3, 4, 5, 5]
    assert {c.usage.prompt_tokens for c in chunks} == {10}
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 15
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 0
    # continuous_usage_stats without include_usage: no usage anywhere (as vLLM)
    assert all(c.usage is None for c in plain)
    assert unary.usage.prompt_tokens == 20
    assert unary.usage.prompt_tokens_details.cached_tokens == 0


# -- counting with a tokenizer -------------------------------------------------------------


def test_tokenizer_counts_the_chat_template(tmp_path):
    pytest.importorskip("tokenizers", reason="needs the tokenizer extra")
    pytest.importorskip("jinja2", reason="needs the tokenizer extra")
    directory = word_tokenizer(tmp_path / "tok")

    async def main():
        async with (
            start_emulated_cluster(FAST, model="m", tokenizer=directory) as h,
            aiohttp.ClientSession() as s,
        ):
            out = []
            chat = {
                "messages": [
                    {"role": "system", "content": "the dog"},
                    {"role": "user", "content": [{"type": "text", "text": "hello world hello"}]},
                ],
                "max_tokens": 2,
            }
            async with s.post(h.frontend_url + "/v1/chat/completions", json=chat) as r:
                out.append((await r.json())["usage"]["prompt_tokens"])
            body = {"prompt": "hello zebra, fox.", "max_tokens": 2}
            async with s.post(h.frontend_url + "/v1/completions", json=body) as r:
                out.append((await r.json())["usage"]["prompt_tokens"])
            body = {"prompt": [5, 6, 7, 8], "max_tokens": 2}
            async with s.post(h.frontend_url + "/v1/completions", json=body) as r:
                out.append((await r.json())["usage"]["prompt_tokens"])
            return out

    chat, text, ids = asyncio.run(main())
    # <s> <|system|> the dog </s> <|user|> hello world hello </s> <|assistant|>
    assert chat == 11
    # <s> hello [UNK] , fox .   (a completion prompt gets the BOS of the post-processor)
    assert text == 6
    assert ids == 4


def test_tokenizer_directory_errors(tmp_path):
    from live.emulator.tokens import PromptCounter
    from planner.errors import ConfigError

    pytest.importorskip("tokenizers", reason="needs the tokenizer extra")
    pytest.importorskip("jinja2", reason="needs the tokenizer extra")
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        PromptCounter(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not a tokenizer"):
        PromptCounter(tmp_path)


def test_emulate_command_serves_the_model_id_and_counts_with_the_tokenizer(tmp_path):
    """`planlab emulate --model ID --tokenizer DIR` as a user starts it: the id is served,
    prompts are counted with the tokenizer, SIGTERM stops it with exit 0."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    pytest.importorskip("tokenizers", reason="needs the tokenizer extra")
    pytest.importorskip("jinja2", reason="needs the tokenizer extra")
    directory = word_tokenizer(tmp_path / "tok")
    cmd = [sys.executable, "-m", "planlab", "emulate", "--port", "0", "--no-prometheus"]
    cmd += ["--model", "acme/tiny", "--tokenizer", str(directory)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "acme/tiny" in first and "tokenizer" in first, first + proc.stderr.read()
        base = first.split()[1]  # http://127.0.0.1:PORT/v1
        with urllib.request.urlopen(f"{base}/models/acme/tiny", timeout=10) as r:
            card = json.loads(r.read())
        body = {"model": "acme/tiny", "messages": [{"role": "user", "content": "the fox"}]}
        req = urllib.request.Request(
            f"{base}/chat/completions",
            data=json.dumps({**body, "max_tokens": 2}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            usage = json.loads(r.read())["usage"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert card["id"] == "acme/tiny"
    assert usage["prompt_tokens"] == 6  # <s> <|user|> the fox </s> <|assistant|>
    assert rc == 0
