"""A bot process on a Firestore-backed cluster: it writes one key after another and
records each write the engine acknowledged.

``python firestore_bot_main.py CONFIG INSTANCE ACKS``: first puts ``held/<INSTANCE>`` under
a lease of :data:`LEASE_TTL` seconds kept alive in the background, then writes
``w/<INSTANCE>/<n>`` = n for n = 0, 1, ... and appends ``n`` to ACKS after each
acknowledged write (a failed write is logged to stderr and retried as the next n). HASTATE_LEASE_TRACE, when set, makes the
engine's leadership log its lease intervals there.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import traceback

#: Well above the seconds a write contending on the emulator can take.
LEASE_TTL = 10.0


def main() -> None:
    from hastate import StateManager
    from hastate.testing.lease_trace import ENV as LEASE_TRACE_ENV

    config, instance, acks = sys.argv[1:4]
    sm = StateManager.from_config(config, instance, serve_http=False, write_timeout=10.0)
    if os.environ.get(LEASE_TRACE_ENV):
        sm.engine.leadership.trace_to(os.environ[LEASE_TRACE_ENV])
    sm.start()
    while True:
        try:
            lease = sm.grant_lease(LEASE_TTL).keep_alive_in_background()
            sm.save_state({f"held/{instance}": 1}, lease=lease)
            break
        except Exception:
            traceback.print_exc()
    with open(acks, "a", buffering=1) as out:
        for n in itertools.count():
            try:
                sm.save_state({f"w/{instance}/{n}": n})
            except Exception:
                traceback.print_exc()
                time.sleep(0.2)
                continue
            out.write(f"{n}\n")
            time.sleep(0.2)


if __name__ == "__main__":
    main()
