"""hastate: replicated, leader-safe, disaster-recoverable state for trading bots."""

from hastate.config import ClusterConfig, load_config
from hastate.errors import (CacheLoadTimeout, CompactedError, ConfigError, ConflictError,
                            CorruptDataError, FailoverError, HAStateError, LeaseNotFoundError,
                            LockHeldError, LockLostError, NoQuorumError, NotLeaderError,
                            OverloadedError, ReadError, SnapshotError, SnapshotNotFoundError,
                            TxnError, WatchCancelledError, WatchError, WatchOverflowError,
                            WriteError, WriteTimeoutError)
from hastate.manager import StateManager
from hastate.recipes.lease import Lease
from hastate.recipes.lock import Lock, LockGrant

__all__ = [
    "CacheLoadTimeout",
    "ClusterConfig",
    "CompactedError",
    "ConfigError",
    "ConflictError",
    "CorruptDataError",
    "FailoverError",
    "HAStateError",
    "Lease",
    "LeaseNotFoundError",
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
