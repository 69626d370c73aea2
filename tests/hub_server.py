"""A ModelScope-compatible hub on 127.0.0.1 for the model stage's tests: the HTTP API that the installed client
(modelscope 1.40.2 over modelscope_hub 0.5.1, pinned in requirements.txt) calls for `snapshot_download`, served
from repositories held in memory or as files on disk.

Routes (modelscope_hub/_legacy_api.py, _download.py, api.py of that version):
    GET  /api/v1/models/<owner>/<name>/repo/files?Revision=&Recursive=   the file listing: Path, Type, Size, Sha256
    GET  /api/v1/models/<owner>/<name>/repo?Revision=&FilePath=          one file, with Range (206) for resuming
    GET  /api/v1/repos/internalAccelerationInfo                          the region probe: 404 (no region)
    POST /api/v1/login, GET /openapi/v1/users/me                         a token check
Anything else is answered 501 and recorded in `unknown`, so that a client version calling something new fails
loudly instead of passing by accident. Errors are HTTP statuses with a JSON `Message`, as the hub sends them (the
client treats a 200 carrying an error code as an empty repository).

Faults, per file path: `drop[path] = n` cuts the next n responses of that file half-way (a full Content-Length,
then the connection closes); `corrupt.add(path)` serves one byte changed (its SHA-256 no longer matches);
`slow[path] = s` sends it at one MiB per s seconds (time to kill a download half-way).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

CLIENT_VERSIONS = {"modelscope": "1.40.2", "modelscope_hub": "0.5.1"}   # the client whose calls these routes are
CHUNK = 1 << 20


@dataclass
class Repo:
    revisions: dict[str, dict[str, Path | bytes]]   # revision (branch, tag or commit id) -> path -> file or content
    token: str | None = None                         # a private repository: only this token may read it


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    drop: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)                  # path -> seconds per MiB sent
    requests: list[tuple[str, str, dict]] = field(default_factory=list)   # (method, path, headers) of each
    unknown: list[str] = field(default_factory=list)
    downloads: list[tuple[str, str]] = field(default_factory=list)         # (revision, file path) served, whole

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        """Start on a free port of 127.0.0.1, in a daemon thread; returns the server and its endpoint URL."""
        hub = self

        class Handler(_Handler):
            pass
        Handler.hub = hub
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"


def content(item: Path | bytes) -> tuple[int, str]:
    """Size and SHA-256 of a file or a bytes value, streamed."""
    if isinstance(item, bytes):
        return len(item), hashlib.sha256(item).hexdigest()
    h = hashlib.sha256()
    with open(item, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return item.stat().st_size, h.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:   # quiet: the tests read `hub.requests`
        pass

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, message: str) -> None:
        self.reply(status, {"Code": status, "Success": False, "Message": message, "RequestId": "test"})

    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip() or None if auth.startswith("Bearer ") else None

    def do_POST(self) -> None:
        self.hub.requests.append(("POST", self.path, dict(self.headers)))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if urlparse(self.path).path != "/api/v1/login":
            return self.unknown_route()
        if not any(r.token == body.get("AccessToken") for r in self.hub.repos.values()):
            return self.error(401, "AccessToken is invalid or expired")
        self.reply(200, {"Code": 200, "Success": True, "Message": "success", "RequestId": "test",
                         "Data": {"AccessToken": "git-token", "Username": "tester", "Email": "t@example.com"}})

    def do_GET(self) -> None:
        self.hub.requests.append(("GET", self.path, dict(self.headers)))
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if url.path == "/api/v1/repos/internalAccelerationInfo":
            return self.error(404, "no region")
        if url.path == "/openapi/v1/users/me":
            if any(r.token and r.token == self.token() for r in self.hub.repos.values()):
                return self.reply(200, {"success": True, "data": {"username": "tester", "email": "t@example.com"}})
            return self.error(401, "AccessToken is invalid or expired")
        if len(parts) >= 6 and parts[:3] == ["api", "v1", "models"] and parts[5] == "repo":
            files = self.revision(f"{parts[3]}/{parts[4]}", query.get("Revision", "master"))
            if files is None:
                return None
            if parts[6:] == ["files"]:
                return self.listing(files, query.get("Revision", "master"))
            if len(parts) == 6:
                return self.file(files, query.get("Revision", "master"), unquote(query.get("FilePath", "")))
        return self.unknown_route()

    def unknown_route(self) -> None:
        self.hub.unknown.append(f"{self.command} {self.path}")
        self.error(501, f"the test hub does not serve {self.command} {urlparse(self.path).path}")

    def revision(self, model_id: str, revision: str) -> dict | None:
        repo = self.hub.repos.get(model_id)
        if repo is None:
            return self.error(404, f"Model {model_id} does not exist")
        if repo.token and self.token() != repo.token:
            return self.error(401, f"Model {model_id} is private: log in or pass a valid token")
        if revision not in repo.revisions:
            return self.error(404, f"Model {model_id} has no revision {revision}")
        return repo.revisions[revision]

    def listing(self, files: dict, revision: str) -> None:
        entries = []
        for path, item in sorted(files.items()):
            size, digest = content(item)
            entries.append({"Name": Path(path).name, "Path": path, "Type": "blob", "Size": size, "Sha256": digest,
                            "Revision": revision})
        self.reply(200, {"Code": 200, "Success": True, "Message": "success", "RequestId": "test",
                         "Data": {"Files": entries}})

    def file(self, files: dict, revision: str, path: str) -> None:
        if path not in files:
            return self.error(404, f"file {path} not found")
        item = files[path]
        data = item if isinstance(item, bytes) else None
        size = len(data) if data is not None else item.stat().st_size
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
        cut = self.hub.drop.get(path, 0) > 0
        if cut:
            self.hub.drop[path] -= 1
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        stop = start + (size - start) // 2 if cut else size
        self.stream(item, start, stop, flip=path in self.hub.corrupt, delay=self.hub.slow.get(path, 0))
        if cut:
            self.close_connection = True
            return None
        self.hub.downloads.append((revision, path))
        return None

    def stream(self, item: Path | bytes, start: int, stop: int, flip: bool, delay: float = 0) -> None:
        """Bytes start..stop of a file, a chunk at a time (memory stays flat in the file's size); `flip` changes the
        first byte sent."""
        if isinstance(item, bytes):
            chunks = (item[i:min(i + CHUNK, stop)] for i in range(start, stop, CHUNK))
        else:
            def chunks_of_file():
                with open(item, "rb") as f:
                    f.seek(start)
                    left = stop - start
                    while left > 0 and (chunk := f.read(min(CHUNK, left))):
                        left -= len(chunk)
                        yield chunk
            chunks = chunks_of_file()
        for i, chunk in enumerate(chunks):
            if flip and i == 0 and chunk:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            self.wfile.write(chunk)
            if delay:
                self.wfile.flush()
                time.sleep(delay)
        self.wfile.flush()
