"""The admin HTTP client against a real HTTP server on loopback, and against a closed port."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from hastate.admin_client import call
from hastate.errors import NodeUnreachableError
from hastate.testing import free_port


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, raw: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/plain":
            self._send(500, b"not json")
        elif self.path == "/list":
            self._send(200, b"[1, 2]")
        else:
            self._send(200, json.dumps({"path": self.path,
                                        "auth": self.headers.get("Authorization")}).encode())

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != "Bearer right":
            self._send(401, json.dumps({"error": "wrong token"}).encode())
        else:
            self._send(200, json.dumps({"echo": body}).encode())


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_get_and_post_return_the_status_and_the_json_body(server: str) -> None:
    assert call("n1", server, "/status") == (200, {"path": "/status", "auth": None})
    assert call("n1", server, "/x", token="t")[1]["auth"] == "Bearer t"
    assert call("n1", server, "/admin/x", body={"to": "n2"}, token="right") == \
        (200, {"echo": {"to": "n2"}})


def test_an_error_status_is_an_answer_not_a_failure(server: str) -> None:
    assert call("n1", server, "/admin/x", body={}, token="wrong") == (401, {"error": "wrong token"})
    code, answer = call("n1", server, "/plain")
    assert code == 500 and "500" in answer["error"]


def test_an_answer_that_is_not_a_json_object_names_the_node_and_url(server: str) -> None:
    with pytest.raises(NodeUnreachableError, match=rf"n1 does not answer at http://{server}/list"):
        call("n1", server, "/list")


def test_a_closed_port_names_the_node_and_the_url() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(NodeUnreachableError) as caught:
        call("instance-7", address, "/status", timeout=2)
    assert caught.value.node == "instance-7" and caught.value.url == f"http://{address}/status"
    assert str(caught.value).startswith(f"instance-7 does not answer at http://{address}/status: ")
