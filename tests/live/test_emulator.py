"""The emulated cluster: OpenAI compatibility (official client), /metrics names, buckets and
values, the local connector's startup delay and drain, and a real Prometheus scraping it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live.emulator import EmulatorThread, start_emulated_cluster
from live.emulator.cluster import EmulatedCluster
from live.emulator.prometheus_server import PrometheusServer, find_prometheus, render_config
from live.emulator.workers import MAX_LEAD_S, MIN_STEP_FRACTION, FixedTiming
from planner import metrics as m
from planner.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

FAST = FixedTiming(prefill_s_per_token=1e-6, decode_step_fixed_s=0.002)


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict, family: str, name: str, **labels) -> float:
    for s in fams[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name} {labels}")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_openai_client_streams_chat_and_completion():
    openai = pytest.importorskip("openai")
    with EmulatorThread(FAST, model="emu-model") as h:
        client = openai.OpenAI(base_url=h.frontend_url + "/v1", api_key="unused")
        stream = client.chat.completions.create(
            model="emu-model",
            messages=[{"role": "user", "content": "x" * 400}],
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.split() == ["tok"] * 7
        assert chunks[-1].usage.completion_tokens == 7
        assert chunks[-1].usage.prompt_tokens == 100  # 400 characters / 4
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

        parts = list(
            client.completions.create(
                model="emu-model", prompt="abcd" * 10, max_tokens=3, stream=True
            )
        )
        assert "".join(p.choices[0].text for p in parts).split() == ["tok"] * 3

        unary = client.chat.completions.create(
            model="emu-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert unary.choices[0].message.content.split() == ["tok"] * 4
        assert unary.usage.completion_tokens == 4
        assert [x.id for x in client.models.list()] == ["emu-model"]

        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="emu-model", prompt="x", max_tokens=-1)


def test_metrics_names_buckets_and_values():
    osls = [3, 5, 8]
    isls = [120, 1000, 4000]

    async def main():
        async with start_emulated_cluster(FAST, model="m1") as h, aiohttp.ClientSession() as s:
            for isl, osl in zip(isls, osls, strict=True):
                body = {
                    "model": "m1",
                    "prompt": "p",
                    "max_tokens": osl,
                    "planlab_isl": isl,
                    "stream": True,
                }
                async with s.post(h.frontend_url + "/v1/completions", json=body) as resp:
                    await resp.read()
            async with s.post(
                h.frontend_url + "/v1/completions", json={"prompt": "p", "max_tokens": 2}
            ) as resp:
                await resp.read()  # unary
            async with s.post(h.frontend_url + "/v1/completions", json={"prompt": 5}) as resp:
                assert resp.status == 400
            async with s.get(h.metrics_url) as resp:
                return await resp.text()

    after = asyncio.run(main())
    fams = families(after)
    for name in m.HISTOGRAMS:
        bounds = [float(s.labels["le"]) for s in fams[name].samples if s.name == name + "_bucket"]
        assert bounds == [*m.BUCKETS[name], float("inf")], name
    for name in (
        *m.GAUGES,
        m.REQUESTS_TOTAL.removesuffix("_total"),
        m.OUTPUT_TOKENS_TOTAL.removesuffix("_total"),
    ):
        assert name in fams
    req = m.REQUESTS_TOTAL
    assert (
        sample(
            fams,
            req.removesuffix("_total"),
            req,
            model="m1",
            request_type="stream",
            status="success",
        )
        == 3
    )
    assert (
        sample(fams, req.removesuffix("_total"), req, request_type="unary", status="success") == 1
    )
    assert sample(fams, req.removesuffix("_total"), req, request_type="unary", status="error") == 1
    out = m.OUTPUT_TOKENS_TOTAL
    assert sample(fams, out.removesuffix("_total"), out, model="m1") == sum(osls) + 2
    assert sample(fams, m.ITL, m.ITL + "_count") == sum(o - 1 for o in osls) + 1
    assert sample(fams, m.TTFT, m.TTFT + "_count") == 4
    assert sample(fams, m.OSL, m.OSL + "_sum") == sum(osls) + 2
    # planlab_isl is taken as given; the unary "p" is 1 char -> at least 1 token
    assert sample(fams, m.ISL, m.ISL + "_sum") == sum(isls) + 1
    # ISL 120 and 1000 fall at or below the 1000-ish bucket, 4000 above it
    le = [b for b in m.BUCKETS[m.ISL] if b >= 1000][0]
    assert sample(fams, m.ISL, m.ISL + "_bucket", le=str(le)) == 3
    assert sample(fams, m.INFLIGHT, m.INFLIGHT) == 0
    assert sample(fams, m.QUEUED, m.QUEUED) == 0


def test_decode_steps_follow_the_timing_model():
    """Two requests in one decode batch share each step: osl steps of 25 ms, not 2*osl."""
    timing = FixedTiming(decode_step_fixed_s=0.025)

    async def main():
        async with start_emulated_cluster(timing, decode=1) as h, aiohttp.ClientSession() as s:

            async def one():
                body = {"prompt": "p", "max_tokens": 8, "stream": True}
                t0 = time.perf_counter()
                async with s.post(h.frontend_url + "/v1/completions", json=body) as resp:
                    await resp.read()
                    return time.perf_counter() - t0, resp.headers["x-planlab-decode-worker"]

            return await asyncio.gather(one(), one())

    (d1, w1), (d2, w2) = asyncio.run(main())
    assert w1 == w2 == "decode-0"
    # 8 steps of >= 25 ms each; batched together, far from the 16 steps of serial service
    assert min(d1, d2) >= 8 * 0.025
    assert max(d1, d2) < 14 * 0.025


def test_engine_timing_profile_drives_the_emulator():
    from planner.analytic import analytic_profile
    from sim.timing import EngineTiming

    timing = EngineTiming(analytic_profile("llama-3.1-8b", "h200"))
    isl, osl = 4000, 6

    async def main():
        async with start_emulated_cluster(timing) as h, aiohttp.ClientSession() as s:
            body = {"prompt": "p", "max_tokens": osl, "planlab_isl": isl, "stream": True}
            async with s.post(h.frontend_url + "/v1/completions", json=body) as resp:
                await resp.read()
            async with s.get(h.metrics_url) as resp:
                return families(await resp.text())

    fams = asyncio.run(main())
    ttft = sample(fams, m.TTFT, m.TTFT + "_sum")
    itl = sample(fams, m.ITL, m.ITL + "_sum") / (osl - 1)
    duration = sample(fams, m.REQUEST_DURATION, m.REQUEST_DURATION + "_sum")
    step = timing.decode_step_s(1, isl + 1, isl + 1)
    floor_ttft = timing.prefill_step_s(isl) + timing.kv_transfer_s(isl) + step
    # Steps follow deadlines (timers set early by at most MAX_LEAD_S for the loop's usual
    # lateness), so the whole schedule is a floor; a late wake is paid back from the next
    # step, which is never cut below MIN_STEP_FRACTION of its length.
    assert ttft >= floor_ttft - 2 * MAX_LEAD_S
    assert duration >= floor_ttft + (osl - 1) * step - 2 * MAX_LEAD_S
    assert itl >= MIN_STEP_FRACTION * step * 0.99


def test_connector_scale_up_after_startup_delay():
    async def main():
        async with start_emulated_cluster(FAST, startup_s={"decode": 0.3}) as h:
            conn = h.connector
            t0 = time.perf_counter()
            assert conn.scale(1, 3) is True
            s = conn.state()
            assert (s.decode.desired, s.decode.ready, s.decode.starting) == (3, 1, 2)
            assert conn.scale(1, 3) is True  # repeating is a no-op
            assert conn.state().decode.starting == 2
            while conn.state().decode.ready < 3:
                await asyncio.sleep(0.02)
            waited = time.perf_counter() - t0
            s = conn.state()
            return waited, s

    waited, s = asyncio.run(main())
    assert waited >= 0.3
    assert (s.decode.desired, s.decode.ready, s.decode.starting) == (3, 3, 0)
    assert len(s.decode.startup_s) == 2 and min(s.decode.startup_s) >= 0.3
    assert s.prefill.desired == s.prefill.ready == 1


def test_connector_scale_down_drains_without_dropping_requests():
    timing = FixedTiming(decode_step_fixed_s=0.01)

    async def main():
        async with (
            start_emulated_cluster(timing, decode=2, router="round_robin") as h,
            aiohttp.ClientSession() as s,
        ):

            async def one(osl):
                body = {
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": osl,
                    "stream": True,
                }
                async with s.post(h.frontend_url + "/v1/chat/completions", json=body) as resp:
                    text = await resp.text()
                    return (
                        resp.headers["x-planlab-decode-worker"],
                        text.count('"content"'),
                        "[DONE]" in text,
                    )

            first = [asyncio.create_task(one(30)) for _ in range(4)]
            await asyncio.sleep(0.08)  # all four are decoding on both workers
            h.connector.scale(1, 1)
            mid = h.connector.state()
            late = await asyncio.gather(*(one(3) for _ in range(3)))
            done = await asyncio.gather(*first)
            for _ in range(50):
                if h.connector.state().decode.draining == 0:
                    break
                await asyncio.sleep(0.02)
            return mid, done, late, h.connector.state(), h.cluster

    mid, done, late, end, cluster = asyncio.run(main())
    assert (mid.decode.desired, mid.decode.ready, mid.decode.draining) == (1, 1, 1)
    assert {w for w, _, _ in done} == {"decode-0", "decode-1"}
    assert all(n == 30 and ok for _, n, ok in done)  # nothing dropped by the drain
    assert len({w for w, _, _ in late}) == 1  # new work only to the survivor
    survivor = late[0][0]
    drained = ({"decode-0", "decode-1"} - {survivor}).pop()
    assert (end.decode.desired, end.decode.ready, end.decode.draining) == (1, 1, 0)
    assert [w.state for w in cluster.workers["decode"] if w.name == drained] == ["stopped"]


def test_requests_wait_for_a_ready_worker_and_count_as_queued():
    async def main():
        async with (
            start_emulated_cluster(FAST, prefill=0, startup_s={"prefill": 0.3}) as h,
            aiohttp.ClientSession() as s,
        ):
            h.connector.scale(1, 1)
            body = {"prompt": "p", "max_tokens": 2}
            task = asyncio.create_task(s.post(h.frontend_url + "/v1/completions", json=body))
            await asyncio.sleep(0.1)
            async with s.get(h.metrics_url) as resp:
                fams = families(await resp.text())
            resp = await task
            payload = await resp.json()
            return fams, payload

    fams, payload = asyncio.run(main())
    assert sample(fams, m.QUEUED, m.QUEUED) == 1
    assert sample(fams, m.INFLIGHT, m.INFLIGHT) == 1
    assert payload["usage"]["completion_tokens"] == 2


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="router"):
        EmulatedCluster(FAST, router="random")
    with pytest.raises(ConfigError, match="speedup"):
        EmulatedCluster(FAST, speedup=0)


def test_prometheus_config_and_missing_binary(monkeypatch, tmp_path):
    text = render_config(["127.0.0.1:1234"], 0.5)
    assert "scrape_interval: 500ms" in text and '"127.0.0.1:1234"' in text
    monkeypatch.setenv("PROMETHEUS_BIN", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="PROMETHEUS_BIN"):
        find_prometheus()
    monkeypatch.delenv("PROMETHEUS_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="not found"):
        PrometheusServer(["127.0.0.1:1"]).start()


@pytest.mark.live
@pytest.mark.timeout(40)
def test_real_prometheus_scrapes_the_emulator():
    try:
        find_prometheus()
    except ConfigError as exc:
        pytest.skip(str(exc))
    n = 5
    with EmulatorThread(FAST, prometheus=True, scrape_interval_s=1.0, model="scraped") as h:
        for _ in range(n):
            body = json.dumps({"prompt": "p", "max_tokens": 3}).encode()
            req = urllib.request.Request(
                h.frontend_url + "/v1/completions", data=body, method="POST"
            )
            urllib.request.urlopen(req, timeout=5).read()
        query = urllib.parse.urlencode({"query": f'sum({m.REQUESTS_TOTAL}{{model="scraped"}})'})
        deadline = time.monotonic() + 20
        value = None
        while time.monotonic() < deadline:
            data = json.loads(get(f"{h.prometheus_url}/api/v1/query?{query}"))
            result = data["data"]["result"]
            if result and float(result[0]["value"][1]) == n:
                value = float(result[0]["value"][1])
                break
            time.sleep(0.5)
        up = json.loads(get(f"{h.prometheus_url}/api/v1/query?query=up"))["data"]["result"]
        prom_url = h.prometheus_url
    assert value == n
    assert [r["value"][1] for r in up] == ["1"]
    with pytest.raises(OSError):  # stopped with the cluster
        get(prom_url + "/-/ready")


def test_emulate_command_rejects_bad_input(capsys, tmp_path):
    from planlab.cli import main

    assert main(["emulate", "--tokenizer", str(tmp_path), "--no-prometheus"]) == 2
    err = capsys.readouterr().err
    assert "--tokenizer" in err and "tokenizer.json" in err and "Traceback" not in err

    assert main(["emulate", "--port", "70000", "--no-prometheus"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["emulate", "--prefill", "-1", "--no-prometheus"]) == 2
    assert "--prefill" in capsys.readouterr().err
