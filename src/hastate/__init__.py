"""hastate: replicated, leader-safe, disaster-recoverable state for trading bots."""

from hastate.config import ClusterConfig, load_config
from hastate.errors import (CompactedError, ConfigError, ConflictError, CorruptDataError,
                            FailoverError, HAStateError, LockHeldError, LockLostError,
                            NoQuorumError, NotLeaderError, OverloadedError, ReadError,
                            SnapshotError, SnapshotNotFoundError, TxnError,
                            WatchCancelledError, WatchError, WatchOverflowError, WriteError,
                            WriteTimeoutError)
from hastate.manager import StateManager
from hastate.recipes.lock import Lock, LockGrant

__all__ = [
    "ClusterConfig",
    "CompactedError",
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
    "TxnError",
    "WatchCancelledError",
    "WatchError",
    "WatchOverflowError",
    "WriteError",
    "WriteTimeoutError",
    "load_config",
]
