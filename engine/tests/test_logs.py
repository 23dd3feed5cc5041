"""json-file logging: byte-exact lines (checked against dockerd 20.10), rotation, tail, follow."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from collections.abc import Coroutine
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import errdefs
from engine.containers.jsonlog import TimeParser, fixed_nano, gzip_extra
from engine.containers.logconfig import (
    ensure_readable,
    extra_attributes,
    parse_log_config,
    parse_since,
    parse_tail,
    parse_timestamp,
    parse_until,
    validate_log_config,
    validate_log_options,
)
from engine.containers.logread import read_logs
from engine.containers.logs import PARTIAL_MAX, JsonFileLogger, active_logger

T0 = datetime(2026, 11, 27, 21, 1, 52, 419040, tzinfo=UTC)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines()]


async def collect(path: Path, **kw: Any) -> list[tuple[str, bytes]]:
    kw.setdefault("stdout", True)
    kw.setdefault("stderr", True)
    async with aclosing(read_logs(path, **kw)) as it:
        return [item async for item in it]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "c0ffee-json.log"


# --- the line format --------------------------------------------------------------------------


def test_line_is_byte_identical_to_dockerd(log_path: Path) -> None:
    # Captured from dockerd 20.10: printf 'a\tb<>&"\\ \001 \342\200\250 x\n' and invalid UTF-8.
    async def main() -> None:
        lg = JsonFileLogger(log_path)
        lg.write("stdout", b'a\tb<>&"\\ \x01 \xe2\x80\xa8 x\n', T0 + timedelta(microseconds=-0.9))
        lg.write("stdout", b"\xff\xfebad \xe2\x82A\n", T0)
        lg.write("stderr", b"err\r\n", T0)
        await lg.close()

    run(main())
    assert log_path.read_bytes().splitlines(keepends=True) == [
        b'{"log":"a\\u0009b\\u003c\\u003e\\u0026\\"\\\\ \\u0001 \\u2028 x\\n","stream":"stdout",'
        b'"time":"2026-11-27T21:01:52.419039Z"}\n',
        b'{"log":"\\ufffd\\ufffdbad \\ufffd\\ufffdA\\n","stream":"stdout",'
        b'"time":"2026-11-27T21:01:52.41904Z"}\n',
        b'{"log":"err\\r\\n","stream":"stderr","time":"2026-11-27T21:01:52.41904Z"}\n',
    ]
    assert oct(log_path.stat().st_mode & 0o777) == "0o640"


def test_time_is_rfc3339nano_with_trimmed_fraction(log_path: Path) -> None:
    lg = JsonFileLogger(log_path)  # no running loop: writes go to disk inline
    lg.write("stdout", b"a\n", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    lg.write("stdout", b"b\n", datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC))
    run(lg.close())
    assert [e["time"] for e in lines(log_path)] == ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.5Z"]
    assert fixed_nano("2026-01-02T03:04:05.5Z") == "2026-01-02T03:04:05.500000000Z"
    assert fixed_nano("2026-01-02T03:04:05Z") == "2026-01-02T03:04:05.000000000Z"
    assert TimeParser().parse("2026-01-02T05:04:05.000000001+02:00") == 1767323045_000000001


def test_attrs_are_written_between_stream_and_time(log_path: Path) -> None:
    lg = JsonFileLogger(log_path, attrs={"z": "1", "a": "<b>"})
    lg.write("stdout", b"x\n", T0)
    run(lg.close())
    assert log_path.read_bytes() == (
        b'{"log":"x\\n","stream":"stdout","attrs":{"a":"\\u003cb\\u003e","z":"1"},'
        b'"time":"2026-11-27T21:01:52.41904Z"}\n'
    )
    out = run(collect(log_path, details=True))
    assert out == [("stdout", b"a=%3Cb%3E,z=1 x\n")]


# --- partial lines (dockerd's copier: 16 KiB buffer, unterminated rest at close) -----------------


def test_long_line_is_split_into_partials_sharing_the_first_time(log_path: Path) -> None:
    # dockerd 20.10 wrote 40000 x + "tail\n" as 16384, 16384, 7237 bytes, all with one timestamp.
    async def main() -> None:
        lg = JsonFileLogger(log_path)
        lg.write("stdout", b"x" * 40000, T0)
        lg.write("stdout", b"tail\nnext\n", T0 + timedelta(seconds=1))
        lg.write("stdout", b"y" * PARTIAL_MAX, T0 + timedelta(seconds=2))
        lg.write("stdout", b"\n", T0 + timedelta(seconds=3))
        await lg.close()

    run(main())
    got = [(len(e["log"]), e["log"][-5:], e["time"][17:]) for e in lines(log_path)]
    assert got == [
        (16384, "xxxxx", "52.41904Z"),
        (16384, "xxxxx", "52.41904Z"),
        (7237, "tail\n", "52.41904Z"),
        (5, "next\n", "53.41904Z"),
        (16384, "yyyyy", "54.41904Z"),
        (1, "\n", "54.41904Z"),
    ]


def test_unterminated_output_is_flushed_at_close_without_newline(log_path: Path) -> None:
    async def main() -> list[tuple[str, bytes]]:
        lg = JsonFileLogger(log_path)
        lg.write("stdout", b"no newline", T0)
        lg.write("stderr", b"err part", T0)
        lg.write("stdout", b"late", T0 + timedelta(seconds=1))
        await lg.close()
        return await collect(log_path)

    out = run(main())
    assert sorted(out) == [("stderr", b"err part"), ("stdout", b"no newlinelate")]
    assert all(not e["log"].endswith("\n") for e in lines(log_path))


# --- rotation ------------------------------------------------------------------------------------


def write_numbered(path: Path, n: int, **kw: Any) -> None:
    async def main() -> None:
        lg = JsonFileLogger(path, **kw)
        for i in range(n):
            lg.write("stdout" if i % 3 else "stderr", b"line %03d\n" % i, T0 + timedelta(seconds=i))
            if i % 7 == 0:
                await lg.flush()
        await lg.close()

    run(main())


def test_rotation_keeps_max_file_files(log_path: Path) -> None:
    write_numbered(log_path, 100, max_size=300, max_file=3)
    names = sorted(p.name for p in log_path.parent.iterdir())
    assert names == [log_path.name, log_path.name + ".1", log_path.name + ".2"]
    for p in log_path.parent.iterdir():
        # Rotation happens before the entry that finds the file at or over max-size (dockerd).
        assert p.stat().st_size <= 300 + 80
    newest = [e["log"] for e in lines(log_path)]
    previous = [e["log"] for e in lines(Path(str(log_path) + ".1"))]
    assert newest[-1] == "line 099\n"
    assert int(previous[-1][5:8]) + 1 == int(newest[0][5:8])


def test_max_file_one_replaces_the_file(log_path: Path) -> None:
    write_numbered(log_path, 50, max_size=200)
    assert [p.name for p in log_path.parent.iterdir()] == [log_path.name]
    assert lines(log_path)[-1]["log"] == "line 049\n"
    assert log_path.stat().st_size <= 200 + 80


def test_compressed_rotation_matches_dockerd_header(log_path: Path) -> None:
    write_numbered(log_path, 60, max_size=300, max_file=3, compress=True)
    gz = Path(str(log_path) + ".1.gz")
    assert sorted(p.name for p in log_path.parent.iterdir()) == [
        log_path.name,
        gz.name,
        log_path.name + ".2.gz",
    ]
    raw = gz.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x04" and raw[9] == 0xFF  # FEXTRA, OS unknown: Go's gzip.Writer
    last = json.loads(gzip.decompress(raw).splitlines()[-1])["time"]
    assert json.loads(gzip_extra(raw) or b"") == {"lastTime": last}
    out = run(collect(log_path))
    assert out[-1] == ("stdout", b"line 059\n") and len(out) > 10
    numbers = [int(b[5:8]) for _, b in out]
    assert numbers == list(range(numbers[0], 60))


# --- reading: tail, since/until, timestamps, streams ---------------------------------------------


def test_tail_reads_backwards_across_rotated_files(log_path: Path) -> None:
    write_numbered(log_path, 100, max_size=300, max_file=5)
    assert len(list(log_path.parent.iterdir())) == 5
    out = run(collect(log_path, tail=15))
    assert [b for _, b in out] == [b"line %03d\n" % i for i in range(85, 100)]
    everything = run(collect(log_path))
    assert run(collect(log_path, tail=10_000)) == everything
    assert run(collect(log_path, tail=0)) == []
    # tail counts entries of both streams, then the stream filter applies (dockerd).
    only_err = run(collect(log_path, tail=6, stdout=False))
    assert [b for _, b in only_err] == [b"line 096\n", b"line 099\n"]


def test_since_until_and_timestamps(log_path: Path) -> None:
    write_numbered(log_path, 20)
    base = int(T0.timestamp()) * 10**9 + T0.microsecond * 1000
    out = run(collect(log_path, since_ns=base + 5 * 10**9, until_ns=base + 8 * 10**9, timestamps=True))
    stamp = [(T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode() for i in range(5, 9)]
    assert [b for _, b in out] == [b"%s line %03d\n" % (stamp[i - 5], i) for i in range(5, 9)]
    assert [s for s, _ in out] == ["stdout", "stderr", "stdout", "stdout"]
    assert run(collect(log_path, since_ns=base + 100 * 10**9)) == []


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert run(collect(tmp_path / "nope-json.log", follow=True)) == []


# --- follow --------------------------------------------------------------------------------------


def test_follow_wakes_on_write_and_ends_on_stop(log_path: Path) -> None:
    async def main() -> None:
        lg = JsonFileLogger(log_path)
        lg.write("stdout", b"old\n")
        await lg.flush()
        stop = asyncio.Event()
        got: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def reader() -> None:
            async with aclosing(
                read_logs(log_path, stdout=True, stderr=True, tail=0, follow=True, stop=stop)
            ) as it:
                async for _, data in it:
                    await got.put((time.monotonic(), data))

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.3)
        assert got.empty()
        sent = time.monotonic()
        lg.write("stdout", b"new\n")
        at, data = await got.get()
        assert data == b"new\n"
        assert at - sent < 0.15  # woken by the write, not by a poll interval
        stop.set()
        await asyncio.wait_for(task, 2)
        await lg.close()

    run(main())


def test_follow_crosses_rotation_and_ends_when_logger_closes(log_path: Path) -> None:
    async def main() -> list[bytes]:
        lg = JsonFileLogger(log_path, max_size=200, max_file=2)
        assert active_logger(log_path) is lg
        lg.write("stdout", b"first\n")
        await lg.flush()

        async def reader() -> list[bytes]:
            return [b for _, b in await collect(log_path, follow=True)]

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.1)
        for i in range(40):
            lg.write("stdout", b"msg %02d\n" % i)
            await asyncio.sleep(0.005 if i % 5 else 0.05)
        lg.write("stdout", b"unterminated")
        await lg.close()
        assert active_logger(log_path) is None
        return await asyncio.wait_for(task, 5)

    got = run(main())
    assert got == [b"first\n", *(b"msg %02d\n" % i for i in range(40)), b"unterminated"]


@pytest.mark.parametrize("compress", [False, True])
def test_follow_reads_every_file_when_rotations_outpace_it(log_path: Path, compress: bool) -> None:
    # Several rotations between two reads of the follower: dockerd would skip the middle files.
    async def main() -> list[bytes]:
        lg = JsonFileLogger(log_path, max_size=100, max_file=200, compress=compress)
        stop = asyncio.Event()
        task = asyncio.create_task(collect(log_path, follow=True, stop=stop))
        await asyncio.sleep(0.05)
        for burst in range(10):
            for i in range(20):
                lg.write("stdout", b"msg %03d\n" % (burst * 20 + i))
            await asyncio.sleep(0)
        await lg.close()
        return [b for _, b in await asyncio.wait_for(task, 5)]

    got = run(main())
    assert got == [b"msg %03d\n" % i for i in range(200)]


def test_abandoned_follow_releases_its_files(log_path: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        lg = JsonFileLogger(log_path, max_size=50, max_file=3)
        for i in range(10):
            lg.write("stdout", b"line %d\n" % i)
        await lg.flush()
        baseline = open_fds()
        it = read_logs(log_path, stdout=True, stderr=True, follow=True, tail=1)
        assert await anext(it) == ("stdout", b"line 9\n")
        assert open_fds() > baseline  # the follower holds the live file
        task = asyncio.create_task(anext(it))  # blocks in follow: nothing new is written
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await it.aclose()
        assert open_fds() == baseline
        await lg.close()

    run(main())


def test_follow_on_a_stopped_container_returns_history(log_path: Path) -> None:
    write_numbered(log_path, 3)
    assert len(run(collect(log_path, follow=True))) == 3


# --- throughput sanity (real figures go in bench/) ------------------------------------------------


def test_100k_lines_write_and_read_quickly(log_path: Path) -> None:
    blob = b"".join(b"line %06d some ordinary log text\n" % i for i in range(100_000))

    async def main() -> tuple[float, float, int, list[tuple[str, bytes]]]:
        t0 = time.perf_counter()
        lg = JsonFileLogger(log_path, max_size=2_000_000, max_file=10)
        for i in range(0, len(blob), 32 * 1024):
            lg.write("stdout", blob[i : i + 32 * 1024])
            await lg.drain()
        await lg.close()
        t1 = time.perf_counter()
        n = 0
        async with aclosing(read_logs(log_path, stdout=True, stderr=True)) as it:
            async for _ in it:
                n += 1
        t2 = time.perf_counter()
        tail = await collect(log_path, tail=3)
        return t1 - t0, t2 - t1, n, tail

    write_s, read_s, n, tail = run(main())
    assert n == 100_000
    assert tail[-1] == ("stdout", b"line 099999 some ordinary log text\n")
    assert write_s < 5 and read_s < 8, (write_s, read_s)  # generous: a loaded 2-core CI box


# --- options and parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "config", "message"),
    [
        ("json-file", {"foo": "1"}, "unknown log opt 'foo' for json-file log driver"),
        ("nosuch", {}, 'error looking up logging plugin nosuch: plugin "nosuch" not found'),
        ("syslog", {}, "logger: no log driver named 'syslog' is registered"),
        ("json-file", {"mode": "weird"}, "logger: logging mode not supported: weird"),
        (
            "json-file",
            {"max-buffer-size": "1m"},
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'",
        ),
        (
            "json-file",
            {"mode": "non-blocking", "max-buffer-size": "zz"},
            "error parsing option max-buffer-size: invalid size: 'zz'",
        ),
    ],
)
def test_create_time_log_config_errors(driver: str, config: dict[str, str], message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_log_config(driver, config)
    assert exc.value.message == message


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"max-size": "abc"}, "invalid size: 'abc'"),
        ({"max-size": "0"}, "max-size must be a positive number"),
        ({"max-file": "x"}, 'strconv.Atoi: parsing "x": invalid syntax'),
        ({"max-file": "0"}, "max-file cannot be less than 1"),
        ({"compress": "maybe"}, 'strconv.ParseBool: parsing "maybe": invalid syntax'),
        (
            {"compress": "true", "max-file": "2"},
            "compress cannot be true when max-file is less than 2 or max-size is not set",
        ),
    ],
)
def test_start_time_log_config_errors(config: dict[str, str], message: str) -> None:
    with pytest.raises(errdefs.Internal) as exc:
        parse_log_config("json-file", config)
    assert exc.value.message == f"failed to initialize logging driver: {message}"


def test_log_config_values() -> None:
    opts = parse_log_config(
        "", {"max-size": "10m", "max-file": "3", "compress": "1", "cache-disabled": "true"}
    )
    assert (opts.driver, opts.max_size, opts.max_file, opts.compress) == ("json-file", 10_000_000, 3, True)
    assert parse_log_config("json-file", {"max-size": "1.5KiB"}).max_size == 1500  # FromHumanSize is decimal
    none = parse_log_config("none", {"anything": "goes"})
    assert not none.readable
    with pytest.raises(
        errdefs.NotImplemented_, match=r"^configured logging driver does not support reading$"
    ):
        ensure_readable("none")
    ensure_readable("json-file")
    attrs = extra_attributes(
        {"labels": "a,missing", "env-regex": "^X"}, {"a": "1", "b": "2"}, ["XA=1", "Y=2", "XB=3=4"]
    )
    assert attrs == {"a": "1", "XA": "1", "XB": "3=4"}


def test_logs_query_parameters() -> None:
    with pytest.raises(
        errdefs.InvalidParameter, match=r"^Bad parameters: you must choose at least one stream$"
    ):
        validate_log_options(stdout=False, stderr=False)
    validate_log_options(stdout=False, stderr=True)
    assert parse_timestamp("1700000000") == 1700000000 * 10**9
    assert parse_timestamp("1700000000.5") == 1700000000_500000000
    assert parse_timestamp("1700000000.000000001") == 1700000000_000000001
    assert parse_timestamp("-5") == -5 * 10**9
    for bad, quoted in (("abc", '"abc"'), ("1.x", '"x"'), (" 1", '" 1"'), ("1_0", '"1_0"')):
        with pytest.raises(errdefs.Internal) as exc:
            parse_timestamp(bad)
        assert exc.value.message == f"strconv.ParseInt: parsing {quoted}: invalid syntax"
    assert parse_since("") is None and parse_since(None) is None
    assert parse_until("0") is None and parse_until("2") == 2 * 10**9
    tails = [parse_tail(v) for v in ("all", "abc", "-3", "0", "7", None, "+2")]
    assert tails == [None, None, None, 0, 7, None, 2]


def test_write_after_close_is_ignored(log_path: Path) -> None:
    async def main() -> None:
        lg = JsonFileLogger(log_path)
        lg.write("stdout", b"a\n")
        await lg.close()
        lg.write("stdout", b"b\n")
        await lg.close()

    run(main())
    assert [e["log"] for e in lines(log_path)] == ["a\n"]
    assert os.path.getsize(log_path) > 0
