"""Engines: the replicated stores a :class:`~hastate.StateManager` can run on.

:mod:`hastate.engines.contract` says what every engine promises; :mod:`hastate.engines.raft`
is the embedded Raft cluster (the default).
"""
