"""A real Prometheus server (the `prometheus` binary) on loopback, scraping the emulator."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from planner.errors import ConfigError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_prometheus() -> str:
    """$PROMETHEUS_BIN, else `prometheus` on PATH; ConfigError naming both when absent."""
    env = os.environ.get("PROMETHEUS_BIN")
    if env:
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            raise ConfigError(
                f"PROMETHEUS_BIN={env!r} is not an executable file", key="PROMETHEUS_BIN"
            )
        return env
    found = shutil.which("prometheus")
    if found is None:
        raise ConfigError(
            "the prometheus binary was not found: install it (Debian: apt-get install prometheus) "
            "or set PROMETHEUS_BIN to its path, or run without Prometheus (--no-prometheus)",
            key="prometheus",
        )
    return found


def render_config(
    targets: list[str], scrape_interval_s: float, job: str = "planlab-frontend"
) -> str:
    """prometheus.yml scraping `targets` (host:port) at /metrics."""
    interval = f"{max(1, round(scrape_interval_s * 1000))}ms"
    quoted = ", ".join(f'"{t}"' for t in targets)
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    scrape_interval: {interval}\n"
        f"    scrape_timeout: {interval}\n"
        "    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: [{quoted}]\n"
    )


class PrometheusServer:
    """Start Prometheus with a generated config and a temporary TSDB; a context manager.

    `with PrometheusServer(["127.0.0.1:8000"], scrape_interval_s=1) as prom: prom.url`
    """

    def __init__(
        self,
        targets: list[str],
        *,
        scrape_interval_s: float = 5.0,
        port: int = 0,
        binary: str | None = None,
        ready_timeout_s: float = 30.0,
    ):
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s
        self.port = port
        self.binary = binary
        self.ready_timeout_s = ready_timeout_s
        self.url: str | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    def start(self) -> str:
        binary = self.binary or find_prometheus()
        self._dir = tempfile.TemporaryDirectory(prefix="planlab-prometheus-")
        root = Path(self._dir.name)
        config = root / "prometheus.yml"
        config.write_text(render_config(self.targets, self.scrape_interval_s))
        port = self.port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        log_path = root / "prometheus.log"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={root / 'data'}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            self._wait_ready(log_path)
        except BaseException:
            self.stop()
            raise
        log.info(
            "prometheus %s ready (pid %d), scraping %s", self.url, self._proc.pid, self.targets
        )
        return self.url

    def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus exited with code {self._proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus at {self.url} not ready after {self.ready_timeout_s} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
