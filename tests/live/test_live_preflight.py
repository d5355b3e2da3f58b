"""`planlab run --live` checks its targets before the first request (unreachable frontend or
Prometheus, a frontend that does not serve the model: exit 2, nothing written), and a live
run whose requests mostly fail exits 1 and says why. The stand-in frontend and Prometheus
here are small aiohttp apps on 127.0.0.1 that answer the few routes the checks use."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from aiohttp import web

from live.emulator.prometheus_server import free_port
from planlab.cli import main

pytestmark = [pytest.mark.live, pytest.mark.timeout(120)]

SCENARIO = """\
name: preflight
seed: 1
duration: 4s
model:
  analytic: {model: llama-3.1-8b, gpu: h200, dtype: fp8, tp: 1}
cluster:
  prefill: {replicas: 1, startup: 1s}
  decode: {replicas: 1, startup: 1s}
workload:
  arrival: {process: constant, rate: 5}
  isl: {dist: fixed, value: 100}
  osl: {dist: fixed, value: 10}
planner: {policy: static, interval: 2s, predictor: constant}
prometheus: {scrape_interval: 1s}
"""


class StandIn:
    """A frontend that lists `models` and answers every completion with HTTP 500, and a
    Prometheus query API that answers every query with an empty vector."""

    def __init__(self, models: list[str]):
        self.models = models
        self.port = free_port()
        self.completions = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m} for m in self.models]})

    async def _chat(self, request: web.Request) -> web.Response:
        self.completions += 1
        return web.json_response({"error": {"message": "engine exploded"}}, status=500)

    async def _query(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": []}}
        )

    def _serve(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/v1/models", self._models),
                web.post("/v1/chat/completions", self._chat),
                web.post("/v1/completions", self._chat),
                web.get("/api/v1/query", self._query),
                web.post("/api/v1/query", self._query),
            ]
        )
        runner = web.AppRunner(app)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> StandIn:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "preflight.yaml"
    path.write_text(SCENARIO)
    return path


def _live(scenario: Path, out: Path, frontend: str, prometheus: str, *extra: str) -> int:
    return main(
        [
            "run",
            str(scenario),
            "--live",
            "--frontend",
            frontend,
            "--prometheus",
            prometheus,
            "--out",
            str(out),
            "--no-report",
            "--quiet",
            *extra,
        ]  # fmt: skip
    )


def test_unreachable_frontend_is_exit_2_and_nothing_written(scenario_file, tmp_path, capsys):
    nobody = f"http://127.0.0.1:{free_port()}"
    with StandIn(["m"]) as prom:
        assert _live(scenario_file, tmp_path / "run", nobody, prom.url) == 2
    err = capsys.readouterr().err
    assert "--frontend" in err and f"{nobody}/v1/models" in err
    assert not (tmp_path / "run").exists()


def test_unreachable_prometheus_is_exit_2(scenario_file, tmp_path, capsys):
    nobody = f"http://127.0.0.1:{free_port()}"
    with StandIn(["m"]) as front:
        assert _live(scenario_file, tmp_path / "run", front.url, nobody) == 2
        assert front.completions == 0  # refused before the first request
    err = capsys.readouterr().err
    assert "--prometheus" in err and f"{nobody}/api/v1/query" in err
    assert not (tmp_path / "run").exists()


def test_a_model_the_frontend_does_not_serve_is_exit_2(scenario_file, tmp_path, capsys):
    with StandIn(["llama-3.1-8b"]) as stand:
        code = _live(scenario_file, tmp_path / "run", stand.url, stand.url, "--model", "gpt-9")
        assert stand.completions == 0
    assert code == 2
    err = capsys.readouterr().err
    assert "'gpt-9'" in err and "llama-3.1-8b" in err
    assert not (tmp_path / "run").exists()


def test_a_live_run_whose_requests_fail_exits_1_and_says_why(scenario_file, tmp_path, capsys):
    with StandIn(["m"]) as stand:
        code = _live(scenario_file, tmp_path / "run", stand.url, stand.url, "--model", "m")
        sent = stand.completions
    assert code == 1
    err = capsys.readouterr().err
    assert f"{sent} of {sent} requests failed" in err and "HTTP 500" in err
    assert (tmp_path / "run" / "summary.json").is_file()  # kept for diagnosis
