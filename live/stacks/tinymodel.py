"""A tiny random-weight Llama and a byte-level BPE tokenizer trained here, written as a
Hugging Face model directory that vLLM serves: no weights or tokenizer from a hub.

The model is for timing and plumbing, not text: random weights produce random tokens.
The tokenizer's alphabet is the printable ASCII of its training text only (not the 256
byte symbols a byte-level BPE usually starts from), so every token decodes to whole
characters and a random token id never leaves a partial UTF-8 sequence that a server's
detokenizer would hold back (an empty stream chunk). Everything is deterministic: the
corpus is generated from a fixed seed, BPE training on one corpus gives one vocabulary,
and the weights come from numpy's PCG64 with a fixed seed.

    build_tiny_model(DIR) -> DIR   builds once; a later call with the same spec reuses it
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SPEC_FILE = "planlab-tinymodel.json"
EXTRA_HINT = "pip install 'planlab[vllm]'"

# A chat template in the Jinja dialect transformers and vLLM render.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "what will more if no out so said can who up about into them than some could time "
    "these two may then do first any my now such like our over man me even most made after "
    "also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know "
    "while last might us great old year off come since against go came right used take "
    "three token request prefill decode worker latency planner scale queue batch cache"
).split()


@dataclass(frozen=True)
class TinyModelSpec:
    """What the built model is; its hash names the build, so a changed spec rebuilds."""

    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 4096
    corpus_words: int = 60_000
    seed: int = 0
    format_version: int = 1

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _corpus(spec: TinyModelSpec) -> list[str]:
    """Training text: words with Zipf-like frequencies, numbers and all printable ASCII."""
    rng = np.random.default_rng(spec.seed)
    weights = 1.0 / np.arange(1, len(_WORDS) + 1)
    words = rng.choice(len(_WORDS), size=spec.corpus_words, p=weights / weights.sum())
    lines, line = [], []
    for i, w in enumerate(words):
        line.append(_WORDS[w])
        if i % 13 == 0:
            line.append(str(int(rng.integers(0, 10_000))))
        if len(line) >= 24:
            lines.append(" ".join(line) + ".")
            line = []
    lines.append("".join(chr(c) for c in range(32, 127)) + "\n\t")
    lines.extend(["\n".join(lines[i : i + 3]) for i in range(0, 300, 3)])
    # "the " repeated is what live.loadgen sends as a prompt: make " the" one token.
    lines.extend(["the " * 64] * 50)
    return lines


def _train_tokenizer(spec: TinyModelSpec):
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:
        raise ImportError(f"building the tiny model needs `tokenizers`: {EXTRA_HINT}") from exc
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=[],
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec), trainer=trainer)
    return tok


def _weights(spec: TinyModelSpec, vocab: int) -> dict[str, np.ndarray]:
    """Llama's tensor names (transformers' LlamaForCausalLM), small normal weights."""
    rng = np.random.default_rng(spec.seed + 1)
    h, f = spec.hidden_size, spec.intermediate_size
    head = h // spec.num_attention_heads
    kv = spec.num_key_value_heads * head

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    out = {"model.embed_tokens.weight": normal(vocab, h)}
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = normal(h, h)
        out[p + "self_attn.k_proj.weight"] = normal(kv, h)
        out[p + "self_attn.v_proj.weight"] = normal(kv, h)
        out[p + "self_attn.o_proj.weight"] = normal(h, h)
        out[p + "mlp.gate_proj.weight"] = normal(f, h)
        out[p + "mlp.up_proj.weight"] = normal(f, h)
        out[p + "mlp.down_proj.weight"] = normal(h, f)
        out[p + "input_layernorm.weight"] = np.ones(h, dtype=np.float32)
        out[p + "post_attention_layernorm.weight"] = np.ones(h, dtype=np.float32)
    out["model.norm.weight"] = np.ones(h, dtype=np.float32)
    out["lm_head.weight"] = normal(vocab, h)
    return out


def _config(spec: TinyModelSpec, vocab: int, ids: dict[str, int]) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.hidden_size // spec.num_attention_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
        "pad_token_id": ids["<unk>"],
    }


def _write(spec: TinyModelSpec, out: Path) -> None:
    try:
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise ImportError(f"building the tiny model needs `safetensors`: {EXTRA_HINT}") from exc
    tok = _train_tokenizer(spec)
    vocab = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tok.save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": spec.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE,
        "additional_special_tokens": list(SPECIAL_TOKENS[3:]),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}) + "\n"
    )
    (out / "config.json").write_text(json.dumps(_config(spec, vocab, ids), indent=2) + "\n")
    gen = {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "do_sample": True}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    save_file(_weights(spec, vocab), str(out / "model.safetensors"), metadata={"format": "pt"})


def build_tiny_model(directory: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Build the tiny model into `directory` (created) and return it.

    If `directory` already holds a build of the same spec (its SPEC_FILE says so) nothing
    is written. A directory that exists with anything else in it is refused (ValueError),
    never overwritten. The build goes to a temporary sibling first and is renamed into
    place complete, so an interrupted build leaves nothing half-written.
    """
    spec = spec or TinyModelSpec()
    directory = Path(directory)
    stamp = directory / SPEC_FILE
    if stamp.is_file():
        try:
            built = json.loads(stamp.read_text())
        except ValueError:
            built = {}
        if built.get("digest") == spec.digest():
            log.debug("tiny model %s already built (%s)", directory, spec.digest())
            return directory
        raise ValueError(f"{directory} holds a tiny model of another spec; use another directory")
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} exists and is not a tiny-model build; use another directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        _write(spec, tmp)
        (tmp / SPEC_FILE).write_text(
            json.dumps({"digest": spec.digest(), "spec": asdict(spec)}, indent=2) + "\n"
        )
        if directory.exists():
            directory.rmdir()  # empty, checked above
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built the tiny model in %s (%s)", directory, spec.digest())
    return directory


def default_model_dir() -> Path:
    """Where `start_stack` caches the tiny model: $PLANLAB_CACHE, else ~/.cache/planlab."""
    root = os.environ.get("PLANLAB_CACHE") or Path.home() / ".cache" / "planlab"
    return Path(root) / f"tiny-llama-{TinyModelSpec().digest()}"
