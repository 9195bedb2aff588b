"""Whole WebSocket frames written straight to a connection's transport: the feed's fan-out.

Through ASGI, every message to every connection costs a `websocket.send` call chain (the
framework's wrapper, uvicorn's flow-control wait, websockets' framing) and, in the feed, a
task woken per connection to make it: tens of microseconds per subscriber per message, the
whole of one core at a thousand subscribers. The feed sends the same message to all of them,
so it frames the message once (`text_frame`) and writes those bytes to each transport.

`FrameProtocol` is uvicorn's WebSocket protocol (websockets, sans-I/O) with one ASGI scope
extension, `dex.frames` (`EXTENSION`): a `FrameWriter` for the connection. The ASGI path stays
for the handshake, what the client sends, the pings and the close. Frames are written whole
and from the event loop's thread, so they interleave with uvicorn's own frames (pings, pongs,
the close) only between frames. Nothing is written once the connection is closing.

Servers built here do not offer permessage-deflate (`ws_per_message_deflate=False` beside
`ws=FrameProtocol`): a compressed frame is per connection (each has its own compression
context), which is exactly the per-subscriber work this avoids, and feed messages are a
few hundred bytes.

Back-pressure: `buffered()` is what the transport holds that the kernel has not taken; the
caller decides when that is too much, and may `abort()` the connection (the feed cuts a slow
consumer: its backlog is freed at once).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

EXTENSION = "dex.frames"


def text_frame(text: str) -> bytes:
    """A server's text frame (FIN, opcode 1, unmasked as RFC 6455 wants of servers)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


class FrameWriter:
    """Writes whole frames to one open WebSocket connection."""

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        """Write `frame`; False (and nothing written) once the connection is closing."""
        p = self._protocol
        if p.close_sent or p.disconnected or p.conn.state is not State.OPEN:
            return False
        if p.transport.is_closing():
            return False
        p.transport.write(frame)
        return True

    def abort(self) -> None:
        """Cut the connection now: what waits in the transport is discarded (no closing
        handshake: a close frame would wait behind it)."""
        self._protocol.transport.abort()

    def buffered(self) -> int:
        """Bytes written here or by uvicorn that the kernel has not taken yet."""
        return int(self._protocol.transport.get_write_buffer_size())


class FrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, offering a `FrameWriter` in the ASGI scope."""

    async def run_asgi(self) -> None:
        extensions: dict[str, Any] = self.scope["extensions"]
        extensions[EXTENSION] = FrameWriter(self)
        await super().run_asgi()


def frame_writer(scope: Any) -> FrameWriter | None:
    """The connection's `FrameWriter`, if its server offers one (None for other servers)."""
    if not isinstance(scope, dict):
        return None
    writer = (scope.get("extensions") or {}).get(EXTENSION)
    return writer if isinstance(writer, FrameWriter) else None


__all__ = ["EXTENSION", "FrameProtocol", "FrameWriter", "frame_writer", "text_frame"]
