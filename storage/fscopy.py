"""``docker cp`` archives over an ``FsView``: a tar of one path out, a tar extracted into a directory.

Both sides only touch what the view resolves (see ``storage.fsroot``), so they stay inside the
container's root and its overlays whatever links the container plants or swaps.

Out (``export_tar``): dockerd's ``TarWithOptions`` with its rebase, as ``GET /archive`` sends it:
the resource itself under the requested base name, then (for a directory) everything below,
depth first in byte order, overlays included; numeric owners, whole-second mtimes, hard links
within the archive as ``LNKTYPE``; sockets skipped and entries that vanish mid-walk left out, as
dockerd logs and skips them. A file that changes size while it is read is cut or zero-padded to
the size in its header, so the stream stays a valid tar.

In (``extract_tar``): dockerd's ``archive.Unpack`` as ``PUT /archive`` runs it. Names are cleaned
like Go's ``path.Clean`` (a leading "/" is dropped: it means the extraction directory); a name that
climbs out with ".." is refused, a symlink whose target climbs out of the extraction directory is
refused, a hard link must name something inside it. Symlinks already in the tree are followed *in
the view*, so an archive that makes ``l -> /tmp`` and then writes ``l/f`` writes the container's
``/tmp/f``, as dockerd's chroot does, and never the host's. Existing entries are replaced, except
that directories merge; ``no_overwrite_dir_non_dir`` refuses a type change between directory and
non-directory. Owners come from the archive unless ``chown`` overrides them (``copyUIDGID``).
Writes into a read-only overlay (or a read-only root) fail with EROFS, and a mount point cannot be
replaced (EBUSY): what the kernel answers in dockerd's mounted view. Entries extracted before an
error stay, as with dockerd.
"""

from __future__ import annotations

import errno
import io
import json
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Self, cast

from storage.archive import tar_info
from storage.fsroot import ArchiveError, FsView, Node, PathError, go_clean, go_join

BLOCK = 512
_CHUNK = 1 << 20
_MAX_DEPTH = 1024
_PAX_XATTR = "SCHILY.xattr."
_EXPORTED_XATTRS = ("security.capability",)  # what dockerd's tar writer records


def _q(s: str) -> str:
    """Go's %q for the texts dockerd builds with it."""
    return json.dumps(s, ensure_ascii=False)


# --- out ----------------------------------------------------------------------------------------


class _Exporter:
    def __init__(self, view: FsView, write: Callable[[bytes], None]) -> None:
        self.view = view
        self.write = write
        self.links: dict[tuple[int, int], str] = {}

    def header(self, info: tarfile.TarInfo) -> None:
        self.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def entry(self, node: Node, name: str) -> None:
        st = node.st
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.header(tar_info(name, st, tarfile.DIRTYPE))
        elif stat.S_ISREG(mode):
            self.regular(node, name)
        elif stat.S_ISLNK(mode):
            info = tar_info(name, st, tarfile.SYMTYPE)
            info.linkname = self.view.readlink(node)
            self.header(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info = tar_info(name, st, tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE)
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.header(info)
        elif stat.S_ISFIFO(mode):
            self.header(tar_info(name, st, tarfile.FIFOTYPE))
        # Sockets: Go's tar cannot describe them; dockerd logs and skips them.

    def regular(self, node: Node, name: str) -> None:
        st = node.st
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                info = tar_info(name, st, tarfile.LNKTYPE)
                info.linkname = first
                self.header(info)
                return
            self.links[key] = name
        fd = self.view.open_regular(node)
        try:
            info = tar_info(name, st, tarfile.REGTYPE)
            info.size = st.st_size
            pax = {}
            for xname in _EXPORTED_XATTRS:
                try:
                    value = os.getxattr(fd, xname)
                except OSError:
                    continue
                pax[_PAX_XATTR + xname] = value.decode("utf-8", "surrogateescape")
            info.pax_headers = pax
            self.header(info)
            self.copy(fd, st.st_size)
        finally:
            os.close(fd)

    def copy(self, fd: int, size: int) -> None:
        left = size
        while left:
            # A fresh bytes object per read: the writer may keep it (the response queues it), and
            # reading into a reused buffer would cost a copy out of it instead.
            data = os.read(fd, min(_CHUNK, left))
            if not data:
                break  # shrank while we read: pad below
            self.write(data)
            left -= len(data)
        while left:
            pad = min(_CHUNK, left)
            self.write(bytes(pad))
            left -= pad
        if size % BLOCK:
            self.write(bytes(BLOCK - size % BLOCK))

    def tree(self, top: Node, name: str) -> None:
        self.entry(top, name)
        if not top.is_dir:
            return
        prefix = "" if name == "/" else name
        stack: list[tuple[Node, str, list[str]]] = [(top, prefix, self.view.names(top))]
        while stack:
            directory, dprefix, pending = stack[-1]
            if not pending:
                stack.pop()
                continue
            child_name = pending.pop(0)
            archived = f"{dprefix}/{child_name}"
            try:
                child = self.view.child(directory, child_name)
                self.entry(child, archived)
            except OSError:
                continue  # gone or changed while we walked: dockerd skips it too
            if child.is_dir:
                if len(stack) >= _MAX_DEPTH:
                    raise ArchiveError(f"{archived}: directory tree deeper than {_MAX_DEPTH} levels")
                try:
                    names = self.view.names(child)
                except OSError:
                    continue
                stack.append((child, archived, names))


def export_tar(view: FsView, node: Node, name: str, write: Callable[[bytes], None]) -> None:
    """Write the tar of ``node`` (its subtree for a directory) with ``node`` named ``name``.

    ``name`` is dockerd's rebase name (the base name of the requested path; "/" for the root, in
    which case the entries below are "/etc", "/bin" ...). Ends with Go's two zero blocks.
    """
    _Exporter(view, write).tree(node, name)
    write(bytes(2 * BLOCK))


# --- in -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractOptions:
    no_overwrite_dir_non_dir: bool = False
    chown: tuple[int, int] | None = None  # copyUIDGID: every entry owned by the container user


def _inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def _member_xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith(_PAX_XATTR):
            name = key[len(_PAX_XATTR) :]
            # Overlay's own attributes would change how the container's layers merge.
            if not name.startswith("trusted.overlay."):
                out.append((name, value.encode("utf-8", "surrogateescape")))
    return out


def _set_xattrs(target: int | str, member: tarfile.TarInfo, follow: bool = True) -> None:
    for key, value in _member_xattrs(member):
        try:
            os.setxattr(target, key, value, follow_symlinks=follow)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


def _create(parent: Node, base: str) -> int:
    """A new, empty regular file ``base`` in ``parent``: never an existing entry, never followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(base, flags, 0o600, dir_fd=parent.fd)


def _path(parent: Node, base: str) -> str:
    return "/" + base if parent.path == "/" else f"{parent.path}/{base}"


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return round(float(member.mtime) * 1_000_000_000)


class _Extractor:
    def __init__(self, view: FsView, dest: Node, options: ExtractOptions) -> None:
        self.view = view
        self.dest = dest
        self.options = options
        self.dirs: list[tuple[str, int]] = []
        self.op = ""  # the system call under way, for Go's "{op} {path}: {reason}" texts
        self._parent: tuple[str, Node] | None = None

    def parent(self, rel: str) -> Node:
        if not rel:
            return self.dest
        if self._parent is not None and self._parent[0] == rel:
            return self._parent[1]
        node = self.view.walk(self.dest, rel, follow=True, create=(0o755, 0, 0))
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), node.path)
        self._parent = (rel, node)
        return node

    def owner(self, member: tarfile.TarInfo) -> tuple[int, int]:
        return self.options.chown if self.options.chown is not None else (member.uid, member.gid)

    def apply(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = go_clean(member.name)
        rel = name.lstrip("/") or "."
        dest = self.dest.path
        if rel == ".." or rel.startswith("../"):
            raise ArchiveError(f"{_q(name)} is outside of {_q(dest)}")
        dst_path = go_join(dest, rel)
        if rel == ".":
            if member.isdir():
                return  # the extraction directory itself: dockerd leaves it as it is
            raise ArchiveError(f"cannot overwrite directory {_q(dst_path)} with non-directory {_q(dest)}")
        parent_rel, base = posixpath.split(rel)
        self.op = "mkdir"
        try:
            parent = self.parent(parent_rel)
            if member.isreg() and parent.writable and self.view.overlay_at(_path(parent, base)) is None:
                # Most members are new files: try the exclusive create first, one failed lookup
                # (and its exception) less per file. If it fails, whatever is in the way, or the
                # error itself, is met by the full sequence below as it always was.
                try:
                    fd = _create(parent, base)
                except OSError:
                    pass
                else:
                    self.op = "open"
                    self.fill_file(tf, member, fd)
                    return
            self.op = "lstat"
            try:
                existing: Node | None = self.view.child(parent, base)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                self.op = "unlinkat"
                existing = self.replace(parent, base, existing, member, dst_path)
            self.create(tf, member, parent, base, existing, dst_path)
        except OSError as e:
            where = e.filename if isinstance(e.filename, str) and e.filename.startswith("/") else dst_path
            raise PathError(self.op, where, e.errno or errno.EIO) from None

    def replace(
        self, parent: Node, base: str, existing: Node, member: tarfile.TarInfo, dst_path: str
    ) -> Node | None:
        """Clear the way for ``member``; what stays (a directory a directory merges into) or None."""
        is_dir = member.isdir()
        if self.options.no_overwrite_dir_non_dir:
            if existing.is_dir and not is_dir:
                raise ArchiveError(
                    f"cannot overwrite directory {_q(dst_path)} with non-directory {_q(self.dest.path)}"
                )
            if not existing.is_dir and is_dir:
                raise ArchiveError(
                    f"cannot overwrite non-directory {_q(dst_path)} with directory {_q(self.dest.path)}"
                )
        if existing.is_dir and is_dir:
            return existing
        if existing.overlay is not None or self.view.mounts_below(existing.path):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), existing.path)
        if not parent.writable:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), existing.path)
        if existing.is_dir:
            self._parent = None  # it may be the cached parent of later members
            _rmtree(parent.fd, base, existing.st.st_dev)
        else:
            os.unlink(base, dir_fd=parent.fd)
        return None

    def create(
        self,
        tf: tarfile.TarFile,
        member: tarfile.TarInfo,
        parent: Node,
        base: str,
        existing: Node | None,
        dst_path: str,
    ) -> None:
        path = posixpath.join(parent.path, base)
        uid, gid = self.owner(member)
        mode = member.mode & 0o7777
        ns = _mtime_ns(member)
        if member.isdir():
            self.op = "mkdir"
            if existing is not None:
                node = existing
                if not node.writable:
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            else:
                self._writable(parent, path)
                os.mkdir(base, 0o700, dir_fd=parent.fd)
                node = self.view.child(parent, base)
                if not node.is_dir:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            self.op = "lchown"
            os.fchown(node.fd, uid, gid)
            self.op = "lsetxattr"
            _set_xattrs(node.fd, member)
            self.op = "chmod"
            os.fchmod(node.fd, mode)
            self.dirs.append((path, ns))
            return
        self.op = "open"
        self._writable(parent, path)
        if member.isreg():
            self.fill_file(tf, member, _create(parent, base))
        elif member.issym():
            self.op = "symlink"
            target = go_join(posixpath.dirname(dst_path), member.linkname)
            if not _inside(target, self.dest.path):
                raise ArchiveError(f"invalid symlink {_q(dst_path)} -> {_q(member.linkname)}")
            os.symlink(member.linkname, base, dir_fd=parent.fd)
            os.chown(base, uid, gid, dir_fd=parent.fd, follow_symlinks=False)
            _set_xattrs(f"/proc/self/fd/{parent.fd}/{base}", member, follow=False)
            os.utime(base, ns=(ns, ns), dir_fd=parent.fd, follow_symlinks=False)
        elif member.islnk():
            self.op = "link"
            self.hardlink(member, parent, base, uid, gid, mode, ns)
        elif member.ischr() or member.isblk() or member.isfifo():
            self.op = "mknod"
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            device = os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0
            os.mknod(base, kind | 0o600, device, dir_fd=parent.fd)
            node = self.view.child(parent, base)
            # No fchmod on an O_PATH descriptor: its /proc link names the inode itself.
            proc = f"/proc/self/fd/{node.fd}"
            os.chown(base, uid, gid, dir_fd=parent.fd, follow_symlinks=False)
            _set_xattrs(proc, member)
            os.chmod(proc, mode)
            os.utime(proc, ns=(ns, ns))
        else:
            raise ArchiveError(f"unhandled tar header type {ord(member.type)}")

    def fill_file(self, tf: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
        """Data, owner, mode and times of the regular file just created as ``fd`` (closed here)."""
        uid, gid = self.owner(member)
        ns = _mtime_ns(member)
        try:
            _copy_data(tf, member, fd)
            os.fchown(fd, uid, gid)
            _set_xattrs(fd, member)
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def hardlink(
        self, member: tarfile.TarInfo, parent: Node, base: str, uid: int, gid: int, mode: int, ns: int
    ) -> None:
        # dockerd resolves a hard link's target from the extraction directory, not from "/".
        target_path = go_join(self.dest.path, member.linkname)
        if not _inside(target_path, self.dest.path):
            raise ArchiveError(f"invalid hardlink {_q(target_path)} -> {_q(member.linkname)}")
        rel = posixpath.relpath(target_path, self.dest.path)
        target_rel, target_base = posixpath.split(rel)
        if target_base in ("", "."):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM), target_path)
        target_dir = self.view.walk(self.dest, target_rel, follow=True) if target_rel else self.dest
        target = self.view.child(target_dir, target_base)
        if target.overlay is not None:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), target.path)
        os.link(target_base, base, src_dir_fd=target_dir.fd, dst_dir_fd=parent.fd, follow_symlinks=False)
        os.chown(base, uid, gid, dir_fd=parent.fd, follow_symlinks=False)
        if not target.is_link:
            linked = self.view.child(parent, base)
            proc = f"/proc/self/fd/{linked.fd}"
            os.chmod(proc, mode)
            os.utime(proc, ns=(ns, ns))

    @staticmethod
    def _writable(parent: Node, path: str) -> None:
        if not parent.writable:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    def finish(self) -> None:
        # Directory times last: creating entries inside a directory changes its mtime.
        self._parent = None
        for path, ns in self.dirs:
            try:
                node = self.view.lookup(path)
                if node.is_dir and node.writable:
                    os.utime(node.fd, ns=(ns, ns))
            except OSError:
                continue  # replaced or removed by a later member


def _rmtree(parent_fd: int, name: str, dev: int, depth: int = 0) -> None:
    """``rm -rf`` below a directory descriptor that never follows a link nor crosses a mount."""
    if depth > _MAX_DEPTH:
        raise OSError(errno.ELOOP, "directory tree too deep to remove", name)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        if os.fstat(fd).st_dev != dev:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), name)
        with os.scandir(fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            if is_dir:
                _rmtree(fd, child, dev, depth + 1)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


class _Source:
    """The archive stream for tarfile: forward-only "seekable", and member data handed to a file
    descriptor straight from the chunks the stream gives.

    tarfile's stream mode ("r|") re-copies its whole read-ahead buffer on every small read, which
    makes it quadratic with a useful buffer size; its random-access mode only ever seeks forward
    when members are read in order, and a forward seek is a read that is thrown away. Chunks come
    from ``read1`` where the stream has it (the request body hands over the chunks it received,
    uncopied), so a member's data goes from the received chunk to ``os.write`` with no copy here.
    """

    def __init__(self, raw: BinaryIO) -> None:
        read1 = getattr(raw, "read1", None)
        self._pull: Callable[[int], bytes] = read1 if read1 is not None else raw.read
        self._chunk = memoryview(b"")
        self._off = 0  # read position in _chunk
        self.pos = 0

    def _fill(self) -> bool:
        while self._off >= len(self._chunk):
            data = self._pull(_CHUNK)
            if not data:
                return False
            self._chunk, self._off = memoryview(data), 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = 1 << 62
        chunk, off = self._chunk, self._off
        if len(chunk) - off >= size:  # the common case: a header inside one chunk
            self._off = off + size
            self.pos += size
            return bytes(chunk[off : off + size])
        parts = []
        left = size
        while left and self._fill():
            chunk, off = self._chunk, self._off
            n = min(left, len(chunk) - off)
            parts.append(chunk[off : off + n])
            self._off = off + n
            left -= n
        data = b"".join(parts)
        self.pos += len(data)
        return data

    def copy_to(self, fd: int, size: int) -> int:
        """Write the next ``size`` bytes to ``fd``; how many there were (fewer at the end)."""
        left = size
        while left and self._fill():
            off = self._off
            view = self._chunk[off : off + min(left, len(self._chunk) - off)]
            while view:
                n = os.write(fd, view)
                view = view[n:]
                self._off += n
                self.pos += n
                left -= n
        return size - left

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self.pos
        elif whence != os.SEEK_SET:
            raise io.UnsupportedOperation("can only seek forward from the start or the current position")
        if offset < self.pos:
            raise io.UnsupportedOperation("cannot seek backwards in an upload")
        while self.pos < offset and self._fill():
            n = min(offset - self.pos, len(self._chunk) - self._off)
            self._off += n
            self.pos += n
        return self.pos


# The entry types whose header is nothing but the ustar fields (no extension, no sparse map).
_PLAIN_TYPES = frozenset(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.LNKTYPE,
        tarfile.SYMTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.DIRTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]
)


def _octal(field: bytes | bytearray) -> int:
    """tarfile's ``nti`` for the plain octal form; ValueError for anything else (base-256 too)."""
    if field[0] in (0o200, 0o377):
        raise ValueError("base-256 number")
    end = field.find(b"\0")
    return int((field if end < 0 else field[:end]).strip() or b"0", 8)


def _text(field: bytes | bytearray, encoding: str, errors: str) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode(encoding, errors)


class _TarInfo(tarfile.TarInfo):
    """tarfile's header parsing with a fast path for the plain ustar header every entry of a
    ``docker cp`` tar is: about half of tarfile's time per member goes to its two 504-term
    checksums and per-field helpers. Whatever the fast path does not fully understand (other
    entry types, base-256 numbers, a checksum only the signed sum matches, a malformed field)
    goes to tarfile's own ``frombuf``, so the result, and every error, is tarfile's.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        kind = bytes(buf[156:157])
        if len(buf) != BLOCK or kind not in _PLAIN_TYPES:
            return super().frombuf(buf, encoding, errors)
        try:
            chksum = _octal(buf[148:156])
            mode, uid, gid = _octal(buf[100:108]), _octal(buf[108:116]), _octal(buf[116:124])
            size, mtime = _octal(buf[124:136]), _octal(buf[136:148])
            devmajor, devminor = _octal(buf[329:337]), _octal(buf[337:345])
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        # Unsigned sum with the checksum field counted as spaces (8 * 32 = 256).
        if chksum != sum(buf) - sum(buf[148:156]) + 256:
            return super().frombuf(buf, encoding, errors)
        obj = cls()
        obj.name = _text(buf[0:100], encoding, errors)
        obj.mode, obj.uid, obj.gid, obj.size, obj.mtime = mode, uid, gid, size, mtime
        obj.chksum = chksum
        obj.type = kind
        obj.linkname = _text(buf[157:257], encoding, errors)
        obj.uname = _text(buf[265:297], encoding, errors)
        obj.gname = _text(buf[297:329], encoding, errors)
        obj.devmajor, obj.devminor = devmajor, devminor
        prefix = _text(buf[345:500], encoding, errors)
        if kind == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE  # old V7 tar's way of saying "directory"
        if obj.type == tarfile.DIRTYPE:
            obj.name = obj.name.rstrip("/")
        if prefix:  # none of the plain types is a GNU type, so this is ustar's name prefix
            obj.name = prefix + "/" + obj.name
        return obj


def extract_tar(view: FsView, dest: Node, fileobj: BinaryIO, options: ExtractOptions) -> None:
    """Extract the uncompressed tar stream ``fileobj`` into directory ``dest`` of ``view``.

    Raises ArchiveError (refused entries, malformed archives) or PathError (a failed system call,
    with the path as the container sees it). Reads the stream up to the end-of-archive marker.
    """
    extractor = _Extractor(view, dest, options)
    try:
        # The with block below owns it; the open needs its own except, hence no with here.
        tf = tarfile.open(  # noqa: SIM115
            fileobj=cast(BinaryIO, _Source(fileobj)),
            mode="r:",
            encoding="utf-8",
            errors="surrogateescape",
            tarinfo=_TarInfo,
        )
    except tarfile.ReadError as e:
        if str(e) == "empty file":
            return  # Go's tar reader sees an empty stream as an empty archive
        raise _tar_error(e) from None
    try:
        with tf:
            for member in _members(tf):
                extractor.apply(tf, member)
        extractor.finish()
    except tarfile.TarError as e:
        raise _tar_error(e) from None


def _copy_data(tf: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    """A regular member's data into ``fd``.

    Straight from the stream where possible: ``extractfile`` stacks two more buffered readers on
    it (a copy and a Python call per layer and read), a fifth of the extraction time for a tree
    of small files. Sparse members need tarfile's map of holes.
    """
    stream = tf.fileobj
    if member.issparse() or not isinstance(stream, _Source):
        src = tf.extractfile(member)
        if src is not None:
            with src, open(fd, "wb", buffering=0, closefd=False) as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
        return
    stream.seek(member.offset_data)
    if stream.copy_to(fd, member.size) != member.size:
        raise tarfile.ReadError("unexpected end of data")  # tarfile's own text for it


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    member = tf.next()
    while member is not None:
        yield member
        # Every TarInfo is kept in tf.members otherwise; nothing here needs them.
        tf.members.clear()  # type: ignore[attr-defined]  # real attribute, missing from typeshed
        member = tf.next()


def _tar_error(e: tarfile.TarError) -> ArchiveError:
    """Go's archive/tar wording for what Python's tarfile says about a broken stream."""
    text = str(e)
    if text in ("truncated header", "unexpected end of data", "end of file header"):
        return ArchiveError("unexpected EOF")
    if text in ("bad checksum", "invalid header", "empty header"):
        return ArchiveError("archive/tar: invalid tar header")
    return ArchiveError(f"archive/tar: {text}")
