"""Reading and writing profile files: Dynamo's profiler output (npz or ConfigMap JSON) and
planlab's own `planlab-profile.json`; resolving a scenario's model to a PerfProfile.

Layouts recognised by load_profile (docs/profiles.md):

1. planlab:  DIR/planlab-profile.json (or that file given directly)
2. Dynamo:   DIR/selected_prefill_interpolation/raw_data.npz
             DIR/selected_decode_interpolation/raw_data.npz
3. flat:     DIR/prefill_raw_data.{npz,json} and DIR/decode_raw_data.{npz,json}
             (JSON is the ConfigMap form: the same keys, lists of numbers)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from planner.analytic import analytic_profile
from planner.errors import ConfigError
from planner.profile import ARRAY_KEYS, DECODE_KEYS, PREFILL_KEYS, PerfProfile
from scenario import ModelSpec

log = logging.getLogger(__name__)

PLANLAB_FILE = "planlab-profile.json"
PLANLAB_FORMAT = "planlab-profile"
PLANLAB_VERSION = 1
METADATA_KEYS = ("model", "gpu", "dtype", "tp", "kv_bytes_per_token", "source")

LAYOUTS = (
    f"{PLANLAB_FILE} (planlab)",
    "selected_prefill_interpolation/raw_data.npz + selected_decode_interpolation/raw_data.npz "
    "(Dynamo profiler)",
    "prefill_raw_data.{npz,json} + decode_raw_data.{npz,json} (flat or ConfigMap JSON)",
)


def load_profile(path: str | os.PathLike) -> PerfProfile:
    """The profile stored at `path` (a directory in one of the three layouts, or a
    planlab-profile.json file); ConfigError naming the file and key when it cannot be used."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"profile path does not exist; expected a directory holding one of: {'; '.join(LAYOUTS)}",
            source=str(p),
        )
    if p.is_file():
        if p.suffix == ".json":
            return _load_planlab(p)
        raise ConfigError(
            f"is a file; expected a profile directory or a {PLANLAB_FILE} file", source=str(p)
        )
    if (p / PLANLAB_FILE).is_file():
        return _load_planlab(p / PLANLAB_FILE)
    sel_pre = p / "selected_prefill_interpolation" / "raw_data.npz"
    sel_dec = p / "selected_decode_interpolation" / "raw_data.npz"
    if sel_pre.is_file() or sel_dec.is_file():
        _need_both(p, sel_pre, sel_dec)
        return _from_two(p, sel_pre, sel_dec)
    pre = _first_existing(p, "prefill_raw_data")
    dec = _first_existing(p, "decode_raw_data")
    if pre or dec:
        _need_both(
            p, pre or p / "prefill_raw_data.{npz,json}", dec or p / "decode_raw_data.{npz,json}"
        )
        return _from_two(p, pre, dec)
    raise ConfigError(f"no profile found; expected one of: {'; '.join(LAYOUTS)}", source=str(p))


def write_profile(
    profile: PerfProfile, out_dir: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `profile` as DIR/planlab-profile.json (atomically: a temporary file renamed into
    place). `metadata` may give model, gpu, dtype and tp; the rest comes from the profile."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {k: None for k in METADATA_KEYS}
    meta.update(metadata or {})
    meta["name"] = profile.name
    meta["kv_bytes_per_token"] = profile.kv_bytes_per_token
    meta["source"] = meta.get("source") or profile.source
    arrays = {k: v.tolist() for k, v in profile.to_arrays().items()}
    arrays["max_kv_tokens"] = int(profile.max_kv_tokens)
    doc = {
        "format": PLANLAB_FORMAT,
        "version": PLANLAB_VERSION,
        "metadata": meta,
        "arrays": arrays,
    }
    target = out / PLANLAB_FILE
    fd, tmp = tempfile.mkstemp(prefix=".planlab-profile-", suffix=".json", dir=out)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote profile %s to %s", profile.name, target)
    return target


def write_dynamo_profile(
    profile: PerfProfile, out_dir: str | os.PathLike, extra: dict[str, str] | None = None
) -> Path:
    """Write `profile` in the flat layout of Dynamo's profiler output
    (DIR/prefill_raw_data.npz, DIR/decode_raw_data.npz: Dynamo's keys), plus `extra`
    text files (name -> content). The directory is written under a temporary name and
    renamed into place once complete; `out_dir` must not exist or be empty."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        arrays = profile.to_arrays()
        np.savez(tmp / "prefill_raw_data.npz", **{k: arrays[k] for k in PREFILL_KEYS})
        np.savez(tmp / "decode_raw_data.npz", **{k: arrays[k] for k in DECODE_KEYS})
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote profile %s to %s", profile.name, out)
    return out


def resolve_model(model: ModelSpec) -> PerfProfile:
    """The PerfProfile a scenario's `model:` section names (a profile directory or analytic)."""
    if model.profile is not None:
        return load_profile(model.profile)
    if model.analytic is not None:
        a = model.analytic
        return analytic_profile(a.model, a.gpu, a.dtype, a.tp, ep=a.ep)
    raise ConfigError("neither profile nor analytic given; expected one of them", key="model")


# ---------------------------------------------------------------------------------------


def _first_existing(d: Path, stem: str) -> Path | None:
    for ext in (".npz", ".json"):
        if (d / f"{stem}{ext}").is_file():
            return d / f"{stem}{ext}"
    return None


def _need_both(d: Path, pre: Path, dec: Path) -> None:
    missing = [str(x.relative_to(d)) for x in (pre, dec) if not Path(x).is_file()]
    if missing:
        raise ConfigError(
            f"incomplete profile: {' and '.join(missing)} not found next to the other file; "
            "expected both the prefill and the decode file",
            source=str(d),
        )


def _read_arrays(path: Path) -> dict[str, Any]:
    """The key -> array mapping of an npz or JSON file; ConfigError if unreadable."""
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):
            # np.load reads a non-zip file as a pickle and says so, which misleads.
            raise ConfigError(
                "not a valid npz file (not a zip archive); expected numpy's savez output",
                source=str(path),
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ConfigError(
                f"cannot read as an npz archive ({exc}); expected numpy's savez output",
                source=str(path),
            ) from None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read ({exc})", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=str(path)
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"top level is a {type(data).__name__}; expected a JSON object", source=str(path)
        )
    return data


def _from_two(d: Path, pre: Path, dec: Path) -> PerfProfile:
    data: dict[str, Any] = {}
    pre_data, dec_data = _read_arrays(pre), _read_arrays(dec)
    data.update({k: pre_data[k] for k in PREFILL_KEYS if k in pre_data})
    data.update({k: dec_data[k] for k in DECODE_KEYS if k in dec_data})
    owner = {**dict.fromkeys(PREFILL_KEYS, str(pre)), **dict.fromkeys(DECODE_KEYS, str(dec))}
    try:
        return PerfProfile.from_arrays(data, str(d), name=d.name)
    except ConfigError as exc:
        # Name the file that holds the bad key, not the directory.
        if exc.key in owner and exc.source == str(d):
            raise ConfigError(exc.detail, source=owner[exc.key], key=exc.key) from None
        raise


def _load_planlab(path: Path) -> PerfProfile:
    doc = _read_arrays(path)
    src = str(path)
    if doc.get("format") != PLANLAB_FORMAT:
        raise ConfigError(
            f"format is {doc.get('format')!r}; expected {PLANLAB_FORMAT!r}",
            source=src,
            key="format",
        )
    version = doc.get("version")
    if version != PLANLAB_VERSION:
        raise ConfigError(
            f"version {version!r}; expected {PLANLAB_VERSION} (the version this planlab reads)",
            source=src,
            key="version",
        )
    meta = doc.get("metadata", {})
    arrays = doc.get("arrays")
    for key, value in (("metadata", meta), ("arrays", arrays)):
        if not isinstance(value, dict):
            raise ConfigError(
                f"got {type(value).__name__}; expected an object", source=src, key=key
            )
    kvb = meta.get("kv_bytes_per_token")
    if kvb is not None and (not isinstance(kvb, int | float) or not math.isfinite(kvb) or kvb <= 0):
        raise ConfigError(
            f"got {kvb!r}; expected a positive number or null",
            source=src,
            key="metadata.kv_bytes_per_token",
        )
    unknown = sorted(set(arrays) - set(ARRAY_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}; expected only {', '.join(ARRAY_KEYS)}",
            source=src,
            key="arrays",
        )
    name = meta.get("name") or path.parent.name
    try:
        return PerfProfile.from_arrays(
            arrays, src, name=str(name), kv_bytes_per_token=None if kvb is None else float(kvb)
        )
    except ConfigError as exc:
        if exc.source == src and exc.key:
            raise ConfigError(exc.detail, source=src, key=f"arrays.{exc.key}") from None
        raise
