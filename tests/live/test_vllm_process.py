"""VllmServer's process handling without vLLM: a stand-in server (a Python process that
answers /health and has a child that ignores SIGTERM) is started, found ready, and
stopped with every PID gone; a server that dies while starting is reported with its log."""

from __future__ import annotations

import sys

import pytest

import live.stacks.vllm as vllm_stack
from live.stacks.vllm import VllmOptions, VllmServer, pid_alive

pytestmark = pytest.mark.live

STAND_IN = r"""
import http.server, subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


class StandIn(VllmServer):
    def command(self) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(self.port)]


class Dies(VllmServer):
    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]


@pytest.fixture(autouse=True)
def no_vllm_needed(monkeypatch):
    monkeypatch.setattr(vllm_stack, "require_vllm", lambda: None)


def test_started_ready_and_every_pid_stopped(tmp_path):
    server = StandIn(tmp_path, tmp_path / "log", options=VllmOptions(stop_timeout_s=2))
    with server:
        assert server.startup_s is not None
        pids = list(server.pids)
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)  # the server and its child
    # The child ignored SIGTERM and outlived its parent: it was killed by PID.
    assert not [p for p in pids if pid_alive(p)]


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    server = Dies(tmp_path, tmp_path / "log", options=VllmOptions(startup_timeout_s=30))
    with pytest.raises(RuntimeError, match="exited with code 3") as info:
        server.start()
    assert "no model here" in str(info.value)
    assert not [p for p in server.pids if pid_alive(p)]
