"""Copies of a user's files that never share their data: a write into the copy cannot reach the original (a hard
link would share the inode both ways). A reflink (copy-on-write: btrfs, XFS, ...) costs no space or time; other
filesystems get a plain copy."""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

FICLONE = 0x40049409   # linux/fs.h: _IOW(0x94, 9, int)


def clone_file(src: Path, dst: Path) -> None:
    """`dst` as a reflink of `src` where the filesystem can, else a copy; metadata (times, mode) copied."""
    with open(src, "rb") as s, open(dst, "wb") as d:
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM):
                raise
            shutil.copyfileobj(s, d, 8 * 2**20)
    shutil.copystat(src, dst)


def can_reflink(folder: Path) -> bool:
    """Whether files in `folder` can be cloned without copying their data."""
    probe = Path(folder) / f".reflink-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        with open(probe, "rb") as s, open(probe.with_suffix(".clone"), "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
        probe.with_suffix(".clone").unlink(missing_ok=True)


def clone_tree(src: Path, dst: Path) -> None:
    """Every file of `src` cloned into `dst` (see clone_file)."""
    shutil.copytree(src, dst, copy_function=clone_file, dirs_exist_ok=True)
