"""The ``eventsourcing`` library's own recorder and factory test cases, on a real cluster.

One three-node cluster for the module (instance-1 embedded, two node processes); every
recorder the library's test cases create gets a fresh namespace, so each starts empty.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'hastate[eventsourcing]'")

from eventsourcing.persistence import (ApplicationRecorder, ProcessRecorder,  # noqa: E402
                                       TrackingRecorder)
from eventsourcing.tests.persistence import (AggregateRecorderTestCase,  # noqa: E402
                                             ApplicationRecorderTestCase,
                                             InfrastructureFactoryTestCase,
                                             ProcessRecorderTestCase, TrackingRecorderTestCase)
from eventsourcing.utils import Environment  # noqa: E402

import hastate.eventsourcing as hes  # noqa: E402
from hastate.testing.embedded import EmbeddedCluster  # noqa: E402

_names = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    root: Path = tmp_path_factory.mktemp("es")
    with EmbeddedCluster(root, 3, name="es").running(http=False) as running:
        assert running.sm is not None
        hes.bind(running.sm)
        yield running
    hes.bind(None)


def _backend() -> hes.Backend:
    assert hes._bound is not None
    return hes._bound


def _namespace() -> str:
    return f"es-test/{os.getpid()}/{next(_names)}"


class TestAggregateRecorder(AggregateRecorderTestCase):
    def create_recorder(self) -> hes.HastateAggregateRecorder:
        return hes.HastateAggregateRecorder(_backend(), _namespace())


class TestApplicationRecorder(ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        return hes.HastateApplicationRecorder(_backend(), _namespace())

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return hes.HastateTrackingRecorder(_backend(), _namespace())


class TestProcessRecorder(ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return hes.HastateProcessRecorder(_backend(), _namespace())


class _TrackingSubclass(hes.HastateTrackingRecorder):
    pass


class TestFactory(InfrastructureFactoryTestCase[hes.Factory]):
    def setUp(self) -> None:
        self.env = Environment("TestCase", {"PERSISTENCE_MODULE": "hastate.eventsourcing",
                                            "HASTATE_NAMESPACE": _namespace()})
        super().setUp()

    def expected_factory_class(self) -> type[hes.Factory]:
        return hes.Factory

    def expected_aggregate_recorder_class(self) -> type:
        return hes.HastateAggregateRecorder

    def expected_application_recorder_class(self) -> type:
        return hes.HastateApplicationRecorder

    def expected_tracking_recorder_class(self) -> type:
        return hes.HastateTrackingRecorder

    def tracking_recorder_subclass(self) -> type:
        return _TrackingSubclass

    def expected_process_recorder_class(self) -> type:
        return hes.HastateProcessRecorder


del AggregateRecorderTestCase, ApplicationRecorderTestCase, TrackingRecorderTestCase
del ProcessRecorderTestCase, InfrastructureFactoryTestCase
