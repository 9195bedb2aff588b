"""dex.runtime.wsframes: whole frames written to a WebSocket connection's transport.

A real uvicorn server (`HttpServer` with `ws=FrameProtocol`) and a real `websockets` client:
frames of every length encoding (7-bit, 16-bit, 64-bit) arrive as the texts they carry, in
order with what goes through ASGI; nothing is written once the connection is closing; a server
without the protocol offers no writer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar, WebSocket, websocket
from websockets.asyncio.client import connect

from dex.runtime.server import HttpServer
from dex.runtime.wsframes import FrameProtocol, FrameWriter, frame_writer, text_frame

LENGTHS = (0, 1, 125, 126, 127, 65_535, 65_536, 200_000)  # around each header form's edges


def texts() -> list[str]:
    return ["x" * n for n in LENGTHS] + ["é✓ unicode"]


def app(seen: dict[str, Any]) -> Litestar:
    @websocket("/ws")
    async def handler(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        writer = frame_writer(socket.scope)
        seen["writer"] = writer
        if writer is None:
            await socket.close()
            return
        await socket.send_text("through asgi")  # ASGI and frames share the connection
        for t in texts():
            assert writer.write(text_frame(t))
        seen["buffered"] = writer.buffered()
        await socket.receive()  # the client's "bye"
        await socket.close(code=1000)
        seen["after_close"] = writer.write(text_frame("too late"))

    return Litestar([handler], logging_config=None)


def test_frames_of_every_length_arrive_in_order_and_nothing_after_the_close() -> None:
    async def main() -> None:
        seen: dict[str, Any] = {}
        server = HttpServer(app(seen), ws=FrameProtocol, ws_per_message_deflate=False)
        await server.start("127.0.0.1", 0)
        try:
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect(url, max_size=None) as ws:
                got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(len(texts()) + 1)]
                await ws.send("bye")
                await asyncio.wait_for(ws.wait_closed(), 10)
                assert ws.close_code == 1000
        finally:
            await server.stop()
        assert got == ["through asgi", *texts()]
        assert isinstance(seen["writer"], FrameWriter)
        assert seen["buffered"] >= 0
        assert seen["after_close"] is False

    asyncio.run(main())


def test_a_server_without_the_protocol_offers_no_writer() -> None:
    async def main() -> None:
        seen: dict[str, Any] = {}
        server = HttpServer(app(seen))
        await server.start("127.0.0.1", 0)
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await asyncio.wait_for(ws.wait_closed(), 10)
        finally:
            await server.stop()
        assert seen["writer"] is None

    asyncio.run(main())


def test_frame_writer_needs_a_scope_with_the_extension() -> None:
    assert frame_writer(None) is None
    assert frame_writer({"extensions": None}) is None
    assert frame_writer({"extensions": {"dex.frames": object()}}) is None


def test_text_frame_headers() -> None:
    assert text_frame("") == b"\x81\x00"
    assert text_frame("a" * 125)[:2] == b"\x81\x7d"
    assert text_frame("a" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame("a" * 65_536)[:10] == b"\x81\x7f" + (65_536).to_bytes(8, "big")
