"""Disk space the stages need beyond their own writes.

After a stage, DVC saves each cached output into its cache: a copy on filesystems without reflinks (DVC's default
cache.type is `reflink,copy`), so a second copy of what the stage just wrote must fit. When it does not, DVC says
only "No possible cache link types"; room_to_save() says it first, before the previous output is replaced.
"""
from __future__ import annotations

import configparser
import hashlib
import shutil
from pathlib import Path

from stages.storage.clone import can_reflink

LOW_SPACE = 64 * 2**20   # bytes; below this a folder a tool writes to counts as full
MARGIN = 2**20           # DVC's own small files (.dir listings, its state database)
FULL = (b"No space left on device", b"Errno 28", b"ENOSPC")   # how Python, C and PyTorch say it


def dvc_cache(root: Path) -> tuple[Path, list[str]]:
    """The DVC cache folder of the repository at `root` and its link types, from .dvc/config and config.local."""
    cfg = configparser.ConfigParser()
    cfg.read([root / ".dvc" / "config", root / ".dvc" / "config.local"], encoding="utf-8")
    folder = Path(cfg.get("cache", "dir", fallback="cache").strip("'\""))
    types = cfg.get("cache", "type", fallback="reflink,copy").strip("[]'\"")
    return (folder if folder.is_absolute() else root / ".dvc" / folder), [t.strip(" '\"") for t in types.split(",")]


def copy_needed(files: list[Path], cache: Path) -> int:
    """Bytes of `files` that DVC would copy into `cache`: those whose content (md5, DVC 3's layout) it lacks."""
    need = 0
    for f in files:
        with open(f, "rb") as fh:
            digest = hashlib.file_digest(fh, "md5").hexdigest()
        if not (cache / "files" / "md5" / digest[:2] / digest[2:]).exists():
            need += f.stat().st_size
    return need


def room_problem(need: int, free: int, what: str, cache: Path) -> str | None:
    """The message when `need` bytes (+ a margin) do not fit in `free`, else None."""
    if need + MARGIN <= free:
        return None
    return (f"no room for DVC to save {what} into its cache {cache}: it copies {need / 2**20:.1f} MiB and "
            f"{free / 2**20:.1f} MiB are free there; free some space (`dvc gc --workspace` drops cached versions "
            "no commit uses) and rerun")


def room_to_save(output: Path, root: Path, dest: Path) -> str | None:
    """What is wrong when DVC will lack room to save `output` (a file or folder, written to become `dest`) into its
    cache once the stage ends, or None."""
    cache, types = dvc_cache(root)
    probe = next((p for p in (cache, root / ".dvc", root) if p.is_dir()), root)
    free = shutil.disk_usage(probe).free
    files = [output] if output.is_file() else [f for f in output.rglob("*") if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    if total + MARGIN <= free or "copy" not in types or (types[0] == "reflink" and can_reflink(probe)):
        return None    # the common case costs one statvfs
    return room_problem(copy_needed(files, cache), free, dest.relative_to(root).as_posix(), cache)


def full_disk_hint(tail: bytes, writes: tuple[Path, ...]) -> str | None:
    """When a tool's last output says the disk is full, or a folder it `writes` to has under LOW_SPACE left: those
    folders (else the one with the least space) with their free space."""
    free = {p: shutil.disk_usage(p).free for p in writes if Path(p).exists()}
    full = [p for p, n in free.items() if n < LOW_SPACE]
    if not full and any(s in tail for s in FULL):
        if not free:
            return "no space left on device"
        full = [min(free, key=free.get)]
    if not full:
        return None
    return "no space left on device in " + ", ".join(f"{p} ({free[p] / 2**20:.1f} MiB free)" for p in full)
