#!/usr/bin/env python3
"""Receiving a chunked request body (issue 5): the server protocol alone, fast path vs h11, A/B.

Feeds the body ``docker cp`` sends for a 100 MiB tree of 1,000 files (a 512-byte tar header chunk
per file, then its data in 32 KiB chunks: about 5,000 chunks) to ``PingFastPathProtocol`` in
256 KiB reads (asyncio's read size) on an in-memory transport, to an ASGI app that reads and
drops the body, and times it; then the same with the fast path switched off, i.e. h11 reading
every chunk as before. Runs alternate (A, B, A, B, ...); medians are printed. No sockets.

    bench/chunked_body.py --runs 9
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import uvicorn  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from api.ping import PingFastPathProtocol  # noqa: E402

READ_SIZE = 256 * 1024
COPY_BUFFER = 32 * 1024
HEAD = (
    b"PUT /v1.50/containers/c/archive?path=%2F HTTP/1.1\r\n"
    b"Host: api.moby.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class H11Only(PingFastPathProtocol):
    def _chunked_head_end(self, data: bytes) -> int:
        return 0


def cp_body(mib: int, files: int) -> tuple[bytes, int]:
    each = mib * 1024 * 1024 // files
    data = bytes(each)
    parts = [HEAD]
    count = 0
    for _ in range(files):
        pieces = [bytes(512)] + [data[i : i + COPY_BUFFER] for i in range(0, each, COPY_BUFFER)]
        for piece in pieces:
            parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            count += 1
    parts.append(b"0\r\n\r\n")
    return b"".join(parts), count


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def drain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    total = 0
    while True:
        message = await receive()
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    answer = str(total).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]}
    )
    await send({"type": "http.response.body", "body": answer})


async def one(cls: type[PingFastPathProtocol], reads: list[bytes], expected: int) -> float:
    config = uvicorn.Config(drain_app, http=cls, lifespan="off", log_config=None)
    protocol = cls(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)
    start = time.perf_counter()
    for data in reads:
        while not transport.reading:
            await asyncio.sleep(0)
        protocol.data_received(data)
    while not transport.written.endswith(b"\r\n\r\n%d" % expected):
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    protocol.connection_lost(None)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    body, count = cp_body(args.mib, args.files)
    reads = [body[i : i + READ_SIZE] for i in range(0, len(body), READ_SIZE)]
    expected = (args.mib * 1024 * 1024 // args.files) * args.files + 512 * args.files
    times: dict[str, list[float]] = {"fast path": [], "h11": []}
    for _ in range(args.runs):
        times["fast path"].append(asyncio.run(one(PingFastPathProtocol, reads, expected)))
        times["h11"].append(asyncio.run(one(H11Only, reads, expected)))
    reads_kib = READ_SIZE // 1024
    print(f"{args.mib} MiB, {count} chunks, {len(reads)} reads of {reads_kib} KiB, median of {args.runs}")
    for name, values in times.items():
        print(f"  {name:<10} {statistics.median(values):.4f} s  (min {min(values):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
