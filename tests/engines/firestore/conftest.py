"""One real Firestore emulator for the Firestore engine's tests (a JVM: starting one takes
seconds); each test uses collections of its own, and the restart tests restart it."""

from __future__ import annotations

from typing import Iterator

import pytest

from hastate.testing import firestore as firestore_emulator


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[firestore_emulator.FirestoreEmulator]:
    """A started emulator; FIRESTORE_EMULATOR_HOST points at it while the session runs."""
    with firestore_emulator.running(tmp_path_factory.mktemp("firestore")) as started:
        yield started
