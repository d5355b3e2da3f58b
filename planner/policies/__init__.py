"""Scaling policies, each registered by name in planner.policies.base.POLICIES."""

from planner.policies.base import POLICIES, Policy, make_policy

__all__ = ["POLICIES", "Policy", "make_policy"]
