"""The HTTP transport wrapper: writes of one loop iteration reach the socket as one write, in
order."""

import asyncio

import pytest

from spd_mcp.server.http import CoalescingTransport

pytestmark = pytest.mark.anyio


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1234) if name == "peername" else default


async def test_head_and_body_leave_in_one_write_then_close_flushes() -> None:
    raw = RecordingTransport()
    t = CoalescingTransport(raw)
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(memoryview(b"{}"))
    assert raw.writes == []  # nothing sent until the loop turns
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    t.writelines([b"a", b"b"])
    t.close()  # pending bytes go out before the close
    assert raw.writes[-1] == b"ab" and raw.closed
    assert t.get_extra_info("peername") == (
        "127.0.0.1",
        1234,
    )  # everything else is the real transport's


async def test_abort_drops_pending_bytes() -> None:
    raw = RecordingTransport()
    raw.abort = lambda: setattr(raw, "closed", True)  # type: ignore[method-assign]
    t = CoalescingTransport(raw)
    t.write(b"partial")
    t.abort()
    await asyncio.sleep(0)
    assert raw.writes == [] and raw.closed
