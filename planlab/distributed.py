"""Where a study's simulations run: this machine's worker processes (the default, `--jobs N`)
or a Dask cluster (`--cluster tcp://HOST:8786`, or `--cluster local` for a LocalCluster of
worker processes on 127.0.0.1); one map-like interface that compare, sweep and the oracle
search use.

On Dask each simulation is one task. The files a scenario names (a trace, empirical length
files, a profile directory) are scattered to the cluster once per study and reach each
worker once, the first time one of its tasks needs them, not with every task; a worker that
sees the same file at the same path (one machine, a shared file system) reads it there. A task that writes a results directory writes it into a temporary folder on
its worker and sends the files back; the client writes them where a local run would have
(atomically), so the directories are the same bytes as a local run's. A worker lost
mid-task is the scheduler's to handle: it runs the task again on another worker (Dask's
`distributed.scheduler.allowed-failures`, 3 by default). Ctrl-C cancels what is queued.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import ConfigError
from scenario import Scenario

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'planlab[dask]'"
_ADDRESS = re.compile(r"^(tcp|tls)://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class Backend:
    """jobs: worker processes on this machine (None: the CPU count; 1 runs inline), or the
    number of workers of a `local` Dask cluster. cluster: None (processes), "local", or a
    scheduler address tcp://HOST:PORT."""

    jobs: int | None = None
    cluster: str | None = None

    @property
    def kind(self) -> str:
        return "processes" if self.cluster is None else "dask"


def make_backend(jobs: int | None = None, cluster: str | None = None) -> Backend:
    """The backend the CLI options name; ConfigError for a bad --jobs or --cluster."""
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected a positive number of processes")
    if cluster is not None and cluster != "local" and not _ADDRESS.match(cluster):
        raise ConfigError(
            f"got {cluster!r}; expected a Dask scheduler address tcp://HOST:PORT "
            "(e.g. tcp://10.0.0.5:8786) or local",
            key="--cluster",
        )
    return Backend(jobs=jobs, cluster=cluster)


@dataclass(frozen=True)
class Task:
    """fn(*args) is one simulation. out_index: the position in args of the results
    directory it writes (None: it writes none); label: for logs and progress."""

    fn: Callable[..., Any]
    args: tuple
    out_index: int | None = None
    label: str = ""

    @property
    def out_dir(self) -> Path | None:
        return None if self.out_index is None else Path(self.args[self.out_index])

    def call(self, out_dir: Path | None = None) -> Any:
        """fn(*args), writing into out_dir instead of the task's own results directory."""
        args = self.args
        if out_dir is not None and self.out_index is not None:
            args = args[: self.out_index] + (out_dir,) + args[self.out_index + 1 :]
        return self.fn(*args)


# (index in the input, result or None, the exception it raised or None)
Done = tuple[int, Any, BaseException | None]


def as_completed(tasks: Sequence[Task], backend: Backend) -> Iterator[Done]:
    """Run every task on the backend and yield (index, result, error) as each finishes. A
    task that raises yields its exception; the others go on."""
    if backend.cluster is not None:
        yield from _dask_completed(tasks, backend)
        return
    n_workers = min(backend.jobs or os.cpu_count() or 1, max(len(tasks), 1))
    if n_workers <= 1:
        for i, task in enumerate(tasks):
            try:
                yield i, task.call(), None
            except Exception as exc:  # reported as the task's outcome, the others still run
                yield i, None, exc
        return
    with cf.ProcessPoolExecutor(max_workers=n_workers) as pool:
        futures = {pool.submit(task.call): i for i, task in enumerate(tasks)}
        try:
            for fut in cf.as_completed(futures):
                exc = fut.exception()
                yield futures[fut], None if exc else fut.result(), exc
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def run_tasks(fn: Callable[..., Any], items: Sequence[tuple], backend: Backend) -> Iterator[Any]:
    """fn(*item) for every item, on the backend; results in the order of items. The first
    task that raises stops the iteration with its exception (the rest are cancelled)."""
    tasks = [Task(fn, tuple(item)) for item in items]
    pending: dict[int, Any] = {}
    nxt = 0
    stream = as_completed(tasks, backend)
    try:
        for i, result, exc in stream:
            if exc is not None:
                raise exc
            pending[i] = result
            while nxt in pending:
                yield pending.pop(nxt)
                nxt += 1
    finally:
        stream.close()


# --- Dask -----------------------------------------------------------------------------------


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(
            f"--cluster needs dask.distributed, which is not installed; {EXTRA_HINT}"
        ) from exc
    return distributed


@contextlib.contextmanager
def dask_client(backend: Backend) -> Iterator[Any]:
    """A Client of the backend's cluster: a LocalCluster of worker processes on 127.0.0.1
    (closed, with its processes, on the way out) or the scheduler at the address."""
    distributed = _import_distributed()
    if backend.cluster == "local":
        n = backend.jobs or os.cpu_count() or 1
        with (
            distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.WARNING,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(backend.cluster, timeout="20s")
    except OSError as exc:
        raise ConfigError(
            f"no Dask scheduler answers at {backend.cluster}: {exc}", key="--cluster"
        ) from exc
    with client:
        yield client


def _scenario_files(scenario: Scenario) -> dict[str, Path]:
    """The files a scenario reads while it runs, by the path it names them with."""
    files: dict[str, Path] = {}
    w = scenario.workload
    if w.trace is not None:
        files[str(w.trace.path)] = Path(w.trace.path)
    for d in (w.isl, w.osl):
        if d is not None and d.path is not None:
            files[str(d.path)] = Path(d.path)
    profile = scenario.model.profile
    if profile is not None:
        root = Path(profile)
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.is_file():
                files[str(p)] = p
    return files


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=256)
def _digest_at(path: str, size: int, mtime_ns: int) -> str:
    return _file_digest(Path(path))


def _same_file_here(path: str, digest: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _digest_at(path, st.st_size, st.st_mtime_ns) == digest


# Set in a worker's environment: never read a scenario's file at the user's path, always
# the copy the client sent (when the path exists there but may hold something else).
NO_SHARED_FILES_ENV = "PLANLAB_DASK_NO_SHARED_FILES"


def _materialize(path: str, digest: str, data: bytes) -> str:
    """The file on this worker: where the client has it when it is the same file there, else
    a copy in this machine's cache, written once per content."""
    if not os.environ.get(NO_SHARED_FILES_ENV) and _same_file_here(path, digest):
        return path
    root = Path(tempfile.gettempdir()) / "planlab-dask-files" / digest[:32]
    target = root / Path(path).name
    if not target.is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{target.name}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return str(target)


def _relocate(scenario: Scenario, where: dict[str, str]) -> Scenario:
    """The scenario with its file paths replaced by their copies on this worker."""
    if not where or all(k == v for k, v in where.items()):
        return scenario
    w = scenario.workload
    trace = w.trace
    if trace is not None and str(trace.path) in where:
        trace = dataclasses.replace(trace, path=Path(where[str(trace.path)]))
    isl, osl = w.isl, w.osl
    if isl is not None and isl.path is not None and str(isl.path) in where:
        isl = dataclasses.replace(isl, path=Path(where[str(isl.path)]))
    if osl is not None and osl.path is not None and str(osl.path) in where:
        osl = dataclasses.replace(osl, path=Path(where[str(osl.path)]))
    model = scenario.model
    if model.profile is not None:
        inside = [k for k in where if Path(k).is_relative_to(model.profile)]
        if any(where[k] != k for k in inside):
            # every file of a profile directory lands in one cache folder per content, so
            # the directory is rebuilt from the copies under a name of its own
            copies = (
                Path(tempfile.gettempdir())
                / "planlab-dask-files"
                / (
                    "profile-"
                    + hashlib.sha256(
                        "".join(sorted(where[k] for k in inside)).encode()
                    ).hexdigest()[:32]
                )
            )
            for k in inside:
                target = copies / Path(k).relative_to(model.profile)
                if not target.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(where[k], target)
            model = dataclasses.replace(model, profile=copies)
    return dataclasses.replace(
        scenario,
        model=model,
        workload=dataclasses.replace(w, trace=trace, isl=isl, osl=osl),
    )


def _remote(task: Task, files: dict[str, tuple[str, bytes]]) -> tuple[Any, dict[str, bytes], dict]:
    """Runs on a Dask worker: the task with its scenario's files on this machine; returns
    its result, the files of its results directory and the worker-side paths to map back."""
    where = {path: _materialize(path, digest, data) for path, (digest, data) in files.items()}
    args = tuple(_relocate(a, where) if isinstance(a, Scenario) else a for a in task.args)
    back = {v: k for k, v in where.items() if k != v}
    for before, after in zip(task.args, args, strict=True):
        if isinstance(before, Scenario) and before.model.profile != after.model.profile:
            back[str(after.model.profile)] = str(before.model.profile)
    local = dataclasses.replace(task, args=args)
    if task.out_dir is None:
        return local.call(), {}, back
    with tempfile.TemporaryDirectory(prefix="planlab-task-") as tmp:
        out = Path(tmp) / task.out_dir.name
        result = local.call(out)
        produced = {}
        for p in sorted(out.rglob("*")):
            if p.is_file():
                data = p.read_bytes()
                if p.name == "scenario.yaml":
                    # the copy of the scenario names the files where the user has them
                    text = data.decode("utf-8")
                    for worker_path, user_path in back.items():
                        text = text.replace(worker_path, user_path)
                    data = text.encode("utf-8")
                produced[str(p.relative_to(out))] = data
        back[str(out)] = str(task.out_dir)
    return result, produced, back


def _map_back(value: Any, back: dict[str, str]) -> Any:
    """The task's result with worker-side paths (its results directory) made the client's."""
    if isinstance(value, str):
        return back.get(value, value)
    if isinstance(value, Path):
        return Path(back.get(str(value), str(value)))
    if isinstance(value, dict):
        return {k: _map_back(v, back) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_map_back(v, back) for v in value)
    return value


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """A task's results directory on this machine, atomically: a hidden sibling renamed
    into place; an existing out_dir is replaced only once the new one is complete."""
    from planlab.results import _fsync_dir, _replace_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        _fsync_dir(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dask_completed(tasks: Sequence[Task], backend: Backend) -> Iterator[Done]:
    if not tasks:
        return
    distributed = _import_distributed()
    with dask_client(backend) as client:
        # Each distinct file is scattered once, and every task that reads it depends on the
        # same future: Dask moves the bytes to a worker the first time one of its tasks needs
        # them (from a worker that has them, not through the scheduler) and keeps them there
        # for the rest of the study.
        shipped: dict[str, Any] = {}
        per_task = []
        for task in tasks:
            mine = {}
            for arg in task.args:
                if not isinstance(arg, Scenario):
                    continue
                for name, path in _scenario_files(arg).items():
                    if name not in shipped:
                        data = path.read_bytes()
                        digest = hashlib.sha256(data).hexdigest()
                        [fut] = client.scatter([(digest, data)], hash=False)
                        shipped[name] = fut
                    mine[name] = shipped[name]
            per_task.append(mine)
        run = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                _remote,
                task,
                files,
                key=f"planlab-{run}-{i}",
                pure=False,
            ): i
            for i, (task, files) in enumerate(zip(tasks, per_task, strict=True))
        }
        try:
            # with_results: the results come in batches, not one round trip per task
            done = distributed.as_completed(futures, with_results=True, raise_errors=False)
            for fut, value in done:
                i = futures[fut]
                failed = fut.status == "error"
                fut.release()
                if failed:  # the task raised, or its workers were lost too often
                    yield i, None, value[1]
                    continue
                result, produced, back = value
                if tasks[i].out_dir is not None:
                    write_files(tasks[i].out_dir, produced)
                yield i, _map_back(result, back), None
        except BaseException:
            client.cancel(list(futures), force=True)
            raise
