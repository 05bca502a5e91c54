"""The listening socket of the Raft transport, on PySyncObj's poller."""

from __future__ import annotations

import logging
import socket
from typing import Callable

from pysyncobj.poller import POLL_EVENT_TYPE, Poller

logger = logging.getLogger(__name__)


class SecureServer:
    """The listening socket, on PySyncObj's poller; hands accepted sockets to ``on_accept``."""

    def __init__(self, poller: Poller, host: str, port: int,
                 on_accept: Callable[[socket.socket, str], None]) -> None:
        self._poller = poller
        self._host = host
        self._port = port
        self._on_accept = on_accept
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        """Bind and listen; raises OSError (PySyncObj retries every ``bindRetryTime``)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._poller.subscribe(sock.fileno(), self._on_event,
                               POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)
        logger.info("Raft transport listening on %s:%d", self._host, self._port)

    def unbind(self) -> None:
        """Stop listening."""
        if self._sock is not None:
            self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_event(self, fd: int, events: int) -> None:
        if events & POLL_EVENT_TYPE.ERROR:
            logger.error("Raft listening socket %s:%d failed; no longer accepting",
                         self._host, self._port)
            self.unbind()
            return
        while self._sock is not None:
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("accepting a Raft connection failed: %s", exc)
                return
            self._on_accept(sock, f"{address[0]}:{address[1]}")
