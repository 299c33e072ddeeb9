"""A small threaded TCP proxy for fault injection between a client and a real server.

It listens on 127.0.0.1 (port 0: the OS picks a free port) and forwards to ``upstream``
(default: RabbitMQ on 127.0.0.1:5672). Modes, switchable at runtime:

- :meth:`TcpProxy.pass_through` - forward everything (the healthy state);
- :meth:`TcpProxy.stall` - accept and then say nothing (``after_bytes=0``), or forward the first
  ``after_bytes`` bytes of one direction and then go silent while keeping both sockets open;
- :meth:`TcpProxy.close_mid_frame` - forward ``after_bytes`` bytes of one direction, then close
  both sockets (a connection lost in the middle of a frame);
- :meth:`TcpProxy.refuse` - close the listening socket: connections are refused.

A mode applies to connections accepted after the switch; :meth:`TcpProxy.heal` goes back to
pass-through and drops the connections held by earlier modes. ``record=True`` keeps the bytes each
connection sent upstream (``recorded``), for finding frame offsets.

Usage::

    with TcpProxy() as proxy:
        proxy.stall()
        ...connect to ("127.0.0.1", proxy.port)...
        proxy.heal()
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass
from typing import Literal

__all__ = ["Direction", "TcpProxy"]

Direction = Literal["upstream", "downstream"]  # client->server, server->client
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class _Mode:
    kind: Literal["pass", "stall", "close"]
    after_bytes: int = 0
    direction: Direction = "downstream"


class TcpProxy:
    """Fault-injecting TCP proxy on 127.0.0.1, one thread per connection."""

    def __init__(
        self, upstream: tuple[str, int] = ("127.0.0.1", 5672), *, record: bool = False
    ) -> None:
        self.upstream = upstream
        self.record = record
        self.recorded: list[bytearray] = []
        self.accepted = 0
        self.port = 0
        self._mode = _Mode("pass")
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._listener_thread: threading.Thread | None = None
        self._stop_listening = threading.Event()
        self._closed = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> TcpProxy:
        self._listen()
        return self

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed.set()
        self._unlisten()
        self.drop_connections()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    # ------------------------------------------------------------------ modes
    def pass_through(self) -> None:
        self._set(_Mode("pass"))

    def stall(self, after_bytes: int = 0, direction: Direction = "upstream") -> None:
        self._set(_Mode("stall", after_bytes, direction))

    def close_mid_frame(self, after_bytes: int, direction: Direction = "downstream") -> None:
        self._set(_Mode("close", after_bytes, direction))

    def refuse(self) -> None:
        """Close the listening socket; connection attempts are refused until :meth:`heal`."""
        self._unlisten()

    def heal(self) -> None:
        """Back to pass-through (listening again if refused); drop connections held by faults."""
        self._set(_Mode("pass"))
        self.drop_connections()
        if self._listener is None:
            self._listen()

    def drop_connections(self) -> None:
        with self._lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _set(self, mode: _Mode) -> None:
        with self._lock:
            self._mode = mode

    # ------------------------------------------------------------------ listening
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.port))
        except OSError as error:
            listener.close()
            raise RuntimeError(
                f"TcpProxy cannot listen on 127.0.0.1:{self.port} again: {error}"
            ) from error
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop_listening = threading.Event()
        self._listener_thread = threading.Thread(
            target=self._accept_loop,
            args=(listener, self._stop_listening),
            daemon=True,
            name=f"tcp-proxy-{self.port}",
        )
        self._listener_thread.start()

    def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stop_listening.set()
        if self._listener_thread is not None:
            self._listener_thread.join(5)
        listener.close()

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            readable, _, _ = select.select([listener], [], [], _POLL_SECONDS)
            if not readable or stop.is_set():
                continue
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            with self._lock:
                mode = self._mode
                self.accepted += 1
                record = bytearray() if self.record else None
                if record is not None:
                    self.recorded.append(record)
            threading.Thread(
                target=self._serve,
                args=(client, mode, record),
                daemon=True,
                name=f"tcp-proxy-{self.port}-conn",
            ).start()

    # ------------------------------------------------------------------ one connection
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.add(sock)

    def _serve(self, client: socket.socket, mode: _Mode, record: bytearray | None) -> None:
        self._track(client)
        upstream: socket.socket | None = None
        try:
            if mode.kind == "stall" and mode.after_bytes == 0:
                self._swallow([client])
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            self._track(upstream)
            self._pump(client, upstream, mode, record)
        finally:
            for sock in (client, upstream):
                if sock is None:
                    continue
                with self._lock:
                    self._live.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()

    def _pump(
        self,
        client: socket.socket,
        upstream: socket.socket,
        mode: _Mode,
        record: bytearray | None,
    ) -> None:
        sent: dict[Direction, int] = {"upstream": 0, "downstream": 0}
        peers = {client: (upstream, "upstream"), upstream: (client, "downstream")}
        while not self._closed.is_set():
            readable, _, _ = select.select(list(peers), [], [], _POLL_SECONDS)
            for sock in readable:
                peer, direction = peers[sock]
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if mode.kind != "pass" and direction == mode.direction:
                    allowed = mode.after_bytes - sent[direction]
                    if len(data) >= allowed:
                        head = data[: max(0, allowed)]
                        if head:
                            self._send(peer, head, direction, record)
                        sent[direction] += len(head)
                        if mode.kind == "close":
                            return
                        self._swallow([client, upstream])  # stall: both directions go silent
                        return
                self._send(peer, data, direction, record)
                sent[direction] += len(data)

    def _send(
        self, peer: socket.socket, data: bytes, direction: Direction, record: bytearray | None
    ) -> None:
        if record is not None and direction == "upstream":
            record.extend(data)
        with contextlib.suppress(OSError):
            peer.sendall(data)

    def _swallow(self, socks: list[socket.socket]) -> None:
        """Keep the sockets open, read and drop whatever arrives, answer nothing."""
        socks = list(socks)
        while socks and not self._closed.is_set():
            readable, _, _ = select.select(socks, [], [], _POLL_SECONDS)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # peer closed, or dropped by heal()
                    return
