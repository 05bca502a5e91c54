"""hastate: replicated, leader-safe, disaster-recoverable state for trading bots."""

from hastate.config import ClusterConfig, load_config
from hastate.errors import (CacheLoadTimeout, ConfigError, ConflictError, CorruptDataError,
                            FailoverError, HAStateError, LeaseNotFoundError, LockHeldError,
                            LockLostError, NoQuorumError,
                            NotLeaderError, ReadError, SnapshotError, SnapshotNotFoundError,
                            WriteError, WriteTimeoutError)
from hastate.recipes.lease import Lease
from hastate.recipes.lock import Lock, LockGrant
from hastate.manager import StateManager

__all__ = [
    "CacheLoadTimeout",
    "ClusterConfig",
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
    "ReadError",
    "SnapshotError",
    "SnapshotNotFoundError",
    "StateManager",
    "WriteError",
    "WriteTimeoutError",
    "load_config",
]
