"""A TCP link to a server that a test can cut and mend, for outage drills on servers that keep their data only in
memory (moto): cut, the port refuses new connections and the open ones are reset, which is what a client sees when
the server stops; mended, the same port forwards again to the same server, whose state outlived the outage."""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress

from local_stack.processes import free_port


class TcpLink:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``; ``url`` is what clients are given."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mend(self) -> TcpLink:
        """Listens (again) on the link's port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="link-accept", daemon=True).start()
        return self

    def cut(self) -> None:
        """Stops listening and resets every open connection (RST, not a polite close)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            with suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by cut()
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            pair = _Pair(client, server)
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), name="link-pump", daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        if pair.one_direction_done():  # both directions finished: close and forget the pair
            with self._lock:
                self._open -= {pair.client, pair.server}
            pair.client.close()
            pair.server.close()


class _Pair:
    """A forwarded connection: closed once both directions ended."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self._ended = 0
        self._lock = threading.Lock()

    def one_direction_done(self) -> bool:
        with self._lock:
            self._ended += 1
            return self._ended == 2
