"""Chaos-test harness: history recording, safety checkers, netns lab and TCP fault proxy."""
