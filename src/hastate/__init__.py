"""hastate: replicated, leader-safe, disaster-recoverable state for trading bots."""

from hastate.config import ClusterConfig, load_config
from hastate.errors import (ConfigError, ConflictError, CorruptDataError, FailoverError,
                            HAStateError, LockHeldError, LockLostError, NoQuorumError,
                            NotLeaderError, OverloadedError, ReadError, SnapshotError,
                            SnapshotNotFoundError, WriteError, WriteTimeoutError)
from hastate.recipes.lock import Lock, LockGrant
from hastate.manager import StateManager

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "ConflictError",
    "CorruptDataError",
    "FailoverError",
    "HAStateError",
    "Lock",
    "LockGrant",
    "LockHeldError",
    "LockLostError",
    "NoQuorumError",
    "NotLeaderError",
    "OverloadedError",
    "ReadError",
    "SnapshotError",
    "SnapshotNotFoundError",
    "StateManager",
    "WriteError",
    "WriteTimeoutError",
    "load_config",
]
