"""A bot process that embeds its node the seed's way and does nothing else until SIGTERM.

``python embedded_bot_main.py ID`` with ``HASTATE_CONFIG`` set: no ``hastate node run``;
the manager serves the node's HTTP endpoints and stops at interpreter exit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from hastate import StateManager, load_config


def main() -> None:
    node_id = sys.argv[1]
    config = load_config(os.environ["HASTATE_CONFIG"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state_manager = StateManager(project_id=config.name, instance_id=node_id,
                                 region=config.node(node_id).region)
    state_manager.save_state({f"hello-{node_id}": node_id})
    stop.wait()


if __name__ == "__main__":
    main()
