"""One planner tick, shared by the simulator and the live driver: window statistics and
replica state in, a DecisionRecord out. The caller applies the target and marks it."""

from __future__ import annotations

import dataclasses

from planner.observation import WindowStats, build_observation
from planner.policies.base import Policy
from planner.types import DecisionRecord, PlannerConfig, ReplicaState


class PlannerLoop:
    """Holds a policy and its config; `tick` is pure given the policy's own history."""

    def __init__(self, policy: Policy, cfg: PlannerConfig):
        self.policy = policy
        self.cfg = cfg
        self.ticks = 0

    def tick(self, stats: WindowStats, state: ReplicaState, now_s: float) -> DecisionRecord:
        obs = build_observation(stats)
        decision = self.policy.decide(obs, state, now_s)
        self.ticks += 1
        note = state.external_change
        return DecisionRecord(
            t_s=now_s,
            policy=self.cfg.policy,
            observation=obs,
            decision=decision,
            current=state,
            applied=False,
            note=note,
        )

    @staticmethod
    def mark_applied(
        record: DecisionRecord, applied: bool, note: str | None = None
    ) -> DecisionRecord:
        """The record with `applied` set by the caller after it asked its connector to scale."""
        notes = "; ".join(n for n in (record.note, note) if n) or None
        return dataclasses.replace(record, applied=applied, note=notes)
