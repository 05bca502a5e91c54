"""The leader trims what the engine no longer needs: change-log documents older than
``change_log_retention`` revisions, and dedup documents past their retry window."""

from __future__ import annotations

import time

from google.cloud.firestore_v1.base_query import FieldFilter

from hastate.engines.firestore.store import MAX_WRITES, Store


def trim(store: Store, revision: int, retention: int) -> int:
    """Delete change documents at or below ``revision - retention`` and expired dedup
    documents, one batch of each per call; returns how many were deleted."""
    deleted = 0
    floor = revision - retention
    queries = [store.changes.where(filter=FieldFilter("revision", "<=", floor))] \
        if floor > 0 else []
    queries.append(store.clients.where(filter=FieldFilter("expire_at", "<", time.time())))
    for query in queries:
        docs = list(query.limit(MAX_WRITES).select([]).stream())
        store.costs.read("trim", len(docs))
        if not docs:
            continue
        batch = store.client.batch()
        for snap in docs:
            batch.delete(snap.reference)
        batch.commit()
        store.costs.write("trim", len(docs))
        deleted += len(docs)
    return deleted
