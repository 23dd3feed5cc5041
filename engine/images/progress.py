"""Docker's JSON message stream (jsonmessage) as dockerd writes it for load, import and pull.

Messages are dicts with dockerd's field order (``stream``, ``status``, ``progressDetail``,
``progress``, ``id``, ``errorDetail``, ``error``, ``aux``). ``encode`` writes one per line the way
Go's encoder does: HTML-sensitive characters escaped (``>`` → ``\\u003e``) and ``\\r\\n`` after
each object, so the byte stream matches dockerd's. The progress bar text follows
``jsonmessage.JSONProgress.String`` with the server-side width (no terminal: 200 columns).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import IO, Any

Message = dict[str, Any]

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_UPDATE_EVERY = 512 * 1024
_RATE_INTERVAL = 0.1


def human_size(size: float) -> str:
    """go-units HumanSize: four significant digits, decimal units (``10.24kB``)."""
    i = 0
    while size >= 1000.0 and i < len(_DECIMAL_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{_DECIMAL_UNITS[i]}"


def progress_bar(current: int, total: int) -> str:
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    percentage = min(int(current / total * 100) // 2, 50)
    bar = "[" + "=" * percentage + ">" + " " * max(50 - percentage, 0) + "] "
    if current > total:
        return bar + f"{human_size(current):>8}"
    return bar + f"{human_size(current):>8}/{human_size(total)}"


def stream(text: str) -> Message:
    return {"stream": text}


def status(text: str, id_: str | None = None) -> Message:
    msg: Message = {"status": text}
    if id_:
        msg["id"] = id_
    return msg


def update(id_: str, text: str) -> Message:
    """progress.Update: a per-layer status line (``Pulling fs layer``, ``Pushed``, …)."""
    return {"status": text, "progressDetail": {}, "id": id_}


def aux(data: dict[str, Any]) -> Message:
    return {"progressDetail": {}, "aux": data}


def progress(id_: str, action: str, current: int, total: int) -> Message:
    detail: dict[str, int] = {}
    if current:
        detail["current"] = current
    if total:
        detail["total"] = total
    msg: Message = {"status": action, "progressDetail": detail}
    bar = progress_bar(current, total)
    if bar:
        msg["progress"] = bar
    msg["id"] = id_
    return msg


def error(message: str) -> Message:
    return {"errorDetail": {"message": message}, "error": message}


def encode(msg: Message) -> bytes:
    text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode() + b"\r\n"


class ProgressMeter:
    """The reporting rule of ``ProgressReader`` for code that counts bytes itself (async downloads):
    ``advance(n)`` returns a message when one is due, ``done()`` the final one."""

    def __init__(self, id_: str, action: str, total: int) -> None:
        self.id = id_
        self.action = action
        self.total = total
        self.current = 0
        self._last_update = 0
        self._last_emit = -_RATE_INTERVAL
        self._every = min(_UPDATE_EVERY, int(0.01 * total)) if total > 0 else _UPDATE_EVERY
        self._sent = -1

    def advance(self, n: int) -> Message | None:
        self.current += n
        if self.current - self._last_update <= self._every:
            return None
        self._last_update = self.current
        now = time.monotonic()
        if self.current == self.total or now - self._last_emit >= _RATE_INTERVAL:
            self._last_emit = now
            self._sent = self.current
            return progress(self.id, self.action, self.current, self.total)
        return None

    def done(self) -> Message | None:
        """The end of the stream (Go's last Read returns the data with EOF): one last update
        unless the latest one already showed everything."""
        if self._sent == self.current:
            return None
        self._sent = self.current
        return progress(self.id, self.action, self.current, self.total)


class ProgressReader(io.RawIOBase):
    """Wraps a readable; reports ``action`` progress like moby's progress.Reader.

    An update goes out after every 1% (at most 512 kB) read, at most every 100 ms unless the end
    is reached, once more at EOF, and a full bar on close if the stream was cut short.
    """

    def __init__(
        self, src: IO[bytes], total: int, id_: str, action: str, emit: Callable[[Message], None]
    ) -> None:
        super().__init__()
        self._src = src
        self._total = total
        self._id = id_
        self._action = action
        self._emit = emit
        self._current = 0
        self._last_update = 0
        self._last_emit = -_RATE_INTERVAL
        self._eof_seen = False  # Go's io.Copy stops at the first EOF; buffered readers ask again
        self._update_every = _UPDATE_EVERY
        if total > 0:
            self._update_every = min(_UPDATE_EVERY, int(0.01 * total))

    def readable(self) -> bool:
        return True

    def _update(self, last: bool) -> None:
        now = time.monotonic()
        if last or self._current == self._total or now - self._last_emit >= _RATE_INTERVAL:
            self._last_emit = now
            self._emit(progress(self._id, self._action, self._current, self._total))

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._src.read(len(view))
        n = len(data)
        view[:n] = data
        self._current += n
        eof = n == 0 and len(view) > 0 and not self._eof_seen
        self._eof_seen = self._eof_seen or eof
        if self._current - self._last_update > self._update_every or eof:
            self._update(eof)
            self._last_update = self._current
        return n

    def finish(self) -> None:
        """moby's Close: a full bar if the stream was not read to the end."""
        if self._current < self._total:
            self._current = self._total
            self._update(False)
