"""ProcessConnector against real (small) worker processes: startup, stuck, replacement of a
killed worker, drain on scale-down, and no process left behind on any way out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest

from live.emulator.prometheus_server import free_port
from live.processes import ProcessConnector, RoleConfig, Worker, WorkerSpec, pid_alive

pytestmark = pytest.mark.live

# A worker: /health is 503 until its startup delay has passed (never, with a negative
# delay); /work?s=S holds a request S seconds; /inflight counts held requests. On SIGTERM it
# refuses new work and exits when the last held request is answered, as a server that
# drains on SIGTERM does.
WORKER = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    port, startup_s = int(sys.argv[1]), float(sys.argv[2])
    t0 = time.monotonic()
    lock = threading.Lock()
    state = {"inflight": 0, "draining": False}

    def maybe_exit():
        if state["draining"] and state["inflight"] == 0:
            os._exit(0)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass
        def reply(self, code, text):
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            if self.path == "/health":
                ok = startup_s >= 0 and time.monotonic() - t0 >= startup_s
                return self.reply(200 if ok and not state["draining"] else 503, "")
            if self.path == "/inflight":
                return self.reply(200, str(state["inflight"]))
            if self.path.startswith("/work"):
                if state["draining"]:
                    return self.reply(503, "draining")
                with lock:
                    state["inflight"] += 1
                time.sleep(float(self.path.split("s=")[1]))
                self.reply(200, f"done {os.getpid()}")
                with lock:
                    state["inflight"] -= 1
                    maybe_exit()
                return
            self.reply(404, "")

    def on_term(*_):
        state["draining"] = True
        with lock:
            maybe_exit()

    signal.signal(signal.SIGTERM, on_term)
    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def _get(url: str, timeout_s: float = 1.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


@pytest.fixture
def worker_script(tmp_path):
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


def role(script, *, startup_s: float, slots: int = 3, **kw) -> RoleConfig:
    ports = [free_port() for _ in range(slots)]

    def command(slot: int) -> WorkerSpec:
        return WorkerSpec((sys.executable, str(script), str(ports[slot]), str(startup_s)))

    def port(w: Worker) -> int:
        return ports[w.slot]

    def ready(w: Worker) -> bool:
        w.info["url"] = f"http://127.0.0.1:{port(w)}"
        return _get(w.info["url"] + "/health", 0.5)[0] == 200

    def inflight(w: Worker) -> int | None:
        code, text = _get(f"http://127.0.0.1:{port(w)}/inflight", 0.5)
        return int(text) if code == 200 else None

    return RoleConfig(
        command=command,
        ready=ready,
        inflight=inflight,
        max_workers=slots,
        stop_grace_s=3.0,
        **kw,
    )


def test_workers_become_ready_after_their_startup_and_scale_up(worker_script, tmp_path):
    with ProcessConnector(
        {"prefill": role(worker_script, startup_s=1.0)}, initial={"prefill": 1}, log_dir=tmp_path
    ) as c:
        st = c.wait_until(lambda s: s.prefill.starting + s.prefill.ready == 1, 5)
        assert st.prefill.desired == 1
        st = c.wait_ready(20)
        assert (st.prefill.ready, st.prefill.starting) == (1, 0)
        # Not ready before the worker's own 1 s startup: the probe really asks the process.
        assert st.prefill.startup_s[0] >= 1.0
        first = c.pids()
        assert c.scale(prefill=2, decode=0)
        st = c.wait_ready(20)
        assert st.prefill.ready == 2 and len(st.prefill.startup_s) == 2
        assert len(c.pids() - first) == 1  # one new process
        pids = c.pids()
    assert not any(pid_alive(p) for p in pids)


def test_a_worker_that_never_becomes_ready_is_reported_stuck(worker_script):
    cfg = role(worker_script, startup_s=-1, startup_timeout_s=1.5)
    with ProcessConnector({"decode": cfg}, initial={"decode": 1}) as c:
        st = c.wait_until(lambda s: s.decode.starting == 1, 5)
        assert st.decode.stuck == 0  # not yet past its timeout
        st = c.wait_until(lambda s: s.decode.stuck == 1, 10)
        assert (st.decode.ready, st.decode.starting, st.decode.desired) == (0, 1, 1)
        # The supervisor logs it once (on its next pass), however long it stays stuck.
        c.wait_until(lambda s: any(e.kind == "stuck" for e in c.events), 5)
        time.sleep(1.0)
        assert [e.kind for e in c.events if e.kind == "stuck"] == ["stuck"]
        pids = c.pids()
    assert pids and not any(pid_alive(p) for p in pids)


def test_a_worker_killed_from_outside_is_noticed_and_replaced(worker_script):
    with ProcessConnector(
        {"prefill": role(worker_script, startup_s=0.2)}, initial={"prefill": 1}
    ) as c:
        c.wait_ready(20)
        (victim,) = c.pids()
        os.kill(victim, signal.SIGKILL)
        st = c.wait_until(lambda s: s.prefill.ready == 1 and c.pids() != {victim}, 20)
        assert st.prefill.desired == 1
        assert victim not in c.pids()
        lost = [e for e in c.events if e.kind == "lost"]
        assert [e.pid for e in lost] == [victim]
        (replacement,) = c.pids()
        url = c.workers("prefill")[0].info["url"]
        assert _get(url + "/work?s=0")[1] == f"done {replacement}"
        pids = c.pids()
    assert not any(pid_alive(p) for p in pids | {victim})


def test_scale_down_drains_in_flight_work_before_terminating(worker_script):
    with ProcessConnector(
        {"decode": role(worker_script, startup_s=0.2, drain_timeout_s=30)}, initial={"decode": 2}
    ) as c:
        c.wait_ready(20)
        newest = max(c.workers("decode"), key=lambda w: w.requested_at)
        answer: dict = {}

        def hold() -> None:
            answer["reply"] = _get(newest.info["url"] + "/work?s=2.5", timeout_s=20)

        client = threading.Thread(target=hold)
        client.start()
        time.sleep(0.5)
        c.scale(prefill=0, decode=1)
        st = c.wait_until(lambda s: s.decode.draining == 1, 5)
        assert st.decode.ready == 1
        assert pid_alive(newest.pid)  # still finishing its request
        # Stop sending: the draining worker refuses new work.
        assert _get(newest.info["url"] + "/work?s=0")[0] == 503
        client.join(20)
        assert answer["reply"] == (200, f"done {newest.pid}")  # the in-flight one finished
        st = c.wait_until(lambda s: s.decode.draining == 0, 10)
        assert (st.decode.ready, st.decode.desired) == (1, 1)
        assert not pid_alive(newest.pid)
        assert any(e.kind == "stopped" and e.pid == newest.pid for e in c.events)
        pids = c.pids()
    assert not any(pid_alive(p) for p in pids)


def test_an_error_in_the_block_stops_every_worker(worker_script):
    pids: set[int] = set()
    with pytest.raises(RuntimeError, match="boom"):
        with ProcessConnector(
            {
                "prefill": role(worker_script, startup_s=0),
                "decode": role(worker_script, startup_s=0),
            },
            initial={"prefill": 1, "decode": 2},
        ) as c:
            c.wait_ready(20)
            pids = c.pids()
            raise RuntimeError("boom")
    assert len(pids) == 3
    assert not any(pid_alive(p) for p in pids)


DRIVER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from test_processes import role
    from live.processes import ProcessConnector
    with ProcessConnector({{"prefill": role({script!r}, startup_s=0)}}, initial={{"prefill": 2}}) as c:
        c.wait_ready(20)
        print(" ".join(map(str, sorted(c.pids()))), flush=True)
        time.sleep(60)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_no_worker_outlives_its_owner(worker_script, tmp_path, sig):
    """Ctrl-C unwinds the `with` block; a SIGKILLed owner takes its workers with it (the
    parent-death signal)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tests = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=root, tests=tests, script=str(worker_script)))
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = owner.stdout.readline()
        pids = {int(p) for p in line.split()}
        assert len(pids) == 2, owner.stderr.read() if not line else line
        assert all(pid_alive(p) for p in pids)
        owner.send_signal(sig)
        owner.wait(timeout=20)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in pids)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
