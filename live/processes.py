"""ProcessConnector: the planner's Connector port over real worker processes on this machine.

Each role (prefill, decode) has a `RoleConfig`: how to start one worker (its command line
for a slot, a small reused integer that picks its ports), how to tell that it is ready
(a probe, usually its health endpoint), how to tell it to stop taking work and how many
requests it still has in flight. The connector reconciles desired with actual on its own
supervisor thread, level-triggered like a Kubernetes controller: it starts missing
workers, drains surplus ones (stop sending, let in-flight finish, terminate by PID),
reports a worker that does not become ready within the role's timeout as stuck, and
replaces a worker that died or was killed from outside.

Whoever starts a process owns it: every worker is started by the supervisor thread in its
own session (Ctrl-C in a terminal reaches only planlab) with a parent-death signal (a
SIGKILLed planlab takes its workers with it), and `close()` -- run on every way out of
the `with` block, and at interpreter exit -- terminates each one by PID, then kills what
is left after a grace period.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from planner.types import ROLES, ReplicaState, RoleState

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL this process when the thread that started it
    ends (Linux prctl; elsewhere nothing, close() and atexit still stop it)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def spawn(
    argv: list[str] | tuple[str, ...],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen:
    """Start one process in its own session, output to log_path (else discarded), with the
    environment of this process updated by `env`. The caller owns it: stop_process().

    The parent-death signal fires when the *thread* that called spawn() ends, so call it
    from a thread that lives as long as the process should (the main thread, or the
    connector's supervisor), not from a short-lived pool thread."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            list(argv),
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks
        )
    finally:
        if not isinstance(out, int):
            out.close()


def stop_process(proc: subprocess.Popen, *, grace_s: float = 10.0) -> int | None:
    """SIGTERM the process (and its session's group), wait up to grace_s, then SIGKILL.
    Returns the exit code (None if it could not be reaped)."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop within %.0f s of SIGTERM: SIGKILL", proc.pid, grace_s)
    # Whatever is left of its group (a child it started) goes too.
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        return proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        log.error("pid %d survived SIGKILL", proc.pid)
        return None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def pid_alive(pid: int) -> bool:
    """True while a process with this PID exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class WorkerSpec:
    """The command line and environment of one worker process."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None


@dataclass
class Worker:
    """One worker process as the connector tracks it. Times are time.monotonic()."""

    role: str
    slot: int
    proc: subprocess.Popen
    log_path: Path | None
    requested_at: float
    ready_at: float | None = None
    draining_since: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def phase(self) -> str:
        if self.draining_since is not None:
            return "draining"
        return "ready" if self.ready_at is not None else "starting"


def _tail(w: Worker, n_chars: int = 400) -> str:
    """The end of a worker's log, for the message that says it died."""
    if w.log_path is None or not w.log_path.exists():
        return ""
    with open(w.log_path, "rb") as f:
        f.seek(max(0, w.log_path.stat().st_size - n_chars))
        text = f.read().decode("utf-8", "replace").strip()
    return f"; its log ends: {text}" if text else ""


def _sigterm(worker: Worker) -> None:
    _signal_group(worker.pid, signal.SIGTERM)


@dataclass(frozen=True)
class RoleConfig:
    """How the connector runs one role's workers.

    command(slot) -> WorkerSpec. ready(worker) -> bool: the worker serves (a health
    probe; it may fill worker.info). stop_sending(worker): the worker takes no new
    requests from now on (default SIGTERM, for servers that drain on it). inflight(worker)
    -> int | None: requests still running on it, None when unknown (then the connector
    waits for the worker to exit by itself). A starting worker older than
    startup_timeout_s is reported stuck; a draining one older than drain_timeout_s is
    terminated. max_workers bounds the slots (and so the ports a role needs).
    """

    command: Callable[[int], WorkerSpec]
    ready: Callable[[Worker], bool]
    stop_sending: Callable[[Worker], None] = _sigterm
    inflight: Callable[[Worker], int | None] | None = None
    startup_timeout_s: float = 600.0
    drain_timeout_s: float = 120.0
    stop_grace_s: float = 10.0
    max_workers: int = 8


@dataclass(frozen=True)
class WorkerEvent:
    """Something that happened to a worker (for logs and tests); t_s is time.monotonic()."""

    t_s: float
    role: str
    kind: str  # started, ready, stuck, draining, stopped, lost
    pid: int
    slot: int
    detail: str = ""


class ProcessConnector:
    """The Connector port over real local processes; a context manager.

    `with ProcessConnector({"prefill": cfg_p, "decode": cfg_d}, initial={...}) as c:`
    starts the initial workers; `c.scale(prefill=2, decode=1)` asks for counts (safe to
    repeat); `c.state()` reports them; leaving the block stops every worker by PID.
    state() and scale() may be called from any thread.
    """

    def __init__(
        self,
        roles: Mapping[str, RoleConfig],
        *,
        initial: Mapping[str, int] | None = None,
        log_dir: Path | None = None,
        poll_s: float = 0.25,
        keep_startup_samples: int = 20,
    ):
        unknown = set(roles) - set(ROLES)
        if unknown or not roles:
            raise ValueError(f"roles must be among {ROLES}, got {sorted(roles)}")
        self.roles = dict(roles)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.poll_s = poll_s
        self._desired = {r: 0 for r in ROLES}
        for r, n in (initial or {}).items():
            self._desired[r] = self._clamp(r, n)
        self._workers: dict[str, list[Worker]] = {r: [] for r in ROLES}
        self._startup_s: dict[str, list[float]] = {r: [] for r in ROLES}
        self._keep = keep_startup_samples
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._stuck_logged: set[int] = set()
        self._spawned = 0
        # Consecutive workers of a role that died before serving, and when to try again:
        # a worker that cannot start is restarted with a growing pause, not in a tight loop.
        self._failures = {r: 0 for r in ROLES}
        self._retry_at = {r: 0.0 for r in ROLES}
        self.events: list[WorkerEvent] = []
        self._history: list[Worker] = []  # every worker ever started, for diagnostics

    # -- the Connector port --------------------------------------------------------------

    def state(self) -> ReplicaState:
        with self._lock:
            now = time.monotonic()
            per = {}
            for role in ROLES:
                ws = self._workers[role]
                cfg = self.roles.get(role)
                starting = [w for w in ws if w.phase == "starting"]
                stuck = 0
                if cfg is not None:
                    stuck = sum(1 for w in starting if now - w.requested_at > cfg.startup_timeout_s)
                per[role] = RoleState(
                    desired=self._desired[role],
                    ready=sum(1 for w in ws if w.phase == "ready"),
                    starting=len(starting),
                    draining=sum(1 for w in ws if w.phase == "draining"),
                    stuck=stuck,
                    startup_s=tuple(self._startup_s[role][-self._keep :]),
                )
            return ReplicaState(prefill=per["prefill"], decode=per["decode"])

    def scale(self, prefill: int, decode: int) -> bool:
        if prefill < 0 or decode < 0:
            return False
        with self._lock:
            for role, n in (("prefill", prefill), ("decode", decode)):
                if role in self.roles:
                    want = self._clamp(role, n)
                    if want != n:
                        log.warning(
                            "%s: %d workers asked, %d slots: scaling to %d",
                            role,
                            n,
                            self.roles[role].max_workers,
                            want,
                        )
                    self._desired[role] = want
        log.info("scale to %d prefill, %d decode", prefill, decode)
        self._wake.set()
        return True

    # -- for the stack and tests -----------------------------------------------------------

    def workers(self, role: str | None = None) -> list[Worker]:
        """A copy of the tracked workers (of one role, or all)."""
        with self._lock:
            if role is not None:
                return list(self._workers[role])
            return [w for r in ROLES for w in self._workers[r]]

    def all_workers(self) -> list[Worker]:
        """Every worker this connector has started, gone ones included, oldest first."""
        with self._lock:
            return list(self._history)

    def pids(self) -> set[int]:
        """Every PID this connector started and has not reaped yet."""
        return {w.pid for w in self.workers()}

    def wait_until(
        self, predicate: Callable[[ReplicaState], bool], timeout_s: float, poll_s: float = 0.1
    ) -> ReplicaState:
        """Block until predicate(state()) holds; TimeoutError (naming the state) after."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.state()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"not reached within {timeout_s:.0f} s; state is {st}")
            time.sleep(poll_s)

    def wait_ready(self, timeout_s: float) -> ReplicaState:
        """Block until every role has its desired workers ready and nothing draining."""
        return self.wait_until(
            lambda st: all(
                st.role(r).ready == st.role(r).desired and st.role(r).draining == 0
                for r in self.roles
            ),
            timeout_s,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ProcessConnector:
        if self._thread is not None:
            return self
        atexit.register(self.close)
        self._thread = threading.Thread(
            target=self._supervise, name="planlab-process-connector", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop supervising, then terminate every worker by PID (SIGTERM, then SIGKILL
        after the role's grace). Safe to call twice."""
        self._closing.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30.0)
        with self._lock:
            left = [w for r in ROLES for w in self._workers[r]]
            for r in ROLES:
                self._workers[r] = []
        for w in left:
            _signal_group(w.pid, signal.SIGTERM)
        for w in left:
            grace = self.roles[w.role].stop_grace_s if w.role in self.roles else 10.0
            code = stop_process(w.proc, grace_s=grace)
            self._event(w, "stopped", f"exit {code} at close")
        try:
            atexit.unregister(self.close)
        except Exception:  # interpreter shutting down
            pass

    def __enter__(self) -> ProcessConnector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the supervisor thread ---------------------------------------------------------

    def _clamp(self, role: str, n: int) -> int:
        cfg = self.roles.get(role)
        if cfg is None:
            return 0
        return max(0, min(int(n), cfg.max_workers))

    def _event(self, w: Worker, kind: str, detail: str = "") -> None:
        ev = WorkerEvent(time.monotonic(), w.role, kind, w.pid, w.slot, detail)
        with self._lock:
            self.events.append(ev)
        level = logging.WARNING if kind in ("lost", "stuck") else logging.INFO
        log.log(level, "%s worker pid %d (slot %d) %s %s", w.role, w.pid, w.slot, kind, detail)

    def _supervise(self) -> None:
        # Every worker is started from this thread: the parent-death signal follows the
        # thread that forked, and this one lives until close().
        while not self._closing.is_set():
            try:
                for role in self.roles:
                    self._reconcile(role)
            except Exception:  # keep supervising; what failed is in the log
                log.exception("process connector: reconcile failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _reconcile(self, role: str) -> None:
        cfg = self.roles[role]
        now = time.monotonic()
        with self._lock:
            workers = list(self._workers[role])
            desired = self._desired[role]
        gone: list[Worker] = []
        for w in workers:
            code = w.proc.poll()
            if code is None:
                continue
            gone.append(w)
            if w.phase == "draining":
                self._event(w, "stopped", f"drained, exit {code}")
                continue
            if w.phase == "starting":
                n = self._failures[role] = self._failures[role] + 1
                self._retry_at[role] = now + min(30.0, 0.5 * 2 ** (n - 1))
            self._event(w, "lost", f"exited with {code} while {w.phase}; replacing it{_tail(w)}")
        for w in workers:
            if w in gone:
                continue
            if w.phase == "starting":
                if self._probe(cfg.ready, w):
                    with self._lock:
                        w.ready_at = time.monotonic()
                        took = w.ready_at - w.requested_at
                        self._startup_s[role].append(took)
                        self._failures[role] = 0
                    self._event(w, "ready", f"after {took:.1f} s")
                elif (
                    now - w.requested_at > cfg.startup_timeout_s and w.pid not in self._stuck_logged
                ):
                    self._stuck_logged.add(w.pid)
                    self._event(w, "stuck", f"not ready after {cfg.startup_timeout_s:.0f} s")
            elif w.phase == "draining":
                self._drain_step(cfg, w, now)
        with self._lock:
            self._workers[role] = [w for w in self._workers[role] if w not in gone]
            active = [w for w in self._workers[role] if w.phase != "draining"]
        if len(active) > desired:
            # Surplus: the newest starting workers first (no work lost), then the newest ready.
            order = sorted(active, key=lambda w: (w.phase == "ready", -w.requested_at))
            for w in order[: len(active) - desired]:
                self._begin_drain(cfg, w)
        elif len(active) < desired and now >= self._retry_at[role]:
            for _ in range(desired - len(active)):
                if not self._start_one(role, cfg):
                    break

    @staticmethod
    def _probe(fn: Callable[[Worker], Any], w: Worker) -> Any:
        try:
            return fn(w)
        except Exception as exc:  # a probe failing means "not yet"
            log.debug("probe of pid %d failed: %s", w.pid, exc)
            return None

    def _start_one(self, role: str, cfg: RoleConfig) -> bool:
        with self._lock:
            used = {w.slot for w in self._workers[role]}
        free = [s for s in range(cfg.max_workers) if s not in used]
        if not free:
            log.warning("%s: every slot is taken (draining workers hold theirs)", role)
            return False
        slot = free[0]
        spec = cfg.command(slot)
        self._spawned += 1
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{role}-{self._spawned}-slot{slot}.log"
        proc = spawn(spec.argv, env=dict(spec.env), log_path=log_path, cwd=spec.cwd)
        w = Worker(role, slot, proc, log_path, requested_at=time.monotonic())
        with self._lock:
            self._workers[role].append(w)
            self._history.append(w)
        self._event(w, "started", " ".join(spec.argv[:4]))
        return True

    def _begin_drain(self, cfg: RoleConfig, w: Worker) -> None:
        with self._lock:
            w.draining_since = time.monotonic()
        self._event(w, "draining")
        if w.ready_at is None:
            # Never served: nothing to drain.
            stop_process(w.proc, grace_s=cfg.stop_grace_s)
            return
        try:
            cfg.stop_sending(w)
        except Exception as exc:
            log.warning("stop_sending for pid %d failed (%s): terminating it", w.pid, exc)
            stop_process(w.proc, grace_s=cfg.stop_grace_s)

    def _drain_step(self, cfg: RoleConfig, w: Worker, now: float) -> None:
        if now - w.draining_since > cfg.drain_timeout_s:
            log.warning(
                "%s pid %d still busy after %.0f s of drain: terminating it",
                w.role,
                w.pid,
                cfg.drain_timeout_s,
            )
            stop_process(w.proc, grace_s=cfg.stop_grace_s)
            return
        if cfg.inflight is None:
            return  # wait for it to exit by itself
        n = self._probe(cfg.inflight, w)
        if n is not None and n <= 0:
            stop_process(w.proc, grace_s=cfg.stop_grace_s)
