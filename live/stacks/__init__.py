"""Real serving stacks on this machine, one module per stack (`live.stacks.<name>`).

Each module offers `start_stack(scenario, workdir, **options)`, a context manager that
starts the stack, waits until it serves, and yields a handle with at least `frontend_url`,
`prometheus_url`, `connector` (the planner's Connector port), `model` and `close()`;
leaving the block stops every process it started, by PID.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from planner.errors import ConfigError

STACKS = ("dynamo", "vllm")


class StackError(RuntimeError):
    """A stack did not come up (a process exited, a timeout passed); the message says
    which, and where its logs are."""


def load_stack(name: str) -> ModuleType:
    """The module live.stacks.<name>; ConfigError naming the known stacks otherwise."""
    if name not in STACKS:
        raise ConfigError(
            f"unknown stack {name!r}; expected one of {', '.join(STACKS)}", key="--stack"
        )
    try:
        return importlib.import_module(f"live.stacks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"live.stacks.{name}":
            raise ConfigError(
                f"the {name} stack is not part of this build", key="--stack"
            ) from None
        raise
