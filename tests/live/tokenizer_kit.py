"""Hugging Face tokenizer directories built here with the `tokenizers` library (no hub):
a word-level one whose counts are easy to work out by hand, and a byte-level BPE trained
on generated text for clients (aiperf) that sample and decode real token sequences."""

from __future__ import annotations

import json
from pathlib import Path

# <s> first, then one role marker per message: "<|role|>\n" content "</s>\n"; the
# generation prompt "<|assistant|>\n" last.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIALS = ["[UNK]", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
WORDS = "the quick brown fox jumps over a lazy dog hello world".split()


def _write_config(directory: Path, tokenizer) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "[UNK]",
        "pad_token": "</s>",
        "model_max_length": 1_000_000,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return directory


def word_tokenizer(directory: Path) -> Path:
    """One token per word of WORDS (else [UNK]) and per punctuation run; the specials
    are single tokens; a completion prompt gets <s> in front."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate([*SPECIALS, *WORDS, ",", "."])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return _write_config(directory, tok)


def bpe_tokenizer(directory: Path, vocab_size: int = 2000) -> Path:
    """A byte-level BPE trained on generated English-like text: every string encodes, and
    the emulator's output token " tok" is one token (as in the usual tokenizers)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(3)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = ["".join(rng.choices(letters[:18], k=rng.randint(2, 8))) for _ in range(3000)]
    lines = [" ".join(rng.choices(words, k=20)) + "." for _ in range(3000)]
    lines += [" tok" * 20] * 200  # the emulator's output token: one token here too
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    return _write_config(directory, tok)
