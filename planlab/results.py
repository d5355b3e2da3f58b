"""The results directory of one run (requests.csv, timeline.csv, decisions.jsonl,
summary.json, scenario.yaml): its columns, the summary numbers, and atomic writing and
reading, shared by the simulator and the live driver. docs/results.md documents every key."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from planner.errors import ConfigError

log = logging.getLogger(__name__)

REQUEST_COLUMNS = (
    "id",  # request id, unique within the run
    "arrival_s",  # arrival time, seconds from the start of the run
    "isl",  # input tokens
    "osl",  # output tokens asked for (max_tokens)
    "ttft_ms",  # arrival to first token; empty when none came
    "tpot_ms",  # mean gap between output tokens after the first; empty with < 2 tokens
    "e2e_s",  # arrival to last token; empty unless finished
    "prefill_worker",  # the prefill worker that served it; empty when none did
    "decode_worker",  # the decode worker that served it; empty when none did
    "status",  # ok | failed | timeout | in_flight (anything else counts as failed)
    "error",  # the error in words; empty when ok
)

TIMELINE_COLUMNS = (
    "t_s",  # time of the row (a scrape or a planner tick), seconds from the start
    "request_rate",  # arrivals per second over the last row interval
    "prefill_desired",  # prefill replicas last asked for
    "prefill_ready",  # prefill replicas serving
    "prefill_starting",  # prefill replicas asked for and not ready yet
    "prefill_draining",  # prefill replicas finishing in-flight work before release
    "decode_desired",
    "decode_ready",
    "decode_starting",
    "decode_draining",
    "gpus",  # GPUs held (starting + ready + draining, times GPUs per replica)
    "predicted_num_req",  # the planner's forecast of requests in the next interval
    "predicted_rate",  # the same as a rate, requests per second
)

STATUS_OK = "ok"
STATUS_IN_FLIGHT = "in_flight"

_FLOAT_FORMAT = "%.6f"
_REQUEST_FLOATS = ("arrival_s", "ttft_ms", "tpot_ms", "e2e_s")
_REQUEST_INTS = ("isl", "osl")
_TIMELINE_FLOATS = ("t_s", "request_rate", "predicted_num_req", "predicted_rate")
FILES = ("requests.csv", "timeline.csv", "decisions.jsonl", "summary.json")
ROLES = ("prefill", "decode")
GPU_PARTS = ("startup", "serving", "drain")


# --- the summary ---------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    """A JSON-safe float: None for missing, NaN or infinite."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _stats(values: pd.Series) -> dict[str, float | None]:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    q = np.quantile(v, [0.5, 0.9, 0.99], method="linear")
    return {"mean": _num(v.mean()), "p50": _num(q[0]), "p90": _num(q[1]), "p99": _num(q[2])}


def _sla_value(sla: Any, key: str) -> float:
    value = sla[key] if isinstance(sla, Mapping) else getattr(sla, key)
    return float(value)


def compute_summary(
    requests: pd.DataFrame,
    *,
    sla: Any,
    duration_s: float,
    gpu_seconds: Mapping[str, Mapping[str, float]],
    scaling_events: int,
    preemptions: int,
    wall_s: float,
    policy: str,
    scenario_name: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """summary.json for one run (keys in docs/results.md).

    `sla` has ttft_ms, itl_ms and target_attainment (an SLASpec or a mapping).
    `gpu_seconds` is {role: {"startup": s, "serving": s, "drain": s}}.
    Attainment counts finished requests (completed or failed; a failed one misses every
    SLA); in-flight requests at the end are left out. A completed request without a TPOT
    (fewer than two output tokens) meets the ITL SLA trivially. Everything but `wall` is a
    function of the inputs, so a deterministic run gives a byte-identical summary.
    """
    ttft_sla = _sla_value(sla, "ttft_ms")
    itl_sla = _sla_value(sla, "itl_ms")
    target = _sla_value(sla, "target_attainment")
    status = requests["status"].astype(str)
    ok = (status == STATUS_OK).to_numpy()
    in_flight = (status == STATUS_IN_FLIGHT).to_numpy()
    failed = ~ok & ~in_flight
    finished = int(ok.sum() + failed.sum())

    ttft = pd.to_numeric(requests["ttft_ms"], errors="coerce").to_numpy(dtype=np.float64)
    tpot = pd.to_numeric(requests["tpot_ms"], errors="coerce").to_numpy(dtype=np.float64)
    osl = pd.to_numeric(requests["osl"], errors="coerce").to_numpy(dtype=np.float64)
    # NaN compares False: a completed request without a TTFT misses the TTFT SLA.
    ttft_ok = ok & (ttft <= ttft_sla)
    no_gap = (osl <= 1) | np.isnan(tpot)
    itl_ok = ok & (no_gap | (tpot <= itl_sla))
    joint_ok = ttft_ok & itl_ok

    def share(mask: np.ndarray) -> float | None:
        return None if finished == 0 else float(mask.sum()) / finished

    done = requests[ok]
    by_status = {str(k): int(v) for k, v in sorted(status.value_counts().items())}
    reasons = requests["error"][failed].fillna("").astype(str).replace("", "(no reason given)")
    failure_reasons = {
        str(k): int(v)
        for k, v in sorted(reasons.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
    }

    gpu_hours: dict[str, Any] = {}
    total_s = 0.0
    for role in sorted(gpu_seconds):
        parts = gpu_seconds[role]
        unknown = set(parts) - set(GPU_PARTS)
        if unknown:
            raise ValueError(f"gpu_seconds[{role!r}] has unknown parts {sorted(unknown)}")
        role_s = {part: float(parts.get(part, 0.0)) for part in GPU_PARTS}
        role_total = sum(role_s.values())
        total_s += role_total
        gpu_hours[role] = {part: s / 3600.0 for part, s in role_s.items()}
        gpu_hours[role]["total"] = role_total / 3600.0
    gpu_hours["total"] = total_s / 3600.0

    joint = share(joint_ok)
    summary: dict[str, Any] = {
        "scenario": scenario_name,
        "policy": policy,
        "duration_s": float(duration_s),
        "sla": {"ttft_ms": ttft_sla, "itl_ms": itl_sla, "target_attainment": target},
        "requests": {
            "arrived": len(requests),
            "completed": int(ok.sum()),
            "failed": int(failed.sum()),
            "in_flight": int(in_flight.sum()),
            "by_status": by_status,
            "failure_reasons": failure_reasons,
        },
        "ttft_ms": _stats(done["ttft_ms"]),
        "tpot_ms": _stats(done["tpot_ms"]),
        "e2e_s": _stats(done["e2e_s"]),
        "attainment": {
            "ttft": share(ttft_ok),
            "itl": share(itl_ok),
            "joint": joint,
            "finished": finished,
            "target": target,
            "meets_target": None if joint is None else bool(joint >= target),
        },
        "goodput_rps": float(joint_ok.sum()) / duration_s if duration_s > 0 else None,
        "throughput_rps": float(ok.sum()) / duration_s if duration_s > 0 else None,
        "gpu_hours": gpu_hours,
        "goodput_per_gpu_hour": (float(joint_ok.sum()) / gpu_hours["total"])
        if gpu_hours["total"] > 0
        else None,
        "scaling_events": int(scaling_events),
        "preemptions": int(preemptions),
        "wall": {
            "wall_s": float(wall_s),
            "sim_requests_per_wall_s": len(requests) / wall_s if wall_s > 0 else None,
        },
    }
    if extra:
        summary["extra"] = dict(extra)
    return _json_safe(summary)


# --- writing -------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Plain JSON data: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _num(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _format_table(df: pd.DataFrame, columns: tuple[str, ...], floats: tuple[str, ...]) -> str:
    """CSV text with the fixed columns first, floats as %.6f, integers as integers, and
    missing values empty, so that equal data always give the same bytes."""
    out = df.copy()
    for col in columns:
        if col not in out.columns:
            out[col] = np.nan
    out = out[list(columns) + [c for c in df.columns if c not in columns]]
    for col in out.columns:
        s = out[col]
        if col in floats:
            out[col] = pd.to_numeric(s, errors="coerce").astype(np.float64)
        elif pd.api.types.is_float_dtype(s):
            whole = s.dropna()
            if len(whole) and bool(np.all(np.isfinite(whole)) and np.all(whole == np.round(whole))):
                # An integer column that gained NaN (a worker id, a replica count).
                out[col] = s.astype("Int64")
            elif not len(whole):
                out[col] = s.astype("object")
    return out.to_csv(index=False, float_format=_FLOAT_FORMAT, na_rep="", lineterminator="\n")


def _record_line(record: Any) -> str:
    if hasattr(record, "to_dict"):
        data = record.to_dict()
    elif isinstance(record, Mapping):
        data = record
    else:
        raise TypeError(f"decision record of type {type(record).__name__}: expected a dict")
    return json.dumps(_json_safe(data), separators=(",", ":"), allow_nan=False)


def _scenario_yaml(scenario: Any) -> str:
    if is_dataclass(scenario) and not isinstance(scenario, type):
        from scenario import scenario_to_dict

        data = scenario_to_dict(scenario)
    elif isinstance(scenario, Mapping):
        data = dict(scenario)
    else:
        raise TypeError(f"scenario of type {type(scenario).__name__}: expected a Scenario or dict")
    return yaml.safe_dump(_json_safe(data), sort_keys=False)


def _write_file(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# What planlab writes into a run directory (write_run, then planlab report): the only
# names a run directory replaced with --force may hold, so nothing a user put there is lost.
RUN_DIR_ENTRIES = frozenset((*FILES, "scenario.yaml", "report.html", "plots"))


def check_out_dir(
    out_dir: str | Path,
    *,
    force: bool,
    markers: tuple[str, ...] = ("summary.json",),
    entries: frozenset[str] = RUN_DIR_ENTRIES,
    what: str = "run",
) -> None:
    """Refuse, before any work, an output directory that would lose something.

    A path that does not exist, or an empty directory, is fine. An earlier planlab `what`
    directory (it holds one of `markers`, and only names planlab writes) may be reused with
    `force`. Anything else (a file, a folder of the user's, a planlab folder with files
    added) is refused: planlab never deletes or moves what it did not write.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise ConfigError(
            "exists and is not a directory; expected a new or empty directory for the results",
            key="--out",
            source=str(out_dir),
        )
    names = sorted(p.name for p in out_dir.iterdir())
    if not names:
        return
    foreign = [n for n in names if n not in entries and not n.startswith(f".{out_dir.name}.")]
    if any(m in names for m in markers) and not foreign:
        if force:
            return
        raise ConfigError(
            f"holds an earlier planlab {what}; pass --force to replace it, or choose another --out",
            key="--out",
            source=str(out_dir),
        )
    shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    raise ConfigError(
        f"exists and holds files planlab did not write ({shown}); planlab never deletes or "
        "moves them: choose a new or empty directory for --out",
        key="--out",
        source=str(out_dir),
    )


def write_run(
    out_dir: str | Path,
    requests: pd.DataFrame,
    timeline: pd.DataFrame,
    records: Iterable[Any],
    summary: Mapping[str, Any],
    scenario: Any = None,
    *,
    replace: bool = False,
    unique: bool = False,
) -> Path:
    """Write the run directory atomically: everything goes into a hidden temporary sibling,
    which becomes out_dir only once complete. On any error (Ctrl-C included) the temporary
    directory is removed and an existing out_dir is left as it was.

    replace: an existing out_dir (checked by check_out_dir) is replaced. unique: out_dir is
    a default name; when taken (another run of the same scenario in the same second) the
    first free `<name>-2`, `<name>-3`, ... is used. Otherwise out_dir must not exist or be
    empty. Returns the directory written.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
    try:
        _write_file(tmp / "requests.csv", _format_table(requests, REQUEST_COLUMNS, _REQUEST_FLOATS))
        _write_file(
            tmp / "timeline.csv", _format_table(timeline, TIMELINE_COLUMNS, _TIMELINE_FLOATS)
        )
        _write_file(tmp / "decisions.jsonl", "".join(_record_line(r) + "\n" for r in records))
        _write_file(
            tmp / "summary.json",
            json.dumps(_json_safe(summary), sort_keys=True, indent=2, allow_nan=False) + "\n",
        )
        if scenario is not None:
            _write_file(tmp / "scenario.yaml", _scenario_yaml(scenario))
        _fsync_dir(tmp)
        if replace:
            _replace_dir(tmp, out_dir)
        else:
            out_dir = _rename_into_free(tmp, out_dir, unique=unique)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote run results to %s", out_dir)
    return out_dir


def claim_new_dir(path: str | Path) -> Path:
    """Create `path`, or the first free `<path>-2`, `-3`, ... (mkdir is atomic, so two
    commands started in the same second never share a default folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ConfigError("no free name for the output folder", source=str(path))


def _rename_into_free(new: Path, target: Path, *, unique: bool) -> Path:
    """Rename `new` to `target`, atomically refusing a target that holds anything (a
    rename onto a non-empty directory fails): two runs racing for one name never lose
    each other's files. With `unique`, try `<target>-2`, `-3`, ... instead of failing."""
    for n in range(1, 1000 if unique else 2):
        candidate = target if n == 1 else target.with_name(f"{target.name}-{n}")
        if candidate.exists() and not candidate.is_dir():
            if unique:
                continue
            break
        try:
            os.rename(new, candidate)
            return candidate
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
    raise ConfigError(
        "appeared while the run was written and is not empty; nothing was replaced "
        "(choose another --out, or --force to replace an earlier planlab run)",
        key="--out",
        source=str(target),
    )


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing target (an earlier planlab run, checked by
    check_out_dir) is moved aside first and put back if the rename fails, and removed once
    the new one is in place."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """One results directory read back, for reports and comparisons."""

    path: Path
    requests: pd.DataFrame
    timeline: pd.DataFrame
    decisions: list[dict]
    summary: dict


def _read_csv(path: Path, required: tuple[str, ...], text_cols: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError("file not found (not a planlab results directory?)", source=str(path))
    try:
        df = pd.read_csv(path, dtype={c: "string" for c in text_cols})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a readable CSV file: {exc}", source=str(path)) from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ConfigError(
            f"missing column(s) {', '.join(missing)}; expected {', '.join(required)}",
            source=str(path),
        )
    return df


def read_run(run_dir: str | Path) -> RunData:
    """Read a results directory; a missing or malformed file is a ConfigError naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(
            "not a directory (expected a planlab results directory)", source=str(run_dir)
        )
    requests = _read_csv(
        run_dir / "requests.csv",
        REQUEST_COLUMNS,
        ("status", "error", "prefill_worker", "decode_worker"),
    )
    timeline = _read_csv(run_dir / "timeline.csv", TIMELINE_COLUMNS, ())

    path = run_dir / "decisions.jsonl"
    if not path.is_file():
        raise ConfigError("file not found", source=str(path))
    decisions: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"not JSON: {exc.msg}", source=str(path), key=f"line {lineno}"
                ) from None
            if not isinstance(record, dict):
                raise ConfigError(
                    "expected one JSON object per line", source=str(path), key=f"line {lineno}"
                )
            decisions.append(record)

    path = run_dir / "summary.json"
    if not path.is_file():
        raise ConfigError("file not found", source=str(path))
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"not JSON: {exc.msg}", source=str(path), key=f"line {exc.lineno}"
        ) from None
    if not isinstance(summary, dict):
        raise ConfigError("expected a JSON object", source=str(path))
    return RunData(run_dir, requests, timeline, decisions, summary)


def default_run_dir(
    results_root: str | Path, scenario_name: str, policy: str, when: datetime | str
) -> Path:
    """results_root/<scenario>-<policy>-<YYYYmmdd-HHMMSS>; the caller passes the time so
    this stays free of clock reads. Characters unsafe in a file name become '-'."""
    stamp = when.strftime("%Y%m%d-%H%M%S") if isinstance(when, datetime) else str(when)
    name = f"{scenario_name}-{policy}-{stamp}"
    return Path(results_root) / re.sub(r"[^A-Za-z0-9._-]+", "-", name)
