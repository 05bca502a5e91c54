"""The ``eventsourcing`` library's own recorder and factory test cases, on a real cluster.

One three-node cluster for the module (instance-1 embedded, two node processes); every
recorder the library's test cases create gets a fresh namespace, so each starts empty.

Notification ids are global positions: strictly increasing in commit order, with gaps.
The library's cases say so with ``EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False`` (as for
stores numbering by commit position); its ``test_insert_select`` still asserts the ids
``[1, 2]`` and ``[3]`` unconditionally, so it runs here with the ids the inserts returned,
every other assertion kept; its non-interleaving case checks that concurrent inserts are
not interleaved in the sequence.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'hastate[eventsourcing]'")

from eventsourcing.persistence import (ApplicationRecorder, IntegrityError,  # noqa: E402
                                       ProcessRecorder, StoredEvent, TrackingRecorder)
from eventsourcing.tests.persistence import (AggregateRecorderTestCase,  # noqa: E402
                                             ApplicationRecorderTestCase,
                                             InfrastructureFactoryTestCase,
                                             NonInterleavingNotificationIDsBaseCase,
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
    EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False

    def create_recorder(self) -> ApplicationRecorder:
        return hes.HastateApplicationRecorder(_backend(), _namespace())

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    def test_insert_select(self) -> None:
        """The library's insert/select script with the ids the inserts returned."""
        recorder = self.create_recorder()
        self.assertEqual(len(recorder.select_notifications(start=None, limit=3)), 0)
        self.assertEqual(len(recorder.select_notifications(None, 3, topics=["topic1"])), 0)
        self.assertIsNone(recorder.max_notification_id())
        o1, o2 = self.new_originator_id(), self.new_originator_id()
        e1 = StoredEvent(o1, self.INITIAL_VERSION, "topic1", b"state1")
        e2 = StoredEvent(o1, self.INITIAL_VERSION + 1, "topic2", b"state2")
        e3 = StoredEvent(o2, self.INITIAL_VERSION, "topic3", b"state3")
        n1, n2 = recorder.insert_events([e1, e2])
        [n3] = recorder.insert_events([e3])
        self.assertTrue(0 < n1 < n2 < n3, (n1, n2, n3))
        self.assertEqual(len(recorder.select_events(o1)), 2)
        self.assertEqual(len(recorder.select_events(o2)), 1)
        with self.assertRaises(IntegrityError):
            recorder.insert_events([e3])

        def ids(*args: object, **kwargs: object) -> list[int]:
            return [n.id for n in recorder.select_notifications(*args, **kwargs)]

        everything = recorder.select_notifications(start=None, limit=10)
        self.assertEqual([(n.id, n.originator_id, n.topic, n.state) for n in everything],
                         [(n1, o1, "topic1", b"state1"), (n2, o1, "topic2", b"state2"),
                          (n3, o2, "topic3", b"state3")])
        self.assertEqual(ids(start=n1, limit=10), [n1, n2, n3])
        self.assertEqual(ids(start=None, stop=n2, limit=10), [n1, n2])
        self.assertEqual(ids(start=n1, limit=10, inclusive_of_start=False), [n2, n3])
        self.assertEqual(ids(start=n2, limit=10, inclusive_of_start=False), [n3])
        self.assertEqual(ids(start=None, limit=10, topics=["topic1", "topic2", "topic3"]),
                         [n1, n2, n3])
        self.assertEqual(ids(n1, 10, topics=["topic1"]), [n1])
        self.assertEqual(ids(n1, 3, topics=["topic2"]), [n2])
        self.assertEqual(ids(n1, 3, topics=["topic3"]), [n3])
        self.assertEqual(ids(n1, 3, topics=["topic1", "topic3"]), [n1, n3])
        self.assertEqual(recorder.max_notification_id(), n3)
        self.assertEqual(ids(None, 1), [n1])
        self.assertEqual(ids(n2, 1), [n2])
        self.assertEqual(ids(n1, 1, inclusive_of_start=False), [n2])
        self.assertEqual(ids(n2, 2), [n2, n3])
        self.assertEqual(ids(n3, 1), [n3])
        self.assertEqual(ids(n3, 1, inclusive_of_start=False), [])
        self.assertEqual(ids(start=n2, limit=10, stop=n2), [n2])
        self.assertEqual(ids(start=n1, limit=10, stop=n2), [n1, n2])
        self.assertEqual(ids(start=n1, limit=10, stop=n2, inclusive_of_start=False), [n2])


class TestNonInterleavingNotificationIds(NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return hes.HastateApplicationRecorder(_backend(), _namespace())


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
del ProcessRecorderTestCase, InfrastructureFactoryTestCase, NonInterleavingNotificationIDsBaseCase
