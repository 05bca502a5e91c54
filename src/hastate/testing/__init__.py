"""Helpers for running real local clusters (tests, demo, benchmarks)."""

from hastate.testing.cluster import LocalCluster, free_port

__all__ = ["LocalCluster", "free_port"]
