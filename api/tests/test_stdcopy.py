"""Docker's 8-byte stream framing: exact bytes, incremental decoding, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.stdcopy import HEADER_SIZE, STDERR, STDIN, STDOUT, SYSTEMERR, FrameDecoder, frame


@pytest.mark.parametrize(
    ("stream", "data", "wire"),
    [
        (STDOUT, b"hi\n", b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"),
        (STDERR, b"oops", b"\x02\x00\x00\x00\x00\x00\x00\x04oops"),
        (STDIN, b"", b"\x00\x00\x00\x00\x00\x00\x00\x00"),
        (SYSTEMERR, b"x" * 256, b"\x03\x00\x00\x00\x00\x00\x01\x00" + b"x" * 256),
        (1, b"y" * 0x10203, b"\x01\x00\x00\x00\x00\x01\x02\x03" + b"y" * 0x10203),
    ],
)
def test_frame_bytes(stream: int, data: bytes, wire: bytes) -> None:
    assert frame(stream, data) == wire
    assert FrameDecoder().feed(wire) == [(stream, data)]


@pytest.mark.parametrize("stream", [-1, 4, 255])
def test_frame_rejects_unknown_stream(stream: int) -> None:
    with pytest.raises(ValueError):
        frame(stream, b"x")


def test_decoder_holds_partial_frames() -> None:
    decoder = FrameDecoder()
    wire = frame(STDOUT, b"hello") + frame(STDERR, b"world")
    assert decoder.feed(wire[:3]) == []
    assert decoder.feed(wire[3:10]) == []
    assert decoder.pending == 10
    assert decoder.feed(wire[10:15]) == [(STDOUT, b"hello")]
    assert decoder.pending == 2
    assert decoder.feed(wire[15:]) == [(STDERR, b"world")]
    assert decoder.pending == 0


def test_decoder_rejects_unknown_stream() -> None:
    with pytest.raises(ValueError, match="unrecognized input header: 7"):
        FrameDecoder().feed(b"\x07\x00\x00\x00\x00\x00\x00\x01x")


def test_decoded_streams_compare_as_ints() -> None:
    ((stream, _),) = FrameDecoder().feed(frame(2, b"e"))
    assert stream == 2 and isinstance(stream, int)


@given(
    frames=st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=300)), max_size=20),
    cuts=st.lists(st.integers(0, 7000), max_size=10),
)
def test_round_trip_with_arbitrary_splits(frames: list[tuple[int, bytes]], cuts: list[int]) -> None:
    wire = b"".join(frame(s, d) for s, d in frames)
    assert len(wire) == sum(HEADER_SIZE + len(d) for _, d in frames)
    decoder = FrameDecoder()
    out: list[tuple[int, bytes]] = []
    start = 0
    for cut in [*sorted({min(c, len(wire)) for c in cuts}), len(wire)]:
        out += decoder.feed(wire[start:cut])
        start = cut
    assert out == frames
    assert decoder.pending == 0
