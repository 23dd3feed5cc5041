"""Docker's multiplexed stream framing (``application/vnd.docker.multiplexed-stream``), sans-IO.

Non-TTY attach, exec and logs interleave stdout and stderr on one byte stream. Each frame is an
8-byte header ``[stream, 0, 0, 0, size as uint32 big-endian]`` followed by ``size`` payload bytes.
Stream 3 ("systemerr") carries an error from the daemon; clients turn it into an error.
With a TTY there is no framing at all: the raw bytes go out as they are.

This module only converts between payloads and bytes; it does no I/O.
"""

from __future__ import annotations

import struct
from enum import IntEnum

HEADER_SIZE = 8
MAX_PAYLOAD = 0xFFFFFFFF

_HEADER = struct.Struct(">BxxxI")


class Stream(IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2
    SYSTEMERR = 3


STDIN, STDOUT, STDERR, SYSTEMERR = Stream.STDIN, Stream.STDOUT, Stream.STDERR, Stream.SYSTEMERR


def frame(stream: int, data: bytes) -> bytes:
    """One frame carrying ``data`` on ``stream`` (0 stdin, 1 stdout, 2 stderr, 3 systemerr)."""
    if not 0 <= stream <= SYSTEMERR:
        raise ValueError(f"invalid stream {stream}")
    if len(data) > MAX_PAYLOAD:
        # The size field is 32 bits; dockerd never sends more per frame because it frames each write.
        raise ValueError(f"payload of {len(data)} bytes does not fit in one frame")
    return _HEADER.pack(stream, len(data)) + data


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get back the frames completed so far.

    A frame split across ``feed`` calls is held until its last byte arrives. A header naming a
    stream other than 0-3 raises ``ValueError`` (the Go client's StdCopy fails the same way).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back because they do not yet form a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        view = memoryview(self._buffer)
        offset = 0
        try:
            while len(view) - offset >= HEADER_SIZE:
                stream, size = _HEADER.unpack_from(view, offset)
                if stream > SYSTEMERR:
                    raise ValueError(f"unrecognized input header: {stream}")
                end = offset + HEADER_SIZE + size
                if end > len(view):
                    break
                frames.append((Stream(stream), bytes(view[offset + HEADER_SIZE : end])))
                offset = end
        finally:
            view.release()
        # Compacting once per feed (not once per frame) keeps many small frames linear.
        del self._buffer[:offset]
        return frames
