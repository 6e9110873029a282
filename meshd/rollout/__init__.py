"""Rollouts: automated canaries with SLO analysis. Every meshd counts its egress traffic on
routes under rollout (`stats`); one elected meshd per rollout analyses each step and moves
the route's weights on, promotes or rolls back (`controller`)."""
from meshd.rollout.controller import Controller, host_audit
from meshd.rollout.state import RolloutCache
from meshd.rollout.stats import RolloutStats

__all__ = ["Controller", "RolloutCache", "RolloutStats", "host_audit"]
