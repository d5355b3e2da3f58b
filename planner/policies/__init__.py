"""Scaling policies, each registered by name in planner.policies.base.POLICIES; this
package fills the registry (planner.policies.all) and builds a policy by name."""

from __future__ import annotations

import difflib
from typing import Any

import planner.policies.all  # noqa: F401  (fills the registry)
from planner.errors import ConfigError
from planner.policies.base import POLICIES, POLICY_OPTIONS, Policy
from planner.profile import PerfProfile
from planner.types import PlannerConfig

__all__ = ["POLICIES", "Policy", "check_options", "make_policy", "policy_names"]


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


def check_options(options: Any) -> None:
    """ConfigError for a `planner.options` key that no policy reads (a typo would
    otherwise do nothing), naming the key and the options each policy knows."""
    known = {key for keys in POLICY_OPTIONS.values() for key in keys}
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            listing = "; ".join(
                f"{name}: {', '.join(keys)}"
                for name, keys in sorted(POLICY_OPTIONS.items())
                if keys
            )
            raise ConfigError(
                f"unknown option {key!r}; {hint}no policy reads it (known options, by policy: "
                f"{listing})",
                key=f"planner.options.{key}",
            )
