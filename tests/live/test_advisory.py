"""The advisory connector against a real HTTP server on loopback, the `server:` section of
`planlab planner`'s config, and the live run's helpers for a bare server (its model from
/v1/models, the request counter's increase, the --stack flag's checks)."""

from __future__ import annotations

import argparse
import asyncio
import threading

import pytest
import yaml
from aiohttp import web

from live.advisory import AdvisoryConnector
from planlab.cli import main
from planlab.commands.planner import build_daemon, load_config
from planlab.live_run import _run_increase, served_model
from planner.errors import ConfigError


class Server:
    """An aiohttp app on its own loop in a thread: /health answers `health`, /v1/models
    lists `models`."""

    def __init__(self):
        self.health = 200
        self.models: list[str] = ["tiny"]
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _main(self):
        asyncio.set_event_loop(self.loop)

        async def health(request):
            return web.Response(status=self.health)

        async def models(request):
            return web.json_response({"data": [{"id": m} for m in self.models]})

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def test_ready_follows_the_health_endpoint_and_scale_is_recorded_never_applied(server):
    conn = AdvisoryConnector(f"{server.url}/health", prefill=1, decode=2)
    st = conn.state()
    assert (st.prefill.ready, st.prefill.desired, st.decode.ready, st.decode.desired) == (
        1,
        1,
        2,
        2,
    )
    server.health = 503
    st = conn.state()
    assert (st.prefill.ready, st.decode.ready, st.decode.desired) == (0, 0, 2)
    assert conn.scale(3, 1) is False and conn.scale(1, 2) is False
    assert conn.requested == [(3, 1), (1, 2)]
    server.health = 200
    assert conn.state().prefill.ready == 1  # still one: scale changed nothing
    server.stop()
    assert conn.state().decode.ready == 0  # unreachable
    conn.close()


def test_served_model_defaults_to_the_only_one_and_refuses_to_guess(server):
    assert served_model(server.url) == "tiny"
    server.models = ["a", "b"]
    with pytest.raises(ConfigError, match="serves 2 models"):
        served_model(server.url)
    server.models = []
    assert served_model(server.url) is None
    assert served_model("http://127.0.0.1:9") is None  # nothing listens: logged, None


def test_run_increase():
    assert _run_increase(120.0, 187.0) == 67.0
    assert _run_increase(None, 5.0) == 5.0  # the counter appeared during the run
    assert _run_increase(120.0, 3.0) is None  # reset: the server restarted
    assert _run_increase(1.0, None) is None


def _planner_config(tmp_path, **section):
    cfg = {
        "model": {"analytic": {"model": "llama-3.1-8b", "gpu": "h200"}},
        "planner": {"interval": "5s"},
        "prometheus": {"url": "http://127.0.0.1:1", "metric_names": "vllm"},
        **section,
    }
    path = tmp_path / "planner.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_planner_config_server_section_gives_an_advisory_daemon(tmp_path):
    path = _planner_config(tmp_path, server={"url": "http://127.0.0.1:8000/", "decode": 2})
    cfg = load_config(path)
    assert cfg["server"] == {"url": "http://127.0.0.1:8000", "prefill": 1, "decode": 2}
    args = argparse.Namespace(
        config=path, advisory=False, out=None, metrics_port=0, metrics_address=None
    )
    daemon = build_daemon(cfg, args)
    assert daemon.driver.advisory is True
    assert isinstance(daemon.driver.connector, AdvisoryConnector)
    assert daemon.driver.connector.health_url == "http://127.0.0.1:8000/health"


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"server": {"url": "localhost:8000"}}, "server.url"),
        ({"server": {"url": "http://h:1", "decode": -1}}, "server.decode"),
        ({"server": {"url": "http://h:1", "prefil": 1}}, "server.prefil"),
        ({"server": {"url": "http://h:1"}, "emulator": {"url": "http://h:2"}}, "exactly one"),
    ],
)
def test_planner_config_server_errors_name_the_key(tmp_path, section, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(_planner_config(tmp_path, **section))


def test_stack_flag_checks(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "scenarios/live-vllm.yaml", "--stack", "vllm", "--out", str(out)]) == 2
    assert "--stack: only applies to a live run" in capsys.readouterr().err
    argv = ["run", "scenarios/live-vllm.yaml", "--live", "--out", str(out)]
    assert main([*argv, "--stack", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown stack 'nope'" in err and "vllm" in err
    assert main([*argv, "--stack", "vllm", "--frontend", "http://x"]) == 2
    assert "drop --frontend" in capsys.readouterr().err
    assert not out.exists()


def test_stack_without_its_extra_names_the_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    out = tmp_path / "r"
    argv = ["run", "scenarios/live-vllm.yaml", "--live", "--stack", "vllm", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'planlab[vllm]'" in err and "Traceback" not in err
    assert not out.exists()


def test_ctrl_c_while_a_stack_starts_still_stops_it(monkeypatch):
    """A sync start_stack runs in a thread; cancelling the run (what Ctrl-C does) while it
    starts waits for the start to finish and then stops the stack: nothing is left."""
    import time
    import types

    import planlab.live_run as live_run

    events: list[str] = []

    class SlowStack:
        def __enter__(self):
            events.append("starting")
            time.sleep(0.5)
            events.append("started")
            return self

        def __exit__(self, *exc):
            events.append("stopped")

    fake = types.SimpleNamespace(start_stack=lambda scenario, workdir: SlowStack())
    monkeypatch.setattr(live_run, "load_stack", lambda name: fake)
    args = argparse.Namespace(stack="fake", model=None, advisory=False)

    async def go():
        task = asyncio.create_task(live_run._stack_main(args, None, None, None))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert events == ["starting", "started", "stopped"]
