"""Outputs written whole or not at all: a temp file or folder beside the output (same filesystem), renamed over it
only when complete, so a failure or a kill -9 leaves the previous output in place."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from stages.storage.space import room_to_save


def clear_leftovers(dest: Path) -> None:
    """Remove what a killed earlier write of `dest` left beside it (kill -9 skips every cleanup).
    Safe because DVC runs at most one stage per output at a time."""
    for old in [*dest.parent.glob(f".{dest.name}.tmp-*"), *dest.parent.glob(f".{dest.name}.old-*")]:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


@contextlib.contextmanager
def _scratch(dest: Path) -> Iterator[Path]:
    """A fresh temp dir beside `dest` (same filesystem, so a rename is atomic), removed afterwards."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output is an ordinary folder
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_room(new: Path, dest: Path, cached: bool) -> None:
    """Refuse (the previous `dest` stays) when DVC could not save `new` into its cache once the stage ends."""
    if not cached:
        return
    dest = Path(dest).resolve()
    root = next((p for p in dest.parents if (p / ".dvc").is_dir()), None)   # the DVC repository it belongs to
    if root and (problem := room_to_save(new, root, dest)):
        raise SystemExit(problem)


@contextlib.contextmanager
def atomic_dir(dest: Path, cached: bool = True) -> Iterator[Path]:
    """Yield an empty temp dir beside `dest`; on success it replaces `dest`, on failure `dest` is untouched.
    A `cached` output (DVC saves it into its cache) replaces `dest` only if DVC will have room to save it."""
    dest = Path(dest)
    with _scratch(dest) as tmp:
        yield tmp
        check_room(tmp, dest, cached)
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists() or dest.is_symlink():
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old.exists():
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


@contextlib.contextmanager
def atomic_file(dest: Path) -> Iterator[Path]:
    """Yield a fresh path to write instead of `dest` (e.g. for a tool that appends); on success it
    replaces `dest`, on failure `dest` is untouched."""
    dest = Path(dest)
    with _scratch(dest) as tmp:
        yield tmp / dest.name
        check_room(tmp / dest.name, dest, True)
        os.replace(tmp / dest.name, dest)


def _file_mode() -> int:
    """The mode of an ordinary new file (0o666 less the umask); mkstemp would leave it 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(dest: Path, text: str) -> None:
    """Write a whole text file or nothing: temp file in the same dir, then rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
