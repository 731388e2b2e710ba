"""Mutual TLS in front of the regulator's HTTPS API, like the load balancer of a real endpoint.

asyncio's TLS server closes a connection whose handshake failed without sending the TLS alert,
so a client could not tell "your certificate was refused" (permanent) from "the server died"
(retry). Here each connection's handshake runs on a blocking socket in its own thread, where
OpenSSL writes its alert (certificate required, unknown CA) before closing. An accepted
connection is piped to the API on a loopback port, and `client_of` tells the API which
certificate stands behind each piped connection (the API refuses connections that did not come
through the front).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("cdr_mediation.regulator")

_PIPE_CHUNK = 1 << 16
_IDLE_S = 300


def server_tls_context(*, ca_cert: str, server_cert: str, server_key: str) -> ssl.SSLContext:
    """TLS 1.2+ with a client certificate from our CA required: no certificate, no session."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_cert)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class PipedClients:
    """Which client certificate stands behind each connection the front opened to the API.

    The front's threads register a connection under its local port; the API (event loop thread)
    looks the port up from the peer address of its request.
    """

    def __init__(self) -> None:
        self._by_port: dict[int, str] = {}
        self._lock = threading.Lock()

    def add(self, port: int, client: str) -> None:
        with self._lock:
            self._by_port[port] = client

    def remove(self, port: int) -> None:
        with self._lock:
            self._by_port.pop(port, None)

    def client_of(self, peer_port: int) -> str | None:
        """The certificate CN behind the API connection from `peer_port`; None if not piped by us."""
        with self._lock:
            return self._by_port.get(peer_port)


class TlsFront:
    def __init__(self, context: ssl.SSLContext, host: str, port: int, upstream_port: int,
                 clients: PipedClients) -> None:
        self.context = context
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server((host, port))
        self.clients = clients

    def start(self) -> None:
        threading.Thread(target=self._accept, name="tls-front", daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # listener closed
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(30)
        # The handshake is called explicitly: when wrap_socket's own fails, it closes the socket
        # at once, which resets the connection (see _lingering_close).
        tls = self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()  # on refusal OpenSSL sends the alert
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake refused: %s", exc)
            _lingering_close(tls)
            return
        client = common_name(tls.getpeercert() or {})
        try:
            with tls, socket.create_connection(self.upstream) as upstream:
                port = upstream.getsockname()[1]
                self.clients.add(port, client)
                try:
                    _pipe(tls, upstream)
                finally:
                    self.clients.remove(port)
        except OSError as exc:  # either side went away: that connection is over
            log.info("TLS connection of %s ended: %s", client, exc)


def common_name(peer: Mapping[str, Any]) -> str:
    """The subject CN of a certificate as `SSLSocket.getpeercert()` returns it ("" if none)."""
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


def _lingering_close(connection: socket.socket) -> None:
    """Close after the client stopped sending: closing with its request unread would send a
    TCP reset, which can destroy the TLS alert before the client reads it (TLS 1.3 clients
    send their request before they learn that their certificate was refused)."""
    try:
        connection.shutdown(socket.SHUT_WR)  # an SSLSocket drops its TLS state here: plain reads follow
        connection.settimeout(2)
        while connection.recv(_PIPE_CHUNK):
            pass
    except OSError:
        pass
    finally:
        connection.close()


def _pipe(tls: ssl.SSLSocket, upstream: socket.socket) -> None:
    """Copy bytes both ways in one thread (an SSL object must not be used by two at once)."""
    tls.settimeout(None)
    while True:
        # Bytes OpenSSL already decrypted are invisible to select(): serve them first.
        ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], _IDLE_S)[0]
        if not ready:
            return
        for source in ready:
            target = upstream if source is tls else tls
            data = source.recv(_PIPE_CHUNK)
            if not data:
                return
            target.sendall(data)
