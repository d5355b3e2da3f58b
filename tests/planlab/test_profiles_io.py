"""Profile files: the three layouts load to the same profile, planlab's format round-trips,
every bad file gets a ConfigError naming it, and `planlab profile` prints and writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from planlab.cli import main
from planlab.profiles import PLANLAB_FILE, load_profile, resolve_model, write_profile
from planner.errors import ConfigError
from planner.profile import DECODE_KEYS, PREFILL_KEYS
from scenario import AnalyticSpec, ModelSpec

PREFILL = {
    "prefill_isl": [100, 1100, 2100],
    "prefill_ttft": [10.0, 30.0, 60.0],
    "prefill_thpt_per_gpu": [10_000.0, 36_000.0, 35_000.0],
}
DECODE = {
    "x_kv_usage": [0.01, 0.5, 1.0, 0.04, 0.4, 0.8],
    "y_context_length": [1000, 1000, 1000, 4000, 4000, 4000],
    "z_itl": [5.0, 20.0, 40.0, 5.0, 15.0, 25.0],
    "z_thpt_per_gpu": [200.0, 2_500.0, 2_500.0, 200.0, 660.0, 800.0],
    "max_kv_tokens": [100_000],
}


def _npz(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in data.items()})
    return path


def _json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _check_small(prof) -> None:
    assert prof.max_kv_tokens == 100_000
    assert prof.prefill_ttft_ms_at(600.0) == pytest.approx(20.0)
    assert prof.decode_itl_ms_at(0.75, 1000.0) == pytest.approx(30.0)


def test_dynamo_selected_layout(tmp_path):
    _npz(tmp_path / "selected_prefill_interpolation" / "raw_data.npz", PREFILL)
    _npz(tmp_path / "selected_decode_interpolation" / "raw_data.npz", DECODE)
    _check_small(load_profile(tmp_path))


def test_flat_npz_layout(tmp_path):
    _npz(tmp_path / "prefill_raw_data.npz", PREFILL)
    _npz(tmp_path / "decode_raw_data.npz", DECODE)
    _check_small(load_profile(str(tmp_path)))


def test_configmap_json_layout_with_scalar_max_kv(tmp_path):
    _json(tmp_path / "prefill_raw_data.json", PREFILL)
    _json(tmp_path / "decode_raw_data.json", {**DECODE, "max_kv_tokens": 100_000})
    _check_small(load_profile(tmp_path))


def test_mixed_npz_and_json(tmp_path):
    _npz(tmp_path / "prefill_raw_data.npz", PREFILL)
    _json(tmp_path / "decode_raw_data.json", DECODE)
    _check_small(load_profile(tmp_path))


def test_planlab_format_round_trip(tmp_path):
    _npz(tmp_path / "src" / "prefill_raw_data.npz", PREFILL)
    _npz(tmp_path / "src" / "decode_raw_data.npz", DECODE)
    prof = load_profile(tmp_path / "src")
    target = write_profile(prof, tmp_path / "out", metadata={"model": "m", "gpu": "g"})
    assert target == tmp_path / "out" / PLANLAB_FILE
    assert [p.name for p in (tmp_path / "out").iterdir()] == [PLANLAB_FILE]  # no temp left
    doc = json.loads(target.read_text())
    assert doc["format"] == "planlab-profile" and doc["version"] == 1
    assert doc["metadata"]["model"] == "m" and doc["metadata"]["tp"] is None
    again = load_profile(tmp_path / "out")
    for key, value in prof.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[key], value)
    assert load_profile(target).max_kv_tokens == 100_000  # the file itself works too


def test_analytic_round_trip_keeps_kv_bytes(tmp_path):
    prof = resolve_model(ModelSpec(analytic=AnalyticSpec("qwen3-8b", "h100-sxm", "bf16", 2)))
    write_profile(prof, tmp_path)
    again = load_profile(tmp_path)
    assert again.kv_bytes_per_token == 2 * 36 * 8 * 128 * 2
    assert again.name == prof.name
    assert again.best_decode_throughput_per_gpu(20.0, 3000.0) == pytest.approx(
        prof.best_decode_throughput_per_gpu(20.0, 3000.0)
    )
    assert resolve_model(ModelSpec(profile=tmp_path)).max_kv_tokens == prof.max_kv_tokens


def test_shared_profile_loads(h200_profile_dir):
    prof = load_profile(h200_profile_dir)
    assert prof.max_kv_tokens == 945_029
    assert prof.prefill_thpt_per_gpu_at(3000.0) == pytest.approx(49_500, rel=0.02)


# -- bad files -------------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(tmp_path / "nope")


def test_directory_without_a_profile(tmp_path):
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(ConfigError) as err:
        load_profile(tmp_path)
    assert err.value.source == str(tmp_path)
    assert "selected_prefill_interpolation" in str(err.value) and PLANLAB_FILE in str(err.value)


def test_only_prefill_file(tmp_path):
    _npz(tmp_path / "prefill_raw_data.npz", PREFILL)
    with pytest.raises(ConfigError, match=r"decode_raw_data.\{npz,json\} not found"):
        load_profile(tmp_path)


def test_only_selected_decode(tmp_path):
    _npz(tmp_path / "selected_decode_interpolation" / "raw_data.npz", DECODE)
    with pytest.raises(ConfigError, match="selected_prefill_interpolation/raw_data.npz not found"):
        load_profile(tmp_path)


def test_corrupt_npz_names_the_file(tmp_path):
    _npz(tmp_path / "prefill_raw_data.npz", PREFILL)
    (tmp_path / "decode_raw_data.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError) as err:
        load_profile(tmp_path)
    assert err.value.source == str(tmp_path / "decode_raw_data.npz")


def test_invalid_json_names_file_and_line(tmp_path):
    _json(tmp_path / "prefill_raw_data.json", PREFILL)
    (tmp_path / "decode_raw_data.json").write_text('{\n "z_itl": [1, 2,\n}')
    with pytest.raises(ConfigError, match=r"decode_raw_data.json: invalid JSON at line 3"):
        load_profile(tmp_path)


def test_json_list_at_top_level(tmp_path):
    _json(tmp_path / "prefill_raw_data.json", PREFILL)
    (tmp_path / "decode_raw_data.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_profile(tmp_path)


@pytest.mark.parametrize("key", PREFILL_KEYS + DECODE_KEYS)
def test_missing_key_names_the_file_holding_it(tmp_path, key):
    pre, dec = dict(PREFILL), dict(DECODE)
    (pre if key in pre else dec).pop(key)
    _json(tmp_path / "prefill_raw_data.json", pre)
    _json(tmp_path / "decode_raw_data.json", dec)
    with pytest.raises(ConfigError) as err:
        load_profile(tmp_path)
    owner = "prefill_raw_data.json" if key in PREFILL_KEYS else "decode_raw_data.json"
    assert err.value.source == str(tmp_path / owner)
    assert err.value.key == key and "missing key" in str(err.value)


def test_nan_in_json_names_file_key_and_index(tmp_path):
    _json(tmp_path / "prefill_raw_data.json", PREFILL)
    (tmp_path / "decode_raw_data.json").write_text(
        json.dumps(DECODE).replace("[5.0, 20.0, 40.0", "[5.0, NaN, 40.0")
    )
    with pytest.raises(ConfigError) as err:
        load_profile(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'decode_raw_data.json'}: z_itl: value nan at index 1 is not finite; "
        "expected a finite number"
    )


def test_non_monotone_isl_in_npz(tmp_path):
    _npz(tmp_path / "prefill_raw_data.npz", {**PREFILL, "prefill_isl": [100, 2100, 1100]})
    _npz(tmp_path / "decode_raw_data.npz", DECODE)
    with pytest.raises(ConfigError) as err:
        load_profile(tmp_path)
    assert err.value.source == str(tmp_path / "prefill_raw_data.npz")
    assert "strictly increasing" in str(err.value)


def test_empty_arrays(tmp_path):
    _json(tmp_path / "prefill_raw_data.json", PREFILL)
    _json(tmp_path / "decode_raw_data.json", {**DECODE, "x_kv_usage": []})
    with pytest.raises(ConfigError, match="x_kv_usage: array is empty"):
        load_profile(tmp_path)


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (lambda d: d.update(version=2), "version", "expected 1"),
        (lambda d: d.update(format="other"), "format", "expected 'planlab-profile'"),
        (lambda d: d["arrays"].pop("z_itl"), "arrays.z_itl", "missing key"),
        (lambda d: d["arrays"].update(extra=[1]), "arrays", "unknown key(s) extra"),
        (lambda d: d.update(arrays=[1]), "arrays", "expected an object"),
        (
            lambda d: d["metadata"].update(kv_bytes_per_token=-1),
            "metadata.kv_bytes_per_token",
            "positive number",
        ),
        (lambda d: d["arrays"].update(max_kv_tokens=0), "arrays.max_kv_tokens", "positive"),
    ],
)
def test_bad_planlab_files(tmp_path, edit, key, words):
    prof = resolve_model(ModelSpec(analytic=AnalyticSpec("qwen3-0.6b", "l40s")))
    target = write_profile(prof, tmp_path)
    doc = json.loads(target.read_text())
    edit(doc)
    target.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_profile(tmp_path)
    assert err.value.source == str(target)
    assert err.value.key == key
    assert words in str(err.value)


def test_resolve_model_needs_one_source():
    with pytest.raises(ConfigError, match="model: neither profile nor analytic"):
        resolve_model(ModelSpec())


# -- the command -----------------------------------------------------------------------------


def test_cli_show_write_list(tmp_path, capsys):
    assert main(["profile", "write", "--analytic", "llama-3.1-8b", "--out", str(tmp_path)]) == 0
    assert (tmp_path / PLANLAB_FILE).is_file()
    capsys.readouterr()
    assert main(["profile", "show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "max_kv_tokens: 944,844" in out and "KV bytes/token: 131,072" in out
    assert "best decode tok/s/GPU" in out
    assert main(["profile", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("llama-3.1-70b", "qwen3-32b", "a100-80g", "b200", "l40s"):
        assert name in out


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["profile", "show", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["profile", "show", "--analytic", "llama-3.1-8b", "--gpu", "tpu"]) == 2
    assert "unknown GPU 'tpu'" in capsys.readouterr().err
    assert main(["profile", "show"]) == 2
