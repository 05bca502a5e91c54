"""The fault proxy must forward bytes intact and in order, add at least the configured
delay, drop and blackhole on demand, and leave no thread or socket behind."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from typing import Iterator

import pytest

from .proxy import Mode, TcpProxy


class EchoServer:
    """Loopback TCP echo server, one thread per connection; counts connections."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="echo-accept")
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._echo, args=(conn,), name="echo-conn")
            self._threads.append(thread)
            thread.start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Send ``payload``, wait for its echo; return the elapsed seconds."""
    started = time.monotonic()
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the echo arrived"
        received += chunk
    assert received == payload
    return time.monotonic() - started


def _connection_is_cut(sock: socket.socket) -> bool:
    """True when the peer reset or closed the connection (within the socket timeout)."""
    try:
        sock.sendall(b"x")
        return sock.recv(16) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.mark.parametrize("delay_ms", [0, 5])
def test_bytes_arrive_intact_and_in_order(tcp_proxy: TcpProxy, echo: EchoServer,
                                          delay_ms: float) -> None:
    port = tcp_proxy.add_link("a-b", echo.port, delay_ms=delay_ms)
    payload = random.Random(7).randbytes(2 * 1024 * 1024)
    received = bytearray()
    with _connect(port) as sock:
        def reader() -> None:
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        for offset in range(0, len(payload), 1000):      # many small writes: many chunks
            sock.sendall(payload[offset:offset + 1000])
        thread.join(30)
    assert bytes(received) == payload


def test_added_delay_is_at_least_the_configured_delay_each_way(tcp_proxy: TcpProxy,
                                                               echo: EchoServer) -> None:
    port = tcp_proxy.add_link("a-b", echo.port)
    with _connect(port) as sock:
        direct = min(_round_trip(sock) for _ in range(3))
        tcp_proxy.configure("a-b", delay_ms=50)
        delayed = [_round_trip(sock) for _ in range(3)]
        tcp_proxy.configure("a-b", delay_ms=0)
        healed = _round_trip(sock)
    assert min(delayed) >= 0.100                  # 50 ms out + 50 ms back
    assert max(delayed) < 1.0
    assert direct < 0.100 and healed < 0.100     # no delay configured: below that floor


def test_drop_resets_open_and_new_connections_until_passed_again(tcp_proxy: TcpProxy,
                                                                 echo: EchoServer) -> None:
    port = tcp_proxy.add_link("a-b", echo.port)
    with _connect(port) as before:
        _round_trip(before)
        tcp_proxy.configure("a-b", mode=Mode.DROP)
        assert _connection_is_cut(before)
    try:
        during = _connect(port)
    except ConnectionResetError:
        pass                                      # reset raced the end of connect()
    else:
        with during:
            assert _connection_is_cut(during)
    assert echo.accepted == 1
    assert tcp_proxy.open_connections("a-b") == 0
    tcp_proxy.configure("a-b", mode=Mode.PASS)
    with _connect(port) as after:
        _round_trip(after)


def test_blackhole_accepts_but_holds_everything_until_passed(tcp_proxy: TcpProxy,
                                                             echo: EchoServer) -> None:
    port = tcp_proxy.add_link("a-b", echo.port)
    with _connect(port) as open_before:
        _round_trip(open_before)
        tcp_proxy.configure("a-b", mode=Mode.BLACKHOLE)
        with _connect(port) as opened_during:
            for sock in (open_before, opened_during):
                sock.settimeout(0.3)
                sock.sendall(b"held")
                with pytest.raises(TimeoutError):
                    sock.recv(16)
            assert echo.accepted == 1              # the new connection was never forwarded
            tcp_proxy.configure("a-b", mode=Mode.PASS)
            for sock in (open_before, opened_during):
                sock.settimeout(5)
                assert sock.recv(16) == b"held"
    assert echo.accepted == 2


def test_blackhole_also_holds_chunks_already_in_flight(tcp_proxy: TcpProxy,
                                                      echo: EchoServer) -> None:
    port = tcp_proxy.add_link("a-b", echo.port, delay_ms=150)
    with _connect(port) as sock:
        sock.sendall(b"in-flight")
        time.sleep(0.05)                           # read by the proxy, not yet due
        tcp_proxy.configure("a-b", mode=Mode.BLACKHOLE)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        assert echo.accepted == 1
        tcp_proxy.configure("a-b", mode=Mode.PASS, delay_ms=0)
        sock.settimeout(5)
        assert sock.recv(16) == b"in-flight"


def test_links_are_independent(tcp_proxy: TcpProxy, echo: EchoServer) -> None:
    slow = tcp_proxy.add_link("slow", echo.port, delay_ms=40)
    fast = tcp_proxy.add_link("fast", echo.port)
    with _connect(slow) as s, _connect(fast) as f:
        assert _round_trip(s) >= 0.080
        assert _round_trip(f) < 0.080
    with pytest.raises(ValueError, match="already exists"):
        tcp_proxy.add_link("slow", echo.port)
    with pytest.raises(OSError):                   # port taken: no half-made link left
        tcp_proxy.add_link("clash", echo.port, listen_port=fast)
    with pytest.raises(KeyError):
        tcp_proxy.port("clash")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_close_leaks_no_thread_or_socket(echo: EchoServer) -> None:
    threads, fds = threading.active_count(), _open_fds()
    proxy = TcpProxy()
    proxy.start()
    clients = [_connect(proxy.add_link(f"l{i}", echo.port, delay_ms=1)) for i in range(3)]
    for sock in clients:
        _round_trip(sock)
    proxy.configure("l0", mode=Mode.BLACKHOLE)
    proxy.close()
    for sock in clients:
        assert _connection_is_cut(sock)
        sock.close()
    deadline = time.monotonic() + 5
    while (threading.active_count(), _open_fds()) != (threads, fds) \
            and time.monotonic() < deadline:
        time.sleep(0.05)                           # echo threads notice the close
    assert (threading.active_count(), _open_fds()) == (threads, fds)
    proxy.close()                                  # idempotent
