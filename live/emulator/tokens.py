"""Prompt token counting from a local Hugging Face tokenizer directory, chat template included.

A directory as `save_pretrained` writes it: `tokenizer.json` (read with the `tokenizers`
library, no `transformers` needed) and `tokenizer_config.json`, whose `chat_template`
(or a `chat_template.jinja` file beside it) is rendered with jinja2 the way Hugging Face
renders chat templates: a sandboxed environment with trim_blocks and lstrip_blocks, the
`raise_exception` and `strftime_now` globals, a `tojson` filter, the special tokens and
`add_generation_prompt=True` as variables (transformers' `apply_chat_template`, see its
chat_template_utils.py). As vLLM counts them, a chat prompt is the rendered template
encoded without adding special tokens (the template writes its own BOS), a completion
prompt is the text encoded with them.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from planner.errors import ConfigError

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'planlab[tokenizer]'"


class TemplateError(ValueError):
    """The chat template refused these messages (its raise_exception, or a render error)."""


def _special(config: dict, key: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):  # an AddedToken written out: {"content": "<s>", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template_source(directory: Path, config: dict) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        return template
    side = directory / "chat_template.jinja"
    if side.is_file():
        return side.read_text(encoding="utf-8")
    return None


class PromptCounter:
    """Counts input tokens of chat messages and completion prompts with one tokenizer."""

    def __init__(self, directory: str | Path):
        try:
            import jinja2.sandbox
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                f"counting tokens with a tokenizer needs the tokenizer extra ({EXTRA_HINT}): {exc}",
                key="--tokenizer",
            ) from None
        self.directory = Path(directory)
        path = self.directory / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(
                f"no tokenizer.json in {self.directory} (expected a Hugging Face tokenizer "
                "directory as save_pretrained writes it)",
                key="--tokenizer",
            )
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library's own parse error, whatever its type
            raise ConfigError(f"{path} is not a tokenizer: {exc}", key="--tokenizer") from None
        config: dict = {}
        config_path = self.directory / "tokenizer_config.json"
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"{config_path} is not valid JSON: {exc}", key="--tokenizer"
                ) from None
        self.special = {
            k: _special(config, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
        }
        source = _template_source(self.directory, config)
        self._template = None
        if source is None:
            log.warning(
                "%s has no chat template: chat prompts are counted as their messages' "
                "text joined, without template tokens",
                self.directory,
            )
        else:
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            try:
                self._template = env.from_string(source)
            except jinja2.TemplateError as exc:
                raise ConfigError(
                    f"the chat template of {self.directory} does not compile: {exc}",
                    key="--tokenizer",
                ) from None
        self._jinja_error = jinja2.TemplateError

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def render(self, messages: list[dict]) -> str:
        """The chat prompt the model would see (the template, generation prompt added)."""
        if self._template is None:
            return "\n".join(str(m.get("content") or "") for m in messages)
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=True, tools=None, **self.special
            )
        except TemplateError:
            raise
        except self._jinja_error as exc:
            raise TemplateError(f"the chat template failed: {exc}") from None

    def count_chat(self, messages: list[dict]) -> int:
        return len(self._tok.encode(self.render(messages), add_special_tokens=False).ids)

    def count_text(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=True).ids)


def _raise(message: str):
    raise TemplateError(message)


def _tojson(value, indent=None, ensure_ascii=False, separators=None, sort_keys=False) -> str:
    return json.dumps(
        value, indent=indent, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys
    )
