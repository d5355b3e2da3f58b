"""The Policy interface, the policy registry, and the clamps every policy shares
(minimum replicas, maximum replicas, GPU budget)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from planner.errors import ConfigError, number_in
from planner.observation import Observation
from planner.types import Decision, PlannerConfig, ReplicaState

if TYPE_CHECKING:
    pass


class Policy(Protocol):
    name: str

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        """The target replicas for the next interval. Deterministic given the inputs
        and the policy's own history (predictor state, past decisions)."""
        ...


PolicyFactory = Callable[..., Policy]
POLICIES: dict[str, PolicyFactory] = {}


# The `planner.options` keys each policy reads; a key no policy reads is a typo (an error),
# a key another policy reads is left alone (one scenario's options serve every policy that
# `planlab compare` runs).
POLICY_OPTIONS: dict[str, tuple[str, ...]] = {}


def register(name: str, options: Iterable[str] = ()) -> Callable[[PolicyFactory], PolicyFactory]:
    def deco(factory: PolicyFactory) -> PolicyFactory:
        POLICIES[name] = factory
        POLICY_OPTIONS[name] = tuple(options)
        return factory

    return deco


# (lo, hi, lo_open, hi_open) of a numeric policy option; unlisted options must be >= 0.
Bounds = tuple[float, float, bool, bool]
NON_NEGATIVE: Bounds = (0.0, math.inf, False, False)


def numeric_options(
    cfg: PlannerConfig, defaults: dict[str, float], bounds: dict[str, Bounds] | None = None
) -> dict[str, float]:
    """The policy's numeric options (`planner.options`), defaults where absent, each
    checked against its bounds: bad input is a ConfigError naming the key, not a
    traceback or a division by zero ticks later. Keys the policy does not know are left
    alone (one scenario's options serve every policy `planlab compare` runs)."""
    out = {}
    for key, default in defaults.items():
        lo, hi, lo_open, hi_open = (bounds or {}).get(key, NON_NEGATIVE)
        out[key] = number_in(
            cfg.option(key, default),
            f"planner.options.{key}",
            lo=lo,
            hi=hi,
            lo_open=lo_open,
            hi_open=hi_open,
        )
    return out


def validate_budget(cfg: PlannerConfig) -> None:
    """A budget that cannot hold the minimum of both roles is a config error, not 0 replicas."""
    if cfg.max_gpu_budget is None:
        return
    floor_gpus = cfg.min_replicas * (cfg.gpus_per_prefill + cfg.gpus_per_decode)
    if cfg.max_gpu_budget < floor_gpus:
        raise ConfigError(
            f"max_gpu_budget {cfg.max_gpu_budget} is below the {floor_gpus} GPUs that "
            f"min_replicas={cfg.min_replicas} prefill ({cfg.gpus_per_prefill} GPU each) and "
            f"decode ({cfg.gpus_per_decode} GPU each) need; expected at least {floor_gpus}",
            key="planner.max_gpu_budget",
        )


def clamp_min_max(p: int, d: int, cfg: PlannerConfig) -> tuple[int, int]:
    p, d = max(cfg.min_replicas, p), max(cfg.min_replicas, d)
    if cfg.max_replicas is not None:
        p, d = min(p, cfg.max_replicas), min(d, cfg.max_replicas)
    return p, d


def apply_budget(p: int, d: int, cfg: PlannerConfig) -> tuple[int, int, str | None]:
    """Dynamo's budget rule: scale both roles by B/total, prefill first, decode takes the rest.

    Returns (prefill, decode, note) where note is None when the budget did not bind.
    """
    budget = cfg.max_gpu_budget
    gp, gd, lo = cfg.gpus_per_prefill, cfg.gpus_per_decode, cfg.min_replicas
    total = p * gp + d * gd
    if budget is None or total <= budget:
        return p, d, None
    s = budget / total
    new_p = max(lo, min((budget - lo * gd) // gp, math.floor(p * s)))
    new_d = max(lo, (budget - new_p * gp) // gd)
    note = (
        f"GPU budget {budget} < {total} wanted ({p}P x{gp} + {d}D x{gd}): "
        f"scale {s:.3f} -> {new_p}P + {new_d}D"
    )
    return int(new_p), int(new_d), note


def hold(state: ReplicaState, cfg: PlannerConfig, rule: str, reason: str) -> Decision:
    """Keep the current desired size (within min/max and the budget): the rule every
    policy applies when it cannot decide (missing metrics, no forecast yet)."""
    p, d = clamp_min_max(state.prefill.desired, state.decode.desired, cfg)
    p, d, _ = apply_budget(p, d, cfg)
    return Decision(prefill=p, decode=d, rule=rule, reason=reason)
