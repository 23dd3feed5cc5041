"""Pure parts of runc.py and types.py: argv builders, runc log parsing, error translation, signals."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from engine import errdefs
from runtime import runc, runc_cli
from runtime.types import StartError, parse_signal


def test_global_args_with_json_log() -> None:
    assert runc_cli.global_args("runc", Path("/run/skiff/runc"), Path("/l/x.json")) == [
        "runc",
        "--root",
        "/run/skiff/runc",
        "--log",
        "/l/x.json",
        "--log-format",
        "json",
    ]
    assert runc_cli.global_args("crun", Path("/r"), None) == ["crun", "--root", "/r"]


def test_create_and_exec_args() -> None:
    assert runc_cli.create_args("c1", Path("/b/c1"), Path("/b/c1/init.pid"), None) == [
        "create",
        "--bundle",
        "/b/c1",
        "--pid-file",
        "/b/c1/init.pid",
        "c1",
    ]
    assert runc_cli.create_args("c1", Path("/b"), Path("/p"), Path("/tmp/s.sock"))[-3:] == [
        "--console-socket",
        "/tmp/s.sock",
        "c1",
    ]
    assert runc_cli.exec_args("c1", Path("/b/e.json"), Path("/b/e.pid"), None) == [
        "exec",
        "--process",
        "/b/e.json",
        "--detach",
        "--pid-file",
        "/b/e.pid",
        "c1",
    ]
    assert "--console-socket" in runc_cli.exec_args("c1", Path("/p"), Path("/q"), Path("/s"))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (runc_cli.start_args("c"), ["start", "c"]),
        (runc_cli.kill_args("c", 15), ["kill", "c", "15"]),
        (runc_cli.kill_args("c", 9, all=True), ["kill", "--all", "c", "9"]),
        (runc_cli.delete_args("c"), ["delete", "c"]),
        (runc_cli.delete_args("c", force=True), ["delete", "--force", "c"]),
        (runc_cli.pause_args("c"), ["pause", "c"]),
        (runc_cli.resume_args("c"), ["resume", "c"]),
        (runc_cli.update_args("c"), ["update", "--resources", "-", "c"]),
        (runc_cli.state_args("c"), ["state", "c"]),
        (runc_cli.list_args(), ["list", "--format", "json"]),
    ],
)
def test_verb_args(argv: list[str], expected: list[str]) -> None:
    assert argv == expected


def test_last_error_takes_the_last_error_entry() -> None:
    log = "\n".join(
        [
            '{"level":"warning","msg":"something odd","time":"t"}',
            '{"level":"error","msg":"first","time":"t"}',
            "not json at all",
            '{"level":"error","msg":"runc create failed: boom","time":"t"}',
            '{"level":"info","msg":"later info","time":"t"}',
        ]
    )
    assert runc_cli.last_error(log) == "runc create failed: boom"
    assert runc_cli.last_error("") is None


NOT_FOUND = (
    'runc create failed: unable to start container process: exec: "nope": executable file not found in $PATH'
)


def test_create_error_missing_executable() -> None:
    err = runc_cli.create_error(NOT_FOUND)
    assert isinstance(err, StartError) and isinstance(err, errdefs.InvalidParameter)
    assert err.exit_code == 127
    assert err.message == (
        "failed to create task for container: failed to create shim task: OCI runtime create failed: "
        "runc create failed: unable to start "
        'container process: exec: "nope": executable file not found in $PATH: unknown'
    )


def test_exec_error_wording() -> None:
    err = runc_cli.exec_error(
        'exec failed: unable to start container process: exec: "/x": stat /x: no such file or directory'
    )
    assert isinstance(err, StartError) and err.exit_code == 127
    assert err.message.startswith("OCI runtime exec failed: exec failed: ")
    assert err.message.endswith("no such file or directory: unknown")


def test_permission_denied_and_is_a_directory_are_126() -> None:
    denied = runc_cli.create_error(
        'runc create failed: unable to start container process: exec: "/etc": permission denied'
    )
    assert isinstance(denied, StartError) and denied.exit_code == 126
    isdir = runc_cli.create_error(
        'runc create failed: unable to start container process: exec: "/etc": is a directory'
    )
    assert isinstance(isdir, StartError) and isdir.exit_code == 126
    # dockerd appends EACCES's text so that the CLI's 126 detection still fires.
    assert isdir.message.endswith("is a directory: unknown: permission denied")


def test_not_a_directory_gets_the_mount_hint() -> None:
    err = runc_cli.create_error("runc create failed: mount /a to rootfs at /b: not a directory")
    assert isinstance(err, StartError) and err.exit_code == 127
    assert "Are you trying to mount a directory onto a file (or vice-versa)?" in err.message


def test_other_create_failures_are_internal() -> None:
    err = runc_cli.create_error("runc create failed: unable to apply cgroup configuration: boom")
    assert type(err) is errdefs.Internal


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("container does not exist", errdefs.NotFound),
        ("container not running", errdefs.Conflict),
        ("cannot delete container c that is not stopped: running", errdefs.Conflict),
        ("container not paused", errdefs.Conflict),
        ("something broke", errdefs.Internal),
    ],
)
def test_command_error_types(message: str, kind: type[errdefs.EngineError]) -> None:
    err = runc_cli.command_error(message)
    assert type(err) is kind and err.message == message


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        (15, 15),
        ("15", 15),
        ("TERM", 15),
        ("SIGTERM", 15),
        ("sigkill", 9),
        ("WINCH", signal.SIGWINCH),
        ("RTMIN+3", signal.SIGRTMIN + 3),
        ("SIGRTMAX-1", signal.SIGRTMAX - 1),
    ],
)
def test_parse_signal(raw: int | str, number: int) -> None:
    assert parse_signal(raw) == number


@pytest.mark.parametrize("raw", ["NOPE", "0", 0, 99, "SIGFOO"])
def test_parse_signal_rejects(raw: int | str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as caught:
        parse_signal(raw)
    assert caught.value.message == f"Invalid signal: {raw}"


def test_spec_facts() -> None:
    facts = runc._SpecFacts.of(
        {
            "process": {"terminal": True},
            "linux": {
                "cgroupsPath": "/skiff/abc",
                "namespaces": [{"type": "mount"}, {"type": "pid", "path": "/proc/1/ns/pid"}],
            },
        }
    )
    assert facts == runc._SpecFacts(
        cgroups_path="/skiff/abc", own_pid_namespace=False, terminal=True, fast_exec=True
    )
    assert runc._SpecFacts.of({"linux": {"namespaces": [{"type": "pid"}]}}).own_pid_namespace
