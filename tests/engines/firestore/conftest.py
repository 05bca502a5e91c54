"""One real Firestore emulator for the Firestore engine's tests (a JVM: starting one takes
seconds); each test uses collections of its own, and the restart tests restart it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from hastate import StateManager
from hastate.testing import firestore as firestore_emulator


@contextlib.contextmanager
def started(config: Path, ids: Iterable[str], **options: Any) -> Iterator[dict[str, StateManager]]:
    """A started manager (no HTTP) per instance id of ``config``; all stopped on exit."""
    managers = {i: StateManager.from_config(config, i, serve_http=False, **options)
                for i in ids}
    with contextlib.ExitStack() as stack:
        for sm in managers.values():
            stack.enter_context(sm)
        yield managers


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[firestore_emulator.FirestoreEmulator]:
    """A started emulator; FIRESTORE_EMULATOR_HOST points at it while the session runs."""
    with firestore_emulator.running(tmp_path_factory.mktemp("firestore")) as started:
        yield started
