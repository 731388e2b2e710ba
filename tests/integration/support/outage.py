"""A real network outage in front of a stack server: a TCP forwarder whose port refuses
connections (nothing listens) until `up()`, and forwards to the server from then on."""

from __future__ import annotations

import asyncio

from cdr_mediation.stack.process import free_port


class SwitchableEndpoint:
    def __init__(self, target_port: int) -> None:
        self.port, self.target_port = free_port(), target_port
        self._server: asyncio.AbstractServer | None = None

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
