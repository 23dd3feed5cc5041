"""runc's command line as pure functions: argv per verb, its JSON log, and its errors as errdefs.

Kept apart from the process-running code so every argv and every error text is unit-tested
without root. Error texts are the ones clients see through dockerd 28: containerd wraps runc's
message ("failed to create shim task: OCI runtime create failed: ...: unknown"), dockerd (>= 25,
libcontainerd NewTask) prefixes "failed to create task for container: ", and its
translateContainerdStartErr turns config mistakes into 400s with exit codes 127/126, which the
docker CLI in turn picks its own exit code from (by substring, so the prefixes do not matter to it).
"""

from __future__ import annotations

import json
from pathlib import Path

from engine import errdefs
from runtime.types import StartError

# --- argv builders (pure) -------------------------------------------------------------------


def global_args(binary: str, root: Path, log: Path | None) -> list[str]:
    argv = [binary, "--root", str(root)]
    if log is not None:
        argv += ["--log", str(log), "--log-format", "json"]
    return argv


def create_args(container_id: str, bundle: Path, pid_file: Path, console_socket: Path | None) -> list[str]:
    argv = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
    if console_socket is not None:
        argv += ["--console-socket", str(console_socket)]
    return [*argv, container_id]


def start_args(container_id: str) -> list[str]:
    return ["start", container_id]


def kill_args(container_id: str, sig: int, all: bool = False) -> list[str]:
    return ["kill", *(["--all"] if all else []), container_id, str(sig)]


def delete_args(container_id: str, force: bool = False) -> list[str]:
    return ["delete", *(["--force"] if force else []), container_id]


def pause_args(container_id: str) -> list[str]:
    return ["pause", container_id]


def resume_args(container_id: str) -> list[str]:
    return ["resume", container_id]


def exec_args(
    container_id: str, process_file: Path, pid_file: Path, console_socket: Path | None
) -> list[str]:
    argv = ["exec", "--process", str(process_file), "--detach", "--pid-file", str(pid_file)]
    if console_socket is not None:
        argv += ["--console-socket", str(console_socket)]
    return [*argv, container_id]


def update_args(container_id: str) -> list[str]:
    return ["update", "--resources", "-", container_id]


def state_args(container_id: str) -> list[str]:
    return ["state", container_id]


def list_args() -> list[str]:
    return ["list", "--format", "json"]


# --- error mapping (pure) -------------------------------------------------------------------


def last_error(log_text: str) -> str | None:
    """The message of runc's last error/fatal entry in a --log-format json log."""
    found: str | None = None
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and entry.get("msg"):
            found = str(entry["msg"])
    return found


def translate_start_error(message: str) -> errdefs.EngineError:
    """dockerd's translateContainerdStartErr: config errors are 400 with exit code 127/126."""
    lower = message.lower()
    if any(
        s in lower
        for s in (
            "executable file not found",
            "no such file or directory",
            "system cannot find the file specified",
            "failed to run runc create/exec call",
        )
    ):
        error: errdefs.EngineError = StartError(message, 127)
    else:
        error = errdefs.Internal(message)
    if "permission denied" in lower:
        error = StartError(message, 126)
    if "is a directory" in lower:
        # Go >= 1.20 reports EISDIR; dockerd appends EACCES's text so the CLI still exits 126.
        return StartError(message + ": permission denied", 126)
    if "not a directory" in lower:
        return StartError(
            message + ": Are you trying to mount a directory onto a file (or vice-versa)? "
            "Check if the specified host path exists and is the expected type",
            127,
        )
    return error


CREATE_TASK_PREFIX = "failed to create task for container: "


def create_error(runc_message: str) -> errdefs.EngineError:
    # containerd wraps runc's text like this (": unknown" is its gRPC code suffix); dockerd 28's
    # libcontainerd adds the outer prefix.
    return translate_start_error(
        f"{CREATE_TASK_PREFIX}failed to create shim task: OCI runtime create failed: {runc_message}: unknown"
    )


def exec_error(runc_message: str) -> errdefs.EngineError:
    return translate_start_error(f"OCI runtime exec failed: {runc_message}: unknown")


def command_error(runc_message: str) -> errdefs.EngineError:
    lower = runc_message.lower()
    if "does not exist" in lower:
        return errdefs.NotFound(runc_message)
    if any(s in lower for s in ("not running", "not stopped", "not paused", "already paused", "is paused")):
        return errdefs.Conflict(runc_message)
    return errdefs.Internal(runc_message)
