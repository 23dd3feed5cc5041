"""Copy-up: fill an empty volume with what the image has at the volume's mount point.

dockerd does this when a container is created (``populateVolumes`` → ``copyExistingContents``): if
the volume's data directory is empty and the path exists in the container's root file system, the
tree is copied with owners, modes, times, extended attributes, symlinks, hard links, FIFOs and
device nodes, and the directory's own owner and mode are given to the volume root.

Images are untrusted input, so nothing here follows a link: the mount point is resolved with
``openat2(RESOLVE_IN_ROOT)`` (symlinks inside the root resolve as if it were ``/``, never beyond
it), and the copy walks both trees through directory file descriptors with ``O_NOFOLLOW``, so a
symlink in the image is copied as a symlink and nothing outside the two trees is read or written.
Synchronous; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

from engine import errdefs

_SYS_OPENAT2 = 437  # the same number on every architecture (added in Linux 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "security.selinux")


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_libc = ctypes.CDLL(None, use_errno=True)


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """``openat2`` of ``path`` with ``root_fd`` as ``/``: symlinks and ``..`` cannot leave it."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    rel = path.lstrip("/") or "."
    fd = int(_libc.syscall(_SYS_OPENAT2, root_fd, rel.encode(), ctypes.byref(how), ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def copy_up(rootfs: Path, path: str, volume_data: Path) -> bool:
    """Copy ``path`` (as seen inside ``rootfs``) into the empty directory ``volume_data``.

    Returns False when there was nothing to do (path missing in the image, or volume not empty).
    A file where the mount point should be is dockerd's create error.
    """
    root_fd = os.open(rootfs, _DIR)
    try:
        # Symlinks on the way (also the last one, /var/run -> /run) resolve inside the root.
        src_dir = open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        if stat_in_root(rootfs, path) is None:
            return False  # a file on the way to the mount point: nothing to copy
        raise errdefs.Internal(
            f"cannot mount volume over existing file, file exists {rootfs / path.lstrip('/')}"
        ) from None
    finally:
        os.close(root_fd)
    try:
        dst_dir = os.open(volume_data, _DIR)
        try:
            if os.listdir(dst_dir):
                return False  # dockerd copies into empty volumes only
            _Copier().tree(src_dir, dst_dir)
            _apply_meta(src_dir, dst_dir, os.fstat(src_dir))
        finally:
            os.close(dst_dir)
    finally:
        os.close(src_dir)
    return True


def _copy_xattrs(src_fd: int, dst_fd: int) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError:
        return
    for name in names:
        if name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        try:
            os.setxattr(dst_fd, name, os.getxattr(src_fd, name))
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EINVAL):
                raise


def _apply_meta(src_fd: int, dst_fd: int, st: os.stat_result) -> None:
    """Owner, then mode (chown clears set-id bits), xattrs and times of an opened file or directory."""
    os.chown(dst_fd, st.st_uid, st.st_gid)
    os.chmod(dst_fd, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src_fd, dst_fd)
    os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


class _Copier:
    def __init__(self) -> None:
        # (dev, ino) of a multiply-linked source file -> (dir fd it was created in, name), kept open.
        self._links: dict[tuple[int, int], tuple[int, str]] = {}
        self._held: list[int] = []

    def tree(self, src_dir: int, dst_dir: int) -> None:
        try:
            self._walk(src_dir, dst_dir)
        finally:
            for fd in self._held:
                os.close(fd)

    def _walk(self, src_dir: int, dst_dir: int) -> None:
        with os.scandir(src_dir) as it:
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        for name, st in entries:
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                self._directory(src_dir, dst_dir, name, st)
            elif stat.S_ISREG(mode):
                self._regular(src_dir, dst_dir, name, st)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
                self._meta_nofollow(dst_dir, name, st)
            elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_dir)
                self._meta_nofollow(dst_dir, name, st)
                os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_dir, follow_symlinks=True)
            # sockets are skipped, as containerd's CopyDir skips them

    def _directory(self, src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> None:
        os.mkdir(name, 0o700, dir_fd=dst_dir)
        sub_src = os.open(name, _DIR, dir_fd=src_dir)
        try:
            sub_dst = os.open(name, _DIR, dir_fd=dst_dir)
            try:
                self._walk(sub_src, sub_dst)
                _apply_meta(sub_src, sub_dst, st)
            finally:
                os.close(sub_dst)
        finally:
            os.close(sub_src)

    def _regular(self, src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self._links:
            first_dir, first_name = self._links[key]
            os.link(first_name, name, src_dir_fd=first_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
            return
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
        try:
            dst = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dst_dir,
            )
            try:
                _copy_data(src, dst, st.st_size)
                _apply_meta(src, dst, st)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        if st.st_nlink > 1:
            self._links[key] = (os.dup(dst_dir), name)
            self._held.append(self._links[key][0])

    @staticmethod
    def _meta_nofollow(dst_dir: int, name: str, st: os.stat_result) -> None:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)


def _copy_data(src: int, dst: int, size: int) -> None:
    remaining = size
    try:
        while remaining > 0:
            n = os.copy_file_range(src, dst, min(remaining, 1 << 30))
            if n == 0:
                break
            remaining -= n
        if remaining <= 0:
            return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, _CHUNK):  # files that grew, or no copy_file_range across these fs
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


def stat_in_root(rootfs: Path, path: str) -> os.stat_result | None:
    """``os.stat`` of ``path`` inside ``rootfs`` (dockerd's GetResourcePath + Stat); None if missing."""
    root_fd = os.open(rootfs, _DIR)
    try:
        fd = open_in_root(root_fd, path, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(root_fd)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
