"""A fault-injecting HTTP reverse proxy on loopback, between backupctl and the moto server.

Each request is forwarded to the upstream unless a fault is drawn (seeded, at a
configurable rate): HTTP 500 or 503, DynamoDB ProvisionedThroughputExceeded or
Throttling errors, S3 SlowDown, a reset connection, a truncated response, or a
delay. Only loopback addresses are ever used.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULTS = ("http500", "http503", "ddb_throughput", "ddb_throttling", "s3_slowdown", "reset", "truncate", "delay")

_DDB_ERR = '{{"__type":"com.amazonaws.dynamodb.v20120810#{0}","message":"injected fault"}}'
_S3_SLOWDOWN = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    """``with FaultProxy(upstream, rate=0.1, seed=1) as p: ... p.url``.

    ``counts`` tallies requests and each injected fault.
    """

    def __init__(self, upstream: str, rate: float = 0.1, seed: int = 0, faults: tuple[str, ...] = FAULTS,
                 delay_s: float = 0.3, start_after: int = 0, target_prefix: str | None = None) -> None:
        u = urlparse(upstream)
        assert u.hostname in ("127.0.0.1", "localhost", "::1"), "faults are injected on loopback only"
        self.upstream_host, self.upstream_port = u.hostname, int(u.port or 80)
        self.rate = rate
        self.faults = faults
        self.delay_s = delay_s
        self.start_after = start_after  # the first N requests pass untouched
        self.target_prefix = target_prefix  # only JSON-protocol calls whose X-Amz-Target starts so (e.g. EMR)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def draw(self) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            if self.counts["requests"] > self.start_after and self.rng.random() < self.rate:
                f = self.rng.choice(self.faults)
                self.counts[f] += 1
                return f
            return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target") or ""
                chosen = proxy.target_prefix is None or target.startswith(proxy.target_prefix)
                fault = proxy.draw() if chosen else None
                is_ddb = bool(target)  # a JSON-protocol service (DynamoDB, EMR...): errors in its JSON shape
                if fault in ("ddb_throughput", "ddb_throttling") and not is_ddb:
                    fault = "http503"
                if fault == "s3_slowdown" and is_ddb:
                    fault = "ddb_throttling"
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault in ("http500", "http503"):
                    return self._reply(500 if fault == "http500" else 503, b"injected fault", "text/plain")
                if fault == "ddb_throughput":
                    return self._reply(400, _DDB_ERR.format("ProvisionedThroughputExceededException").encode(),
                                       "application/x-amz-json-1.0")
                if fault == "ddb_throttling":
                    return self._reply(400, _DDB_ERR.format("ThrottlingException").encode(),
                                       "application/x-amz-json-1.0")
                if fault == "s3_slowdown":
                    return self._reply(503, _S3_SLOWDOWN.encode(), "application/xml")
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                        self.send_header(k, v)
                # A HEAD response has no body: its Content-Length is the object's size, passed through.
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                if fault == "truncate" and len(data) > 1:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _reply(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
