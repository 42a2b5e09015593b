"""A tiny local HTTP server for the download and source tests: threaded, bound to 127.0.0.1,
serves bytes from a dict, supports ``Range``, and can misbehave on purpose (drop a
connection half-way, ignore ``Range``, answer with an error status)."""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlparse


@dataclass
class ServerState:
    routes: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)   # (path, Range header)
    drop_after: dict[str, int] = field(default_factory=dict)   # path -> bytes sent before cutting, once
    status: dict[str, int] = field(default_factory=dict)       # path -> forced error status
    ignore_range: bool = False
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    def add(self, path: str, data: bytes) -> str:
        path = path if path.startswith("/") else "/" + path
        self.routes[path] = data
        return self.url(path)


def _handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        timeout = 10   # a stuck client never holds a server thread for long

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):  # noqa: N802
            path = urlparse(self.path).path
            rng = self.headers.get("Range")
            state.requests.append((path, rng))
            if path in state.status:
                self.send_error(state.status[path])
                return
            data = state.routes.get(path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            cut = state.drop_after.pop(path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve() -> Iterator[ServerState]:
    state = ServerState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
