"""The tiny model directory: deterministic, cached, never written over, and loadable by
transformers (tokenizer with its chat template, config, weights) as vLLM loads it."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("tokenizers", reason="needs the vllm extra: pip install 'planlab[vllm]'")
pytest.importorskip("safetensors", reason="needs the vllm extra: pip install 'planlab[vllm]'")

from live.stacks.tinymodel import SPEC_FILE, TinyModelSpec, build_tiny_model  # noqa: E402


def _digests(directory):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_two_builds_are_byte_identical(built, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    assert _digests(again) == _digests(built)
    assert set(_digests(built)) >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        SPEC_FILE,
    }


def test_a_second_call_reuses_the_build_and_other_directories_are_refused(built, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in built.iterdir()}
    assert build_tiny_model(built) == built
    assert {p.name: p.stat().st_mtime_ns for p in built.iterdir()} == before
    # Another spec in the same directory: refused, nothing rewritten.
    with pytest.raises(ValueError, match="another spec"):
        build_tiny_model(built, TinyModelSpec(num_hidden_layers=3))
    # A directory of the user's: refused and left as it was, no temporary sibling left.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a tiny-model build"):
        build_tiny_model(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_config_and_weights_have_the_spec_shapes(built):
    from safetensors.numpy import load_file

    spec = TinyModelSpec()
    cfg = json.loads((built / "config.json").read_text())
    assert cfg["hidden_size"] == 256 and cfg["num_hidden_layers"] == 2
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    w = load_file(str(built / "model.safetensors"))
    assert w["model.embed_tokens.weight"].shape == (cfg["vocab_size"], 256)
    assert w["lm_head.weight"].shape == (cfg["vocab_size"], 256)
    assert w["model.layers.1.mlp.down_proj.weight"].shape == (256, spec.intermediate_size)
    assert "model.layers.2.mlp.down_proj.weight" not in w
    # 0.02-scaled normal weights: the sample standard deviation is close to 0.02.
    assert abs(float(w["model.layers.0.self_attn.q_proj.weight"].std()) - 0.02) < 0.001


def test_tokenizer_chat_template_and_every_token_decodes_to_text(built):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(built))
    cfg = json.loads((built / "config.json").read_text())
    assert len(tok) == cfg["vocab_size"]
    text = tok.apply_chat_template(
        [{"role": "user", "content": "ab12-7 the the"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<s><|user|>\nab12-7 the the<|end|>\n<|assistant|>\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # The load generator's filler: one token per "the " (plus at most one for the end).
    n = len(tok("the " * 300, add_special_tokens=False)["input_ids"])
    assert 300 <= n <= 301
    # A random token id (what a random-weight model samples) decodes to printable ASCII,
    # never to an empty string or a partial UTF-8 sequence.
    special = set(tok.all_special_ids)
    for i in range(len(tok)):
        if i not in special:
            s = tok.decode([i])
            assert s and all(c in "\n\t" or 32 <= ord(c) < 127 for c in s), (i, s)


def test_transformers_runs_the_model(built):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(built))
    ids = torch.tensor([[1, 5, 102, 116, 146]])
    with torch.no_grad():
        logits = model(ids).logits
    assert tuple(logits.shape) == (1, 5, model.config.vocab_size)
    assert bool(torch.isfinite(logits).all())
