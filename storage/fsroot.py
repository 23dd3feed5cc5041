"""A container's file system as the container sees it, resolved without ever leaving it.

``FsView`` is a root directory (a container's rootfs) plus *overlays*: host files and directories
shown at paths inside it, as the container's bind mounts and volumes are. Nothing is mounted: a
lookup walks the path one component at a time from directory file descriptors, with
``O_NOFOLLOW`` on every step, and when the in-view path reached is an overlay's destination it
continues in that overlay's source instead. Symlinks are read and resolved by this walk as if the
root were ``/``: an absolute target restarts at the root, ``..`` goes back to the parent directory
*as the container sees it* (the mount point's parent when leaving an overlay) and stops at the
root. The kernel never gets a path with a ``/`` or a ``..`` in it, so a link planted by the
container, or swapped while a copy runs, can only lead somewhere else inside the same view.

Every ``Node`` owns a file descriptor (a directory opened ``O_RDONLY|O_DIRECTORY``, anything else
``O_PATH``), so what a caller reads, lists or writes is the object that was resolved, not whatever
a path names a moment later. Regular files are opened for reading by re-opening the ``O_PATH``
descriptor through ``/proc/self/fd`` after checking it is a regular file: a device node swapped in
by the container is never opened.

Also here: the Go conventions dockerd's archive API exposes (``path.Clean``/``Base``,
``os.FileMode`` bits, RFC 3339 times, ``*os.PathError`` texts). Synchronous; callers use threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_LINKS = 40  # Linux's MAXSYMLINKS: what a lookup inside dockerd's chroot'ed view allows
MAX_SCOPE_LINKS = 255  # moby/sys/symlink's FollowSymlinkInScope limit (linkTarget)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

# Go's os.FileMode type bits (io/fs): what X-Docker-Container-Path-Stat's "mode" carries.
MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_SETUID = 1 << 23
MODE_SETGID = 1 << 22
MODE_CHAR_DEVICE = 1 << 21
MODE_STICKY = 1 << 20


# --- Go conventions -----------------------------------------------------------------------------


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: "" is ".", a rooted path cannot climb above "/", a relative one keeps
    its leading ".."s (callers refuse those)."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def go_base(path: str) -> str:
    """Go's ``filepath.Base``: the last element, trailing slashes ignored; "/" for all slashes."""
    if path == "":
        return "."
    stripped = path.rstrip("/")
    if stripped == "":
        return "/"
    return stripped.rsplit("/", 1)[-1]


def go_join(*parts: str) -> str:
    """Go's ``filepath.Join``: non-empty parts joined with "/" and cleaned (an absolute later part
    does *not* restart the path, unlike ``os.path.join``)."""
    kept = [p for p in parts if p]
    return go_clean("/".join(kept)) if kept else ""


def preserve_trailing(cleaned: str, original: str) -> str:
    """dockerd's ``archive.PreserveTrailingDotOrSeparator``: keep the "/." or "/" the client wrote,
    which ``Clean`` removed, because they mean "the directory's contents" / "must be a directory"."""
    if go_base(cleaned) != "." and go_base(original) == ".":
        if not cleaned.endswith("/"):
            cleaned += "/"
        cleaned += "."
    if not cleaned.endswith("/") and original.endswith("/"):
        cleaned += "/"
    return cleaned


def go_file_mode(st_mode: int) -> int:
    """A POSIX ``st_mode`` as Go's ``os.FileMode`` (type and special bits moved, permissions kept)."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= MODE_DIR
    elif kind == stat.S_IFLNK:
        mode |= MODE_SYMLINK
    elif kind == stat.S_IFIFO:
        mode |= MODE_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= MODE_SOCKET
    elif kind == stat.S_IFCHR:
        mode |= MODE_DEVICE | MODE_CHAR_DEVICE
    elif kind == stat.S_IFBLK:
        mode |= MODE_DEVICE
    if st_mode & stat.S_ISUID:
        mode |= MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= MODE_STICKY
    return mode


def rfc3339_nano(ns: int) -> str:
    """Go's ``time.Time`` JSON form (RFC 3339 with nanoseconds, trailing zeros dropped), in UTC."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def go_strerror(code: int) -> str:
    """Go's text for an errno (glibc's, first letter lower-cased: "no such file or directory")."""
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


class PathError(Exception):
    """Go's ``*os.PathError``, ``"{op} {path}: {reason}"``, with the path as the container sees it."""

    def __init__(self, op: str, path: str, code: int) -> None:
        super().__init__(f"{op} {path}: {go_strerror(code)}")
        self.op = op
        self.path = path
        self.errno = code


class ArchiveError(Exception):
    """An archive entry refused or failed for a reason that is not a single system call."""


def _error(code: int | None, path: str) -> OSError:
    code = code or errno.EIO
    return OSError(code, os.strerror(code), path)


def _join(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else f"{parent}/{name}"


def _parts(path: str) -> deque[str]:
    return deque(p for p in path.split("/") if p not in ("", "."))


# --- the view -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlay:
    """A host file or directory shown at ``destination`` inside the view (a bind mount or volume)."""

    destination: str
    source: str
    writable: bool = True


class Node:
    """One resolved object: an owned descriptor, its path as the container sees it (symlinks
    resolved), its ``lstat`` and whether writes are allowed there. ``parent`` is what ``..`` means.

    The descriptor is closed by ``close()`` or when the last reference goes (CPython frees it
    deterministically), so walks can share ancestors without bookkeeping.
    """

    __slots__ = ("__weakref__", "fd", "overlay", "parent", "path", "st", "writable")

    def __init__(
        self,
        fd: int,
        path: str,
        st: os.stat_result,
        writable: bool,
        parent: Node | None,
        overlay: Overlay | None = None,
    ) -> None:
        self.fd = fd
        self.path = path
        self.st = st
        self.writable = writable
        self.parent = parent
        self.overlay = overlay  # set on the node that *is* an overlay's root

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class _Mounted:
    overlay: Overlay
    fd: int
    st: os.stat_result


class FsView:
    """The container's root plus its overlays (see the module docstring).

    ``root_fd`` is duplicated (the caller keeps its own). Overlay sources are opened once, here,
    and pinned for the view's life; their destinations are resolved in the order given (parents
    first, as dockerd sorts mounts) through the overlays already placed, as runc resolves each
    mount target in the rootfs it has built so far. ``writable=False`` refuses every write outside
    writable overlays.
    """

    def __init__(self, root_fd: int, overlays: Sequence[Overlay] = (), *, writable: bool = True) -> None:
        fd = os.dup(root_fd)
        self.root = Node(fd, "/", os.fstat(fd), writable, None)
        # Every node handed out, so that close() leaves no descriptor behind even when one is
        # still referenced (an exception's traceback keeps frames, and their nodes, alive).
        self._nodes: weakref.WeakSet[Node] = weakref.WeakSet([self.root])
        self._mounts: dict[str, _Mounted] = {}
        self._children: dict[str, set[str]] = {}
        try:
            for overlay in overlays:
                self._place(overlay)
        except BaseException:
            self.close()
            raise

    def _place(self, overlay: Overlay) -> None:
        dest = go_clean("/" + overlay.destination)
        # A destination that cannot be resolved (a file on the way) stays where it was asked:
        # runc would refuse to start such a container, but a created one can still be copied to.
        with contextlib.suppress(OSError, ArchiveError):
            dest = self.canonical(dest)
        if dest == "/":
            return  # a mount over "/" is not something a container can have; ignore it
        fd = os.open(overlay.source, os.O_PATH | os.O_CLOEXEC)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            fd = os.open(overlay.source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(fd)
        old = self._mounts.pop(dest, None)
        if old is not None:
            os.close(old.fd)
        self._mounts[dest] = _Mounted(overlay, fd, st)
        parent, _, name = dest.rpartition("/")
        self._children.setdefault(parent or "/", set()).add(name)

    def close(self) -> None:
        for node in list(self._nodes):
            node.close()
        for mounted in self._mounts.values():
            os.close(mounted.fd)
        self._mounts.clear()

    def __enter__(self) -> FsView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups --------------------------------------------------------------------------------

    def overlay_at(self, path: str) -> Overlay | None:
        """The overlay whose destination is exactly ``path`` (a canonical in-view path)."""
        mounted = self._mounts.get(path)
        return mounted.overlay if mounted else None

    def overlay_for(self, path: str) -> Overlay | None:
        """The innermost overlay containing the canonical in-view ``path``, if any."""
        probe = path
        while True:
            mounted = self._mounts.get(probe)
            if mounted is not None:
                return mounted.overlay
            if probe == "/":
                return None
            probe = probe.rsplit("/", 1)[0] or "/"

    def mounts_below(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return [dest for dest in self._mounts if dest.startswith(prefix)]

    def child(self, parent: Node, name: str) -> Node:
        """``name`` inside directory ``parent``, not followed if it is a symlink (``lstat``)."""
        path = _join(parent.path, name)
        mounted = self._mounts.get(path)
        if mounted is not None:
            overlay = mounted.overlay
            return self._track(Node(os.dup(mounted.fd), path, mounted.st, overlay.writable, parent, overlay))
        o_path = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise _error(e.errno, path) from None
            try:
                fd = os.open(name, _PATH_FLAGS, dir_fd=parent.fd)
            except OSError as e2:
                raise _error(e2.errno, path) from None
            o_path = True
        st = os.fstat(fd)
        if o_path and stat.S_ISDIR(st.st_mode):
            # Became a directory between the two opens: re-open the very inode for listing.
            fd2 = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            os.close(fd)
            fd = fd2
        return self._track(Node(fd, path, st, parent.writable, parent))

    def _track(self, node: Node) -> Node:
        self._nodes.add(node)
        return node

    def names(self, directory: Node) -> list[str]:
        """The entries of a directory node, overlays placed in it included, in byte order."""
        found = set(os.listdir(directory.fd))
        found |= self._children.get(directory.path, set())
        return sorted(found, key=os.fsencode)

    def walk(
        self,
        start: Node,
        rel: str,
        *,
        follow: bool,
        create: tuple[int, int, int] | None = None,
    ) -> Node:
        """Resolve ``rel`` from ``start`` (an absolute ``rel`` starts at the root).

        ``follow``: resolve a symlink in the last component too. A trailing "/" or "/." demands a
        directory (and follows). ``create=(mode, uid, gid)`` makes every missing component a
        directory, owned and moded so (``MkdirAll``). Raises OSError with the in-view path.
        """
        must_be_dir = rel.endswith("/") or go_base(rel) in (".", "..")
        follow = follow or must_be_dir
        parts = _parts(rel)
        node = self.root if rel.startswith("/") else start
        links = 0
        while parts:
            comp = parts.popleft()
            if not node.is_dir:
                raise _error(errno.ENOTDIR, node.path)
            if comp == "..":
                node = node.parent or node
                continue
            try:
                child = self.child(node, comp)
            except FileNotFoundError:
                if create is None:
                    raise
                child = self._mkdir(node, comp, create)
            if child.is_link and (parts or follow):
                links += 1
                if links > MAX_LINKS:
                    raise _error(errno.ELOOP, child.path)
                target = os.readlink("", dir_fd=child.fd)
                if target.startswith("/"):
                    node = self.root
                parts.extendleft(reversed(_parts(target)))
                continue
            node = child
        if must_be_dir and not node.is_dir:
            raise _error(errno.ENOTDIR, node.path)
        return node

    def lookup(self, path: str, *, follow: bool = False) -> Node:
        return self.walk(self.root, path if path.startswith("/") else "/" + path, follow=follow)

    def _mkdir(self, parent: Node, name: str, create: tuple[int, int, int]) -> Node:
        mode, uid, gid = create
        path = _join(parent.path, name)
        if not parent.writable:
            raise _error(errno.EROFS, path)
        os.mkdir(name, 0o700, dir_fd=parent.fd)
        node = self.child(parent, name)
        if not node.is_dir:
            raise _error(errno.EEXIST, path)
        os.fchown(node.fd, uid, gid)
        os.fchmod(node.fd, mode)
        node.st = os.fstat(node.fd)
        return node

    def canonical(self, path: str) -> str:
        """moby's ``FollowSymlinkInScope(path, "/")``: every symlink resolved inside the view; what
        does not exist is kept as written. Raises ArchiveError on a loop, OSError otherwise."""
        parts = _parts(path)
        node = self.root
        tail: list[str] = []
        links = 0
        while parts:
            comp = parts.popleft()
            if comp == "..":
                if tail:
                    tail.pop()
                else:
                    node = node.parent or node
                continue
            if tail:
                tail.append(comp)
                continue
            if not node.is_dir:
                raise _error(errno.ENOTDIR, _join(node.path, comp))
            try:
                child = self.child(node, comp)
            except FileNotFoundError:
                tail.append(comp)
                continue
            if child.is_link:
                links += 1
                if links > MAX_SCOPE_LINKS:
                    raise ArchiveError(f"evalSymlinksInScope: too many links in {go_clean('/' + path)}")
                target = os.readlink("", dir_fd=child.fd)
                if target.startswith("/"):
                    node = self.root
                parts.extendleft(reversed(_parts(target)))
                continue
            node = child
        return "/".join([node.path.rstrip("/"), *tail]) if tail else node.path

    # -- reading --------------------------------------------------------------------------------

    def readlink(self, node: Node) -> str:
        return os.readlink("", dir_fd=node.fd)

    def open_regular(self, node: Node) -> int:
        """A read-only descriptor of the regular file ``node`` resolved to (never a device/fifo)."""
        if not stat.S_ISREG(node.st.st_mode):
            raise _error(errno.EINVAL, node.path)
        fd = os.open(f"/proc/self/fd/{node.fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (node.st.st_dev, node.st.st_ino) or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _error(errno.EINVAL, node.path)
        return fd

    def read_file(self, path: str, limit: int = 64 << 20) -> bytes | None:
        """Contents of the regular file at ``path`` (followed), or None if there is none."""
        try:
            node = self.lookup(path, follow=True)
            fd = self.open_regular(node)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read(limit)
