"""The state machine as PySyncObj sees it: one replicated method that applies a command.

``state/machine.py`` knows nothing of PySyncObj; this adapter gives it the
``SyncObjConsumer`` shape PySyncObj requires. Its one ``@replicated`` method keeps the name
``apply`` and version 0, so the method id in existing logs is unchanged.
"""

from __future__ import annotations

from typing import Any, Protocol

from pysyncobj import SyncObjConsumer, replicated
from pysyncobj import pickle as pysyncobj_pickle

_REGULAR = 0  # PySyncObj's command type of a replicated call


class AppliesCommands(Protocol):
    """What the adapter needs from a state machine (``ReplicatedState`` has it)."""

    def apply_at(self, index: int, raw: bytes) -> Any:
        """Apply an encoded command at log ``index``; deterministic, no clock or I/O."""


class MachineConsumer(SyncObjConsumer):
    """Routes PySyncObj's applied entries to a state machine's ``apply_at``."""

    def __init__(self, machine: AppliesCommands) -> None:
        super().__init__()
        self.machine = machine

    @replicated
    def apply(self, raw: bytes) -> Any:
        """Apply one encoded command at the next log index; return its result."""
        return self.machine.apply_at(self._syncObj.raftLastApplied + 1, raw)

    def call_bytes(self, raw: bytes) -> bytes:
        """The PySyncObj command that calls :meth:`apply` with ``raw``, exactly as the
        ``@replicated`` wrapper builds it (so the proposal grouping can queue it itself)."""
        so = self._syncObj
        name = so._getFuncName((id(self), "apply"))
        call = (so._methodToID[(id(self), name)], (raw,))
        return bytes((_REGULAR,)) + pysyncobj_pickle.dumps(call)
