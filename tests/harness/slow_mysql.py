"""A loopback TCP relay in front of the local MariaDB that slows what the server sends (a slow network).

MySQL fault tests kill a reading connection with ``KILL <id>`` while the
server is still sending its rows. The kernel buffers several MB of a TCP
connection's output, so without a slow reader the server has finished
sending a small chunk before anyone can kill it. Behind this relay the
server's side is a Unix socket (small buffers; TCP to 127.0.0.1:3306 when the
server's socket is not on this machine) and the relay forwards
server-to-client bytes at ``rate`` bytes/s: the server stays in ``Query``
state ("Writing to net") until the client has nearly read the whole result.
Only loopback addresses are used.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pymysql

_BUF = 16 << 10


def server_socket(host: str = "127.0.0.1", port: int = 3306, user: str = "root") -> str | None:
    """The local server's Unix socket path when ``user`` (no password) can log in through it, else None."""
    try:
        c = pymysql.connect(host=host, port=port, user=user, password="")
        with c.cursor() as cur:
            cur.execute("SELECT @@socket")
            path = str(cur.fetchone()[0] or "")
        c.close()
        if path and os.path.exists(path):
            pymysql.connect(unix_socket=path, user=user, password="").close()
            return path
    except (pymysql.MySQLError, OSError):
        pass
    return None


class SlowMySQL:
    """``with SlowMySQL(rate=1_500_000) as s: ... mysql://root@127.0.0.1:{s.port}/DB``."""

    def __init__(self, rate: float, host: str = "127.0.0.1", port: int = 3306) -> None:
        assert host in ("127.0.0.1", "localhost", "::1"), "loopback only"
        self.rate = rate
        self.unix = server_socket(host, port)
        self.upstream = (host, port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _connect_upstream(self) -> socket.socket:
        if self.unix:
            u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: object = self.unix
        else:
            u = socket.socket()
            target = self.upstream
        u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUF)
        u.connect(target)  # type: ignore[arg-type]
        return u

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUF)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.rate), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rate: float | None) -> None:
        try:
            while data := src.recv(_BUF):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> SlowMySQL:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                s.close()
        self.thread.join(timeout=5)
