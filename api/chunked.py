"""A fast reader for chunked request bodies (``Transfer-Encoding: chunked``), beside h11's.

``docker cp`` into a container sends its tar as a chunked body in 5,000-6,500 small chunks per
100 MiB; h11 turns every chunk into an event and uvicorn handles each one, about 0.25 s of Python
per copy. ``ChunkedBody.feed`` instead walks a whole read with one regex match and one slice
per chunk, and the request's body buffer gets one piece per read.

It only ever reads the part of a body h11 would accept without question, and hands everything
else back to h11 at a chunk boundary, where h11's chunk reader is in its initial state (it has
not seen a byte of this body). So h11 still reads:

- the last chunk (``0``), its extensions and the trailer section, and anything pipelined after
  them: it then reaches the end of the message (``EndOfMessage``) exactly as before;
- a chunk-size line the fast reader does not recognise: h11 refuses it (400) as before, or would
  go on to read the rest of the body itself if it accepted it;
- a chunk-size line that is still incomplete after ``MAX_PENDING`` bytes, so h11's own limit on
  incomplete data applies.

The one error found here is a chunk not followed by CRLF; ``feed`` then returns
``MALFORMED``, an empty chunk-size line that h11 is certain to refuse with the same
``RemoteProtocolError`` path (uvicorn: "Invalid HTTP request received.", 400, close).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MALFORMED", "MAX_PENDING", "ChunkedBody"]

# h11's chunk header (h11/_abnf.py: 1-20 hex digits, ";" plus anything but LF as extensions,
# optional trailing spaces/tabs, CRLF), matched up to the first CRLF as h11 splits lines. The
# lazy extension stops at the first CRLF, since it cannot cross an LF.
_SIZE = rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*?)?[ \t]*\r\n"
_FIRST_LINE: Final = re.compile(_SIZE)
_NEXT_LINE: Final = re.compile(rb"\r\n" + _SIZE)  # the CRLF that ends the previous chunk's data
_CRLF: Final = b"\r\n"

# An incomplete chunk-size line longer than this goes to h11 (which allows up to its
# max_incomplete_event_size, 16 KiB by default) rather than being buffered here.
MAX_PENDING: Final = 1024
# What feed() hands h11 when a chunk's data is not followed by CRLF: an empty chunk-size line.
MALFORMED: Final = b"\r\n"


class ChunkedBody:
    """Framing state of one chunked body that h11 has not seen any of.

    ``feed(data, parts)`` appends the chunk data in ``data`` to ``parts`` and returns None while
    the body goes on, or the bytes to give h11 from then on (see the module docstring).
    """

    __slots__ = ("_footer", "_pending", "_remaining")

    def __init__(self) -> None:
        self._remaining = 0  # data bytes of the current chunk still to come
        self._footer = False  # the CRLF after a chunk's data is still to come
        self._pending = b""  # framing bytes kept until the rest of their line arrives

    @property
    def pending(self) -> bytes:
        """What h11 would still hold unparsed here: a partial chunk-size line.

        (A lone CR of a chunk's closing CRLF h11 would have consumed already.)
        """
        return b"" if self._footer else self._pending

    def feed(self, data: bytes, parts: list[bytes | memoryview]) -> bytes | None:
        """Append the chunk data in ``data`` to ``parts``; None, or the bytes h11 reads from here.

        A read that is all chunk data is appended as ``data`` itself, other pieces as views of it.
        """
        if self._pending:
            data = self._pending + data
            self._pending = b""
        n = len(data)
        pos = 0
        remaining = self._remaining
        footer = self._footer
        first_match = _FIRST_LINE.match
        next_match = _NEXT_LINE.match
        if remaining > n:  # the whole read is chunk data
            parts.append(data)
            self._remaining = remaining - n
            return None
        view = memoryview(data)
        while True:
            if remaining:
                end = pos + remaining
                if end > n:
                    parts.append(view[pos:])
                    self._remaining = end - n
                    self._footer = True
                    return None
                parts.append(view[pos:end])
                pos = end
                remaining = 0
                footer = True
            if pos == n:
                self._remaining = 0
                self._footer = footer
                return None
            m = next_match(data, pos) if footer else first_match(data, pos)
            if m is None:
                return self._unmatched(data, pos, footer=footer)
            remaining = int(m.group(1), 16)
            if remaining == 0:
                # The last chunk: h11 reads it, the trailers and whatever follows them.
                self._remaining = 0
                self._footer = False
                return data[m.start(1) :]
            pos = m.end()

    def _unmatched(self, data: bytes, pos: int, *, footer: bool) -> bytes | None:
        self._remaining = 0
        self._footer = False
        if footer:
            head = data[pos : pos + 2]
            if head != _CRLF[: len(head)]:
                return MALFORMED
            if len(head) < 2:
                self._pending = data[pos:]
                self._footer = True
                return None
            pos += 2
        if data.find(_CRLF, pos) == -1 and len(data) - pos <= MAX_PENDING:
            self._pending = data[pos:]
            return None
        return data[pos:]
