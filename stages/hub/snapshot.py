"""One revision of a ModelScope model, downloaded into ModelScope's cache (the model stage links it into its output).

The real `modelscope` client does the transfer: MODELSCOPE_ENDPOINT points it at a mirror or a private hub,
MODELSCOPE_API_TOKEN authenticates every request (never a param: it would land in dvc.lock), MODELSCOPE_CACHE holds
the downloads, shared by every workspace of the machine. The client resumes a broken file with an HTTP Range
request, retries, and checks each file's size and SHA-256 against the hub's listing. On top of it:
- only the files the revision lists reach models/base: the client's folder for a moving branch (`master`) keeps
  files deleted upstream;
- files that another revision of the same model in the cache already has (same size and SHA-256) are linked into
  the new revision's folder first, so a changed revision downloads only the files that changed;
- a failure is one message naming the model, the revision and what to check.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path, PurePosixPath

log = logging.getLogger("model")
CHUNK = 8 * 2**20


class DownloadError(RuntimeError):
    """The download failed; the message says why, in one paragraph."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def safe_path(path: str) -> bool:
    """A listed file path that stays inside the model folder: relative, no `..`, no empty name."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not PurePosixPath(path).is_absolute() and ".." not in parts and "\\" not in path


def reuse_unchanged(files: list, snapshots: Path, revision: str) -> int:
    """Link into snapshots/<revision>/ each listed file that another cached revision holds with the same size and
    SHA-256; return the bytes that need no download."""
    reused = 0
    for f in files:
        target = snapshots / revision / f.path
        if target.exists() or not f.sha256:
            continue
        for other in sorted(p for p in snapshots.glob("*") if p.name != revision):
            src = other / f.path
            if src.is_file() and src.stat().st_size == f.size and sha256(src) == f.sha256:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, target)
                reused += f.size
                break
    return reused


def explain(e: Exception, model_id: str, revision: str) -> str:
    """The client's error - its first line and the files that failed (the rest repeats the request) - and what to
    check."""
    from modelscope_hub.errors import AuthenticationError, NotExistError, PermissionDeniedError
    text = str(e).strip() or type(e).__name__
    lines = text.splitlines()
    said = "\n  ".join([lines[0], *[x.strip() for x in lines[1:] if x.strip().startswith("- ")][:3]])
    if isinstance(e, NotExistError) or " [404] " in lines[0]:
        hint = ("check model.model_id and model.revision (a branch, a tag or a commit id); a private model may "
                "answer 404 without a token: export MODELSCOPE_API_TOKEN")
    elif isinstance(e, (AuthenticationError, PermissionDeniedError)) or " [401] " in text or " [403] " in text:
        hint = "a private model: export MODELSCOPE_API_TOKEN with a token that may read it"
    elif "mismatch" in text.lower():
        hint = ("a file differs from the hub's listing (size or SHA-256) after every retry, so it was refused; "
                "rerun later, or ask the hub's owner")
    else:
        hint = "the connection failed after the client's retries; rerun: finished files stay in the cache"
    return f"cannot download {model_id}@{revision} from ModelScope: {said}\n  {hint}"


def download(model_id: str, revision: str) -> tuple[Path, list[str]]:
    """The revision's snapshot folder in ModelScope's cache and the files it lists (the folder may hold more)."""
    import requests
    from modelscope import snapshot_download
    from modelscope_hub.api import HubApi
    from modelscope_hub.config import get_default_config
    from modelscope_hub.errors import HubError

    try:
        files = [f for f in HubApi().list_repo_files(model_id, "model", revision=revision) if not f.is_dir]
        if not files:
            raise DownloadError(f"{model_id}@{revision} lists no files on ModelScope; check model.revision")
        if unsafe := [f.path for f in files if not safe_path(f.path)]:
            raise DownloadError(f"{model_id}@{revision}: the hub lists file paths outside the model folder "
                                f"({', '.join(map(repr, unsafe[:3]))}); refusing the download")
        snapshots = Path(get_default_config().cache_dir) / "models" / model_id.replace("/", "--") / "snapshots"
        reused = reuse_unchanged(files, snapshots, revision)
        total = sum(f.size for f in files)
        log.info("downloading %s@%s from ModelScope: %d files, %.1f MB (%.1f MB already in the cache from other "
                 "revisions)", model_id, revision, len(files), total / 1e6, reused / 1e6)
        root = Path(snapshot_download(model_id, revision=revision))
    except (HubError, requests.RequestException) as e:
        raise DownloadError(explain(e, model_id, revision)) from None
    return root, [f.path for f in files]
