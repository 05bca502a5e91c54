"""A bot process on a Firestore-backed cluster: it writes one key after another and
records each write the engine acknowledged.

``python firestore_bot_main.py CONFIG INSTANCE ACKS``: writes ``w/<INSTANCE>/<n>`` = n for
n = 0, 1, ... and appends ``n`` to ACKS after each acknowledged write (a failed write is
logged to stderr and retried as the next n). HASTATE_LEASE_TRACE, when set, makes the
engine log its leader-lease intervals there.
"""

from __future__ import annotations

import itertools
import sys
import time
import traceback


def main() -> None:
    from hastate import StateManager

    config, instance, acks = sys.argv[1:4]
    sm = StateManager.from_config(config, instance, serve_http=False, write_timeout=10.0)
    sm.start()
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
