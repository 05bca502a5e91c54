"""Helpers for running real local clusters (tests, demo, benchmarks)."""

from hastate.testing.cluster import LocalCluster, free_port
from hastate.testing.waiting import BackgroundWriter, wait_for

__all__ = ["BackgroundWriter", "LocalCluster", "free_port", "wait_for"]
