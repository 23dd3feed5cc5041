"""Scenario 4 (attached/): `docker compose up` in the foreground, stopped by `compose stop` from
another process.

The attached `up` follows the project's containers through `GET /events` (type=container and the
project label): on `die` it re-inspects the container and reports "(restarting)" when the daemon
restarts it, then attaches to the new run. `compose stop` then ends both containers and `up` exits 0
after printing each exit code. Checked against dockerd 20.10: same lines, same exit codes.
"""

from __future__ import annotations

from collections.abc import Callable

import composekit  # registered by this directory's conftest
from composekit import Project, ok, read_until


def clean(lines: list[str]) -> list[str]:
    # compose erases the line before an exit message with ESC[K even with --ansi never, and pads
    # the "name |" prefix to the longest name seen so far.
    out = []
    for line in lines:
        line = line.replace("\x1b[K", "").strip()
        name, bar, text = line.partition(" | ")
        out.append(f"{name.strip()} | {text}" if bar else line)
    return out


def test_up_attached_then_stop(project: Callable[..., Project]) -> None:
    p = project("attached")
    up = p.popen("up")
    head = clean(
        read_until(
            up,
            # Stop only once up has attached to the second run: a stop racing that attach ends
            # up's attach with "context canceled" and exit 1, on dockerd as on skiff. The second run
            # prints every 0.2 s because the attach comes after the restart.
            lambda ls: (
                sum(x.endswith("| tick") for x in ls) >= 3 and any(x.endswith("| second run") for x in ls)
            ),
            timeout=40,
        )
    )
    assert up.poll() is None, "\n".join(head)
    assert "Attaching to flaky-1, ticker-1" in head, head
    assert "ticker-1 | hello" in head
    assert "flaky-1 | first run" in head, "\n".join(head)
    # The die event, then an inspect that sees State.Restarting.
    assert "flaky-1 exited with code 1 (restarting)" in head
    assert "flaky-1 | second run" in head

    ok(p("stop", "-t", "10"))
    tail = clean(read_until(up, lambda ls: False, timeout=30))
    assert up.wait(timeout=10) == 0, "\n".join(head + tail)
    assert "ticker-1 | bye" in tail
    assert "ticker-1 exited with code 3" in tail
    # It followed the restarted flaky (second run) to its end.
    assert "flaky-1 exited with code 0" in tail

    ticker = p.inspect(f"{p.name}-ticker-1")
    assert ticker["State"]["Status"] == "exited"
    assert ticker["State"]["ExitCode"] == 3
    flaky = p.inspect(f"{p.name}-flaky-1")
    assert flaky["State"]["Status"] == "exited"
    assert flaky["State"]["ExitCode"] == 0
    assert flaky["RestartCount"] == 1
    assert composekit.PROJECT_LABEL in flaky["Config"]["Labels"]
