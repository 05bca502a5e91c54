"""One real Firestore emulator for the Firestore engine's tests (a JVM: starting one takes
seconds); each test uses collections of its own, and the restart tests restart it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from hastate.testing import firestore as firestore_emulator


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[firestore_emulator.FirestoreEmulator]:
    """A started emulator; FIRESTORE_EMULATOR_HOST points at it while the module runs."""
    reason = firestore_emulator.missing()
    if reason is not None:
        pytest.skip(f"firestore engine not tested: {reason}")
    workdir: Path = tmp_path_factory.mktemp("firestore-emulator")
    emu = firestore_emulator.FirestoreEmulator(workdir).start()
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
    try:
        yield emu
    finally:
        emu.stop()
        if saved is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved
