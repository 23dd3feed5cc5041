"""Layer tar extraction and export, with Docker ``.wh.`` <-> overlayfs whiteout conversion.

Extraction never trusts the archive. Member names are cleaned the way dockerd cleans them
(``filepath.Clean``; a leading ``/`` is dropped) and a name that still climbs out with
``..`` is refused. Every path is then resolved component by component from a directory fd
of ``dest`` with ``O_NOFOLLOW``; a symlink met on the way (one an earlier member created) is
expanded *inside* ``dest``, as dockerd's chroot'ed unpacker would, so ``a -> /`` followed by
``a/etc/passwd`` writes ``dest/etc/passwd``. The last component is never followed: it is
removed and recreated. Symlink targets are stored verbatim because they are resolved in the
container's root; hard link targets must already exist inside ``dest``.

Device nodes are refused unless ``allow_devices`` (dockerd creates them when it runs as
root; runc's device cgroup still denies access to them in unprivileged containers). The
char 0/0 node that overlayfs uses as a whiteout is always allowed. ``trusted.overlay.*``
xattrs from an archive are dropped: in a layer they would change how overlayfs merges it.

Synchronous and CPU/IO heavy: callers run it in a worker thread.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import shutil
import stat
import tarfile
from collections import deque
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import BinaryIO, Literal

from engine import errdefs

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_PAX_XATTR = "SCHILY.xattr."
_EXPORTED_XATTRS = ("security.capability",)  # what dockerd puts in layer tars
_MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
# Errors that mean "this archive does not fit the tree", as opposed to a broken host.
_ARCHIVE_ERRNOS = {errno.ENOTDIR, errno.ELOOP, errno.EISDIR, errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY}

Whiteouts = Literal["overlay", "none"]


def tar_info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    """A header for ``name`` from its stat: mode bits, owner by number only, whole-second mtime
    (as dockerd writes them, so that exports and copies are reproducible)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


def is_opaque_dir(path: str | os.PathLike[str]) -> bool:
    """Whether an overlay upper directory is opaque (hides everything below it); a filesystem
    without trusted xattrs has none."""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise


def _q(s: str) -> str:
    """Go's %q, which dockerd uses in these messages."""
    return json.dumps(s, ensure_ascii=False)


def clean_name(name: str) -> str:
    """``filepath.Clean`` of a member name, made relative to the root ("." is the root).

    A rooted name cannot climb above the root (``/../x`` is ``x``); a relative one can, and
    the caller refuses a result of ``..`` or ``../...``.
    """
    if name.startswith("/"):
        cleaned = posixpath.normpath("/" + name.lstrip("/")).lstrip("/")
    else:
        cleaned = posixpath.normpath(name)
    return cleaned or "."


def _escapes(cleaned: str) -> bool:
    return cleaned == ".." or cleaned.startswith("../")


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return round(float(member.mtime) * 1_000_000_000)


def _member_xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith(_PAX_XATTR):
            name = key[len(_PAX_XATTR) :]
            if not name.startswith("trusted.overlay."):
                out.append((name, value.encode("utf-8", "surrogateescape")))
    return out


def _set_xattr(target: int | str, name: str, value: bytes, follow: bool = True) -> None:
    try:
        os.setxattr(target, name, value, follow_symlinks=follow)
    except OSError as e:
        # dockerd ignores these too: not every file system accepts every xattr namespace.
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise


class _Tree:
    """Path resolution confined to a root directory fd, creating missing directories."""

    def __init__(self, root_fd: int, parents: Sequence[Path]) -> None:
        self.root_fd = root_fd
        self._parents = parents

    def open_dir(self, rel: str, create: bool) -> int:
        """An owned fd of directory ``rel``; symlinks on the way are resolved inside the root."""
        parts = deque(p for p in rel.split("/") if p not in ("", "."))
        fds = [os.dup(self.root_fd)]
        names: list[str] = []
        links = 0
        try:
            while parts:
                comp = parts.popleft()
                if comp == "..":
                    if len(fds) > 1:  # ".." at the root stays at the root, as in a chroot
                        os.close(fds.pop())
                        names.pop()
                    continue
                cur = fds[-1]
                try:
                    fd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._mkdir_implied(cur, comp, [*names, comp])
                    fd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        where = "/".join([*names, comp])
                        raise NotADirectoryError(errno.ENOTDIR, "not a directory", where) from None
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, "too many levels of symbolic links", rel) from None
                    target = os.readlink(comp, dir_fd=cur)
                    if target.startswith("/"):
                        for extra in fds[1:]:
                            os.close(extra)
                        del fds[1:]
                        names.clear()
                    parts.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
                    continue
                fds.append(fd)
                names.append(comp)
            return fds.pop()
        finally:
            for fd in fds:
                os.close(fd)

    def _lower_dir_stat(self, names: list[str]) -> os.stat_result | None:
        """stat of the same directory in the topmost parent layer that has it (no symlinks followed)."""
        for lower in self._parents:
            try:
                fd = os.open(lower, _DIR_FLAGS)
            except OSError:
                continue
            try:
                for comp in names:
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
                return os.fstat(fd)
            except FileNotFoundError:
                continue
            except OSError:
                return None  # a file, symlink or whiteout hides anything below
            finally:
                os.close(fd)
        return None

    def _mkdir_implied(self, parent_fd: int, comp: str, names: list[str]) -> None:
        # A directory the archive needs but does not list. In an upper dir it shadows the
        # parent layers' directory, so copy its owner and mode (as containerd's applier does).
        mode, uid, gid = 0o755, 0, 0
        st = self._lower_dir_stat(names)
        if st is not None:
            mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        os.mkdir(comp, 0o700, dir_fd=parent_fd)
        fd = os.open(comp, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


class _Extractor:
    def __init__(self, tree: _Tree, whiteouts: Whiteouts, allow_devices: bool) -> None:
        self.tree = tree
        self.overlay = whiteouts == "overlay"
        self.allow_devices = allow_devices
        self.applied = 0
        self._dirs: list[tuple[str, int]] = []
        self._cached: tuple[str, int] | None = None

    def close(self) -> None:
        self._invalidate()

    def _invalidate(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _parent(self, rel: str) -> int:
        """Borrowed fd of a parent directory; consecutive members mostly share one."""
        if self._cached is not None and self._cached[0] == rel:
            return self._cached[1]
        fd = self.tree.open_dir(rel, create=True)
        self._invalidate()
        self._cached = (rel, fd)
        return fd

    def _clear(self, parent_fd: int, name: str, keep_dir: bool) -> bool:
        """Remove whatever is at ``name``; returns True if an existing directory was kept."""
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            # The cached fd is never inside what goes: it is this entry's parent, and a member
            # that replaces one of its ancestors has a different parent, which re-resolves.
            shutil.rmtree(name, dir_fd=parent_fd)
        else:
            os.unlink(name, dir_fd=parent_fd)
        return False

    def apply(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = clean_name(member.name)
        if _escapes(name):
            raise errdefs.InvalidParameter(f'{_q(name)} is outside of "/"')
        if self.overlay and name.startswith(WHITEOUT_META_PREFIX) and name != WHITEOUT_OPAQUE:
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs); dockerd skips it too
        if name == ".":
            if not member.isdir():
                raise errdefs.InvalidParameter("cannot replace the root directory with a non-directory")
            self._meta_fd(self.tree.root_fd, member)
            self._dirs.append((name, _mtime_ns(member)))
            return
        parent_rel, base = posixpath.split(name)
        if self.overlay and base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_rel, base, member)
            return
        parent_fd = self._parent(parent_rel)
        # Entries are created first and only cleared on EEXIST: a layer rarely replaces what an
        # earlier entry of the same tar made, and that saves a stat per entry.
        if member.isdir():
            try:
                os.mkdir(base, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                if not self._clear(parent_fd, base, keep_dir=True):
                    os.mkdir(base, 0o700, dir_fd=parent_fd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=parent_fd)
            try:
                self._meta_fd(fd, member)
            finally:
                os.close(fd)
            self._dirs.append((name, _mtime_ns(member)))
        elif member.isreg():
            self._regular(tf, parent_fd, base, member)
        elif member.issym():
            try:
                os.symlink(member.linkname, base, dir_fd=parent_fd)
            except FileExistsError:
                self._clear(parent_fd, base, keep_dir=False)
                os.symlink(member.linkname, base, dir_fd=parent_fd)
            self._meta_nofollow(parent_fd, base, member)
        elif member.islnk():
            self._hardlink(parent_fd, base, name, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._special(parent_fd, base, name, member)
        else:
            raise errdefs.InvalidParameter(f"unhandled tar header type {member.type!r} for {_q(name)}")

    def _whiteout(self, parent_rel: str, base: str, member: tarfile.TarInfo) -> None:
        if base == WHITEOUT_OPAQUE:
            fd = self.tree.open_dir(parent_rel, create=True)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise errdefs.InvalidParameter(f"invalid whiteout {_q(posixpath.join(parent_rel, base))}")
        parent_fd = self._parent(parent_rel)
        self._clear(parent_fd, hidden, keep_dir=False)
        os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
        os.chown(hidden, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)

    def _regular(self, tf: tarfile.TarFile, parent_fd: int, base: str, member: tarfile.TarInfo) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(base, flags, 0o600, dir_fd=parent_fd)
        except FileExistsError:
            self._clear(parent_fd, base, keep_dir=False)
            fd = os.open(base, flags, 0o600, dir_fd=parent_fd)
        with open(fd, "wb") as out:
            src = tf.extractfile(member)
            if src is not None:
                with src:
                    shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            self._meta_fd(fd, member)
            os.utime(fd, ns=(_mtime_ns(member), _mtime_ns(member)))
        self.applied += member.size

    def _hardlink(self, parent_fd: int, base: str, name: str, member: tarfile.TarInfo) -> None:
        target = clean_name(member.linkname)
        invalid = f"invalid hardlink {_q(name)} -> {_q(member.linkname)}"
        if _escapes(target) or target == ".":
            raise errdefs.InvalidParameter(invalid)
        target_rel, target_base = posixpath.split(target)
        try:
            target_fd = self.tree.open_dir(target_rel, create=False)
        except OSError:
            raise errdefs.InvalidParameter(f"{invalid}: target does not exist") from None
        try:
            try:
                st = os.stat(target_base, dir_fd=target_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise errdefs.InvalidParameter(f"{invalid}: target does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                raise errdefs.InvalidParameter(f"{invalid}: target is a directory")
            try:
                existing = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
                if (existing.st_dev, existing.st_ino) == (st.st_dev, st.st_ino):
                    return
            except FileNotFoundError:
                pass
            self._clear(parent_fd, base, keep_dir=False)
            os.link(target_base, base, src_dir_fd=target_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(target_fd)

    def _special(self, parent_fd: int, base: str, name: str, member: tarfile.TarInfo) -> None:
        if member.isfifo():
            self._clear(parent_fd, base, keep_dir=False)
            os.mkfifo(base, 0o600, dir_fd=parent_fd)
        else:
            is_whiteout = member.ischr() and member.devmajor == 0 and member.devminor == 0
            if not is_whiteout and not self.allow_devices:
                raise errdefs.InvalidParameter(f"invalid tar header: device node {_q(name)} is not allowed")
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            self._clear(parent_fd, base, keep_dir=False)
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent_fd)
        # No fchmod on an O_PATH fd and no lchmod on Linux: go through the fd's /proc link,
        # which names the inode itself, so nothing swapped in at ``base`` can be followed.
        fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            proc = f"/proc/self/fd/{fd}"
            os.chown(proc, member.uid, member.gid)
            os.chmod(proc, member.mode & 0o7777)
            for key, value in _member_xattrs(member):
                _set_xattr(proc, key, value)
            os.utime(proc, ns=(_mtime_ns(member), _mtime_ns(member)))
        finally:
            os.close(fd)

    def _meta_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        # chown first: it clears setuid bits and security.capability.
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        for key, value in _member_xattrs(member):
            _set_xattr(fd, key, value)

    def _meta_nofollow(self, parent_fd: int, base: str, member: tarfile.TarInfo) -> None:
        os.chown(base, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        for key, value in _member_xattrs(member):
            _set_xattr(f"/proc/self/fd/{parent_fd}/{base}", key, value, follow=False)
        ns = _mtime_ns(member)
        os.utime(base, ns=(ns, ns), dir_fd=parent_fd, follow_symlinks=False)

    def finish(self) -> None:
        # Directory times last: creating entries inside a directory changes its mtime.
        self._invalidate()
        for name, ns in self._dirs:
            if name == ".":
                os.utime(self.tree.root_fd, ns=(ns, ns))
                continue
            parent_rel, base = posixpath.split(name)
            try:
                fd = self.tree.open_dir(parent_rel, create=False)
            except OSError:
                continue  # removed or replaced by a later member
            try:
                st = os.stat(base, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.utime(base, ns=(ns, ns), dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)


def apply_layer_tar(
    fileobj: BinaryIO,
    dest: Path,
    *,
    whiteouts: Whiteouts = "overlay",
    allow_devices: bool = False,
    parents: Sequence[Path] = (),
) -> int:
    """Extract the (uncompressed) tar stream ``fileobj`` into ``dest``; returns the bytes of
    regular-file content written.

    ``whiteouts="overlay"`` turns ``.wh.<name>`` into an overlay whiteout (char 0/0) and
    ``.wh..wh..opq`` into ``trusted.overlay.opaque=y`` (for a snapshot's upper dir);
    ``"none"`` extracts such names as ordinary files (``docker cp``). ``parents`` are the
    lower layers, topmost first, consulted for the owner and mode of directories the archive
    implies but does not list. Reads the tar stream only up to its end-of-archive marker.

    Unsafe or malformed entries raise errdefs.InvalidParameter. If ``dest`` did not exist it
    is removed again on failure; otherwise it may hold the entries applied before the error,
    so callers that need all-or-nothing extract into a fresh directory (LayerStore does).
    """
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        root_fd = os.open(dest, _DIR_FLAGS)
        try:
            return _extract(fileobj, _Tree(root_fd, parents), whiteouts, allow_devices)
        finally:
            os.close(root_fd)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(fileobj: BinaryIO, tree: _Tree, whiteouts: Whiteouts, allow_devices: bool) -> int:
    extractor = _Extractor(tree, whiteouts, allow_devices)
    try:
        try:
            # The with block below owns it; the open needs its own except, hence no with here.
            tf = tarfile.open(fileobj=fileobj, mode="r|", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except tarfile.ReadError as e:
            if str(e) == "empty file":
                return 0  # Go's tar reader sees an empty stream as an empty archive
            raise errdefs.InvalidParameter(f"archive/tar: invalid tar header: {e}") from None
        with tf:
            member = tf.next()
            while member is not None:
                try:
                    extractor.apply(tf, member)
                except OSError as e:
                    if e.errno not in _ARCHIVE_ERRNOS:
                        raise
                    raise errdefs.InvalidParameter(
                        f"failed to apply {_q(clean_name(member.name))}: {e.strerror}"
                    ) from None
                # Stream mode keeps every TarInfo in tf.members; nothing here needs them.
                tf.members.clear()  # type: ignore[attr-defined]  # real attribute, missing from typeshed
                member = tf.next()
        extractor.finish()
    except tarfile.TarError as e:
        raise errdefs.InvalidParameter(f"archive/tar: {e}") from None
    finally:
        extractor.close()
    return extractor.applied


class _Exporter:
    def __init__(self, tf: tarfile.TarFile, upper: bool, exclude: Collection[str] = ()) -> None:
        self.tf = tf
        self.upper = upper
        self.exclude = exclude
        self._links: dict[tuple[int, int], str] = {}

    def walk(self, dir_fd: int, prefix: str) -> None:
        for name in sorted(os.listdir(dir_fd), key=os.fsencode):
            rel = prefix + name
            if rel in self.exclude:
                continue
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    self.tf.addfile(tar_info(rel, st, tarfile.DIRTYPE))
                    if self.upper and self._xattr(fd, OPAQUE_XATTR) == b"y":
                        opq = tar_info(f"{rel}/{WHITEOUT_OPAQUE}", st, tarfile.REGTYPE)
                        opq.mode &= 0o777
                        self.tf.addfile(opq)
                    self.walk(fd, rel + "/")
                finally:
                    os.close(fd)
            elif stat.S_ISREG(mode):
                self._regular(dir_fd, name, rel, st)
            elif stat.S_ISLNK(mode):
                info = tar_info(rel, st, tarfile.SYMTYPE)
                info.linkname = os.readlink(name, dir_fd=dir_fd)
                self.tf.addfile(info)
            elif stat.S_ISCHR(mode) and st.st_rdev == 0 and self.upper:
                wh = tar_info(prefix + WHITEOUT_PREFIX + name, st, tarfile.REGTYPE)
                wh.mode = 0o600
                self.tf.addfile(wh)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info = tar_info(rel, st, tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE)
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                self.tf.addfile(info)
            elif stat.S_ISFIFO(mode):
                self.tf.addfile(tar_info(rel, st, tarfile.FIFOTYPE))
            # Sockets are skipped, as dockerd skips them: tar cannot carry them.

    @staticmethod
    def _xattr(target: int, name: str) -> bytes | None:
        try:
            return os.getxattr(target, name)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP):
                return None
            raise

    def _regular(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        if st.st_nlink > 1:
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None:
                info = tar_info(rel, st, tarfile.LNKTYPE)
                info.linkname = first
                self.tf.addfile(info)
                return
            self._links[(st.st_dev, st.st_ino)] = rel
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with open(fd, "rb") as f:
            info = tar_info(rel, st, tarfile.REGTYPE)
            info.size = st.st_size
            pax = {}
            for xname in _EXPORTED_XATTRS:
                value = self._xattr(fd, xname)
                if value is not None:
                    pax[_PAX_XATTR + xname] = value.decode("utf-8", "surrogateescape")
            info.pax_headers = pax
            self.tf.addfile(info, f)


def export_tar(src: Path, fileobj: BinaryIO, *, upper: bool = False, exclude: Collection[str] = ()) -> None:
    """Write a tar of the tree under ``src`` (not including ``src`` itself) to ``fileobj``.

    Entries come in a fixed order (sorted names, depth first), with numeric owners only and
    whole-second mtimes, so the same tree gives the same bytes. With ``upper=True`` the tree
    is an overlay upper dir and is written as a Docker layer: char 0/0 whiteouts become
    ``.wh.<name>`` and opaque directories get a ``.wh..wh..opq`` entry. ``exclude`` names
    paths relative to ``src`` (``etc/hostname``) left out together with everything below them.
    """
    root_fd = os.open(src, _DIR_FLAGS)
    try:
        with tarfile.open(
            fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
        ) as tf:
            _Exporter(tf, upper, exclude).walk(root_fd, "")
    finally:
        os.close(root_fd)
