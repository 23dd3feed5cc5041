"""Resolve ``Config.User`` (+ ``HostConfig.GroupAdd``) against the image's /etc/passwd and /etc/group.

Semantics follow moby/sys/user GetExecUser / GetAdditionalGroups as dockerd's getUser uses them:
"", "name", "uid", "name:group", "uid:gid" (any mix); numeric ids need no entry; a user given
without a group gets the supplementary groups that list it; the primary gid leads additionalGids.

The rootfs is untrusted (an image or a running container's writable layer), so files are opened
component by component with O_NOFOLLOW relative to directory fds, resolving symlinks as if the
rootfs were "/" (absolute targets restart at the rootfs, ".." stops there). Nothing outside the
rootfs is ever opened, even if a link is swapped while we walk (each step is pinned by an fd).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine import errdefs
from engine.containers import gofmt

MIN_ID, MAX_ID = 0, (1 << 31) - 1
_MAX_LINKS = 255  # moby/sys/symlink's limit before "too many links"
_MAX_FILE_BYTES = 64 << 20  # passwd/group beyond this is hostile, not a real database
_NO_PASSWD = "no matching entries in passwd file"
_NO_GROUP = "no matching entries in group file"
_ERR_RANGE = f"uids and gids must be in range {MIN_ID}-{MAX_ID}"


@dataclass(frozen=True)
class ResolvedUser:
    """process.user of the OCI spec; ``additional_gids`` already starts with ``gid`` as dockerd emits it."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()

    def to_oci(self) -> dict[str, object]:
        user: dict[str, object] = {"uid": self.uid, "gid": self.gid}
        if self.additional_gids:
            user["additionalGids"] = list(self.additional_gids)
        return user


@dataclass(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class _GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _fields(line: str, count: int) -> list[str]:
    parts = line.split(":")[:count]
    return parts + [""] * (count - len(parts))


def _lines(data: bytes) -> list[str]:
    # bytes.TrimSpace per line; comment lines are skipped as glibc does.
    text = data.decode("utf-8", errors="surrogateescape")
    return [s for s in (raw.strip() for raw in text.split("\n")) if s and not s.startswith("#")]


def parse_passwd(data: bytes) -> list[_PasswdEntry]:
    out = []
    for line in _lines(data):
        name, _pw, uid, gid = _fields(line, 4)
        # Go ignores conversion errors here ("misbehaving configuration files") and uses 0.
        out.append(_PasswdEntry(name, gofmt.atoi(uid) or 0, gofmt.atoi(gid) or 0))
    return out


def parse_group(data: bytes) -> list[_GroupEntry]:
    out = []
    for line in _lines(data):
        name, _pw, gid, members = _fields(line, 4)
        out.append(_GroupEntry(name, gofmt.atoi(gid) or 0, tuple(members.split(",")) if members else ()))
    return out


def _open_in_root(root_fd: int, relpath: str) -> int | None:
    """A readable fd for the regular file ``relpath`` resolved inside ``root_fd``, else None."""
    stack = [root_fd]
    todo = deque(relpath.split("/"))
    links = 0
    try:
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                return None
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise errdefs.Internal(f"evalSymlinksInScope: too many links in /{relpath}")
                try:
                    target = os.readlink(part, dir_fd=stack[-1])
                except OSError:
                    return None  # swapped under us; the container only hurts itself
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extendleft(reversed(target.split("/")))
                continue
            if stat.S_ISDIR(mode) and todo:
                stack.append(fd)
                continue
            if todo or not stat.S_ISREG(mode):
                os.close(fd)  # a file used as a directory, or a dir/fifo/device as the database
                return None
            try:
                # Reopen the pinned inode for reading; opening a device or fifo never happens.
                return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
            finally:
                os.close(fd)
        return None
    finally:
        for fd in stack[1:]:
            os.close(fd)


def read_file_in_root(rootfs: Path, relpath: str) -> bytes | None:
    """Contents of ``relpath`` inside ``rootfs`` without leaving it; None if absent or not a file."""
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    try:
        fd = _open_in_root(root_fd, relpath)
    finally:
        os.close(root_fd)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(_MAX_FILE_BYTES)


def _in_range(value: int) -> int:
    if not MIN_ID <= value <= MAX_ID:
        raise errdefs.Internal(_ERR_RANGE)
    return value


def exec_user(spec: str, passwd: bytes | None, group: bytes | None) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) for a user spec; None data means the file is absent."""
    user_arg, group_arg = _fields(spec, 2)
    uid_arg, gid_arg = gofmt.atoi(user_arg), gofmt.atoi(group_arg)
    uid, gid, sgids = 0, 0, []
    users = parse_passwd(passwd) if passwd is not None else []
    if user_arg == "":
        matched = [u for u in users if u.uid == 0]
    elif uid_arg is not None:
        matched = [u for u in users if u.uid == uid_arg]
    else:
        matched = [u for u in users if u.name == user_arg]
    matched_name = ""
    if matched:  # first match wins, even when several entries match
        matched_name, uid, gid = matched[0].name, matched[0].uid, matched[0].gid
    elif user_arg != "":
        if uid_arg is None:
            raise errdefs.Internal(f"unable to find user {user_arg}: {_NO_PASSWD}")
        uid = _in_range(uid_arg)
    if group_arg != "" or matched_name != "":
        groups = parse_group(group) if group is not None else []
        if group_arg == "":
            sgids = [g.gid for g in groups if matched_name in g.members]
        else:
            hits = [g for g in groups if (g.gid == gid_arg if gid_arg is not None else g.name == group_arg)]
            if hits:
                gid = hits[0].gid
            elif gid_arg is None:
                raise errdefs.Internal(f"unable to find group {group_arg}: {_NO_GROUP}")
            else:
                gid = _in_range(gid_arg)
    return uid, gid, sgids


def additional_groups(wanted: Sequence[str], group: bytes | None) -> list[int]:
    """--group-add names or gids; numeric gids need no entry.

    dockerd returns these from a Go map (random order); we keep first-seen order. Its quirk of
    failing on a repeated *name* ("Unable to find group x") is kept because it is deterministic.
    """
    groups = [g for g in parse_group(group) if g.name in wanted or str(g.gid) in wanted] if group else []
    seen: dict[int, None] = {}
    for name in wanted:
        found = False
        for g in groups:
            if (g.name == name or str(g.gid) == name) and g.gid not in seen:
                seen[g.gid] = None
                found = True
                break
        if not found:
            gid = gofmt.atoi(name)
            if gid is None:
                raise errdefs.Internal(f"Unable to find group {name}: {_NO_GROUP}")
            seen[_in_range(gid)] = None
    return list(seen)


def resolve_user(user: str, rootfs: Path, group_add: Sequence[str] = ()) -> ResolvedUser:
    """dockerd's getUser over ``rootfs``; blocking file I/O, call it from a worker thread.

    Errors are errdefs.Internal on purpose: dockerd resolves the user inside createSpec, and
    daemon/start.go wraps every createSpec error as errdefs.System, so `docker start` answers
    500 {"message": "unable to find user nope: no matching entries in passwd file"}. The CLI then
    exits 125 (runStartContainerErr maps only "not found"/"permission denied" texts to 127/126);
    verified against the reference dockerd. `docker exec -u nope` fails the same way (500).
    """
    passwd = read_file_in_root(rootfs, "etc/passwd")
    group = read_file_in_root(rootfs, "etc/group")
    uid, gid, sgids = exec_user(user, passwd, group)
    extra = additional_groups(list(group_add), group) if group_add else []
    return ResolvedUser(uid=uid, gid=gid, additional_gids=(gid, *sgids, *extra))
