"""Userspace TCP proxy with per-link latency and faults, for loopback clusters.

``tc netem`` is not available on our machines, so "multi-region" latency and link
faults between node processes on loopback go through this proxy instead: each *link*
listens on its own loopback port and forwards to one target port. Point node A's
address for node B at the link's port and every byte A sends to B (and B's replies on
that connection) crosses the link.

Per link, changeable at runtime from any thread:

* ``delay_ms``: every chunk is held ``delay_ms`` after it was read, in each direction,
  and chunks are written in the order read (so the byte stream stays intact). Two
  links of 50 ms give ~100 ms RTT, like two regions.
* :attr:`Mode.PASS`: forward.
* :attr:`Mode.BLACKHOLE`: accept connections but forward nothing (new ones are not even
  connected to the target), so senders see a silent network: no RST, and once the
  proxy's bounded buffer is full their writes block. Bytes are held, not lost, so TCP
  semantics are preserved: switching back to ``PASS`` delivers them, like a partition
  that healed before TCP gave up.
* :attr:`Mode.DROP`: reset (RST) every open connection of the link and every new one.

The proxy runs one asyncio loop in one daemon thread; :meth:`TcpProxy.close` stops the
thread and closes every socket it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Coroutine, TypeVar

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# Chunks queued per direction before the proxy stops reading (backpressure to the sender).
_QUEUE_CHUNKS = 64
_CALL_TIMEOUT_S = 10.0
_T = TypeVar("_T")


class Mode(str, enum.Enum):
    """What a link does with traffic."""

    PASS = "pass"
    BLACKHOLE = "blackhole"
    DROP = "drop"


@dataclass(eq=False)
class _Link:
    """Loop-thread state of one link."""

    name: str
    target: tuple[str, int]
    delay_s: float
    mode: Mode
    flowing: asyncio.Event
    server: asyncio.Server | None = None
    connections: set[asyncio.Task[None]] = field(default_factory=set)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s connection with an RST (SO_LINGER 0), discarding unsent data."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """A set of named loopback links, each ``listen port -> target``; see module docs.

    Use as a context manager (or :meth:`start`/:meth:`close`). All public methods are
    thread-safe and return once the change is in effect.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._links: dict[str, _Link] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "TcpProxy":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the proxy's event-loop thread."""
        if self._loop is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hst-tcp-proxy",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Close every link and connection, stop the thread and the loop (idempotent)."""
        if self._loop is None or self._thread is None:
            return
        self._call(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_CALL_TIMEOUT_S)
        self._loop.close()
        self._loop, self._thread = None, None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the proxy loop and wait for its result."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT_S)

    # ------------------------------------------------------------------ public API

    def add_link(self, name: str, target_port: int, *, target_host: str = "127.0.0.1",
                 listen_port: int = 0, delay_ms: float = 0.0, mode: Mode = Mode.PASS) -> int:
        """Create link ``name`` forwarding to ``target_host:target_port``; return its port.

        ``listen_port=0`` picks a free port.
        """
        return self._call(self._add_link(name, (target_host, target_port), listen_port,
                                         delay_ms / 1000.0, mode))

    def configure(self, name: str, *, delay_ms: float | None = None,
                  mode: Mode | None = None) -> None:
        """Change a link's delay and/or mode; a new delay applies to chunks read from now on."""
        self._call(self._configure(name, None if delay_ms is None else delay_ms / 1000.0, mode))

    def port(self, name: str) -> int:
        """Loopback port link ``name`` listens on."""
        server = self._links[name].server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])

    def open_connections(self, name: str) -> int:
        """Number of client connections link ``name`` currently holds."""
        return len(self._links[name].connections)

    # ------------------------------------------------------------------ loop-thread side

    async def _add_link(self, name: str, target: tuple[str, int], listen_port: int,
                        delay_s: float, mode: Mode) -> int:
        if name in self._links:
            raise ValueError(f"link {name!r} already exists")
        link = _Link(name, target, delay_s, mode, asyncio.Event())
        self._set_mode(link, mode)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The connection task is ours to cancel (drop/close): end it normally so
            # asyncio's stream callback does not report the cancellation as an error.
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve(link, reader, writer)

        link.server = await asyncio.start_server(on_connect, self.host, listen_port)
        self._links[name] = link
        port = self.port(name)
        log.info("proxy link %s: %s:%d -> %s:%d (delay %.0f ms, %s)", name, self.host, port,
                 *target, delay_s * 1000, mode.value)
        return port

    async def _configure(self, name: str, delay_s: float | None, mode: Mode | None) -> None:
        link = self._links[name]
        if delay_s is not None:
            link.delay_s = delay_s
        if mode is not None:
            self._set_mode(link, mode)
        log.info("proxy link %s: delay %.0f ms, %s", name, link.delay_s * 1000, link.mode.value)

    @staticmethod
    def _set_mode(link: _Link, mode: Mode) -> None:
        link.mode = mode
        if mode is Mode.PASS:
            link.flowing.set()
        else:
            link.flowing.clear()
        if mode is Mode.DROP:
            for task in link.connections:
                task.cancel()

    async def _close_all(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        for link in self._links.values():
            if link.server is not None:
                link.server.close()
            tasks.extend(link.connections)
            for task in link.connections:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in self._links.values():
            if link.server is not None:
                await link.server.wait_closed()
        self._links.clear()

    async def _serve(self, link: _Link, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        """Handle one client connection of ``link`` until both directions end or it is reset."""
        task = asyncio.current_task()
        assert task is not None
        if link.mode is Mode.DROP:
            _reset(client_writer)
            return
        link.connections.add(task)
        writers = [client_writer]
        clean = False
        try:
            await link.flowing.wait()          # blackhole: accepted, but not even connected
            up_reader, up_writer = await asyncio.open_connection(*link.target)
            writers.append(up_writer)
            async with asyncio.TaskGroup() as group:
                self._pipe(group, link, client_reader, up_writer)
                self._pipe(group, link, up_reader, client_writer)
            clean = True
        except* (OSError, EOFError) as errors:
            log.debug("proxy link %s: connection ended: %r", link.name, errors.exceptions)
        finally:
            link.connections.discard(task)
            for writer in writers:
                if clean:
                    writer.close()
                else:
                    _reset(writer)
            for writer in writers:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    @staticmethod
    def _pipe(group: asyncio.TaskGroup, link: _Link, reader: asyncio.StreamReader,
              writer: asyncio.StreamWriter) -> None:
        """Forward ``reader`` to ``writer`` with the link's delay, in order, as two tasks.

        The receiving task timestamps each chunk on arrival and queues it (bounded, so a
        stalled direction pushes back on its sender); the sending task writes chunks FIFO
        once they are due and the link is not blackholed, so a delay never reorders bytes
        and a delay change never holds chunks already queued longer than their own delay.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)

        async def receive() -> None:
            while True:
                data = await reader.read(_CHUNK)
                await queue.put((loop.time() + link.delay_s, data))
                if not data:
                    return

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await link.flowing.wait()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        group.create_task(receive())
        group.create_task(send())
