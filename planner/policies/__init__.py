"""Scaling policies, each registered by name in planner.policies.base.POLICIES; this
package fills the registry (planner.policies.all) and builds a policy by name."""

from __future__ import annotations

from typing import Any

import planner.policies.all  # noqa: F401  (fills the registry)
from planner.errors import ConfigError
from planner.policies.base import POLICIES, Policy
from planner.profile import PerfProfile
from planner.types import PlannerConfig

__all__ = ["POLICIES", "Policy", "make_policy", "policy_names"]


def policy_names() -> list[str]:
    return sorted(POLICIES)


def make_policy(cfg: PlannerConfig, profile: PerfProfile, **extra: Any) -> Policy:
    """Build the policy cfg.policy names. `extra` carries what only some policies take
    (the oracle's future workload)."""
    if cfg.policy not in POLICIES:
        raise ConfigError(
            f"unknown policy {cfg.policy!r}; expected one of {', '.join(policy_names())}",
            key="planner.policy",
        )
    return POLICIES[cfg.policy](cfg, profile, **extra)
