"""The serve command end to end: `python -m stages.commands.serve` over a real `dvc repro` at test size, a real
ms-swift server on 127.0.0.1 and the real `openai` client. The served answers are the scored predictions;
a client's mistake is a 4xx that names it, and the server keeps serving; it stops cleanly on SIGTERM."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from stages.common import read_jsonl
from stages.serving.client import row_messages
from tests.workspace import ENV, ROOT, clone, sh

pytestmark = pytest.mark.slow
KEY = secrets.token_urlsafe(24)
CLIENTS, REQUESTS = 8, 20


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serving(repo: Path, *args: str, host: str = "127.0.0.1", key: str | None = KEY):
    """The serve command as a user starts it; yields (process, base_url, log path) once /health answers."""
    port, log = free_port(host), repo / f"serve-{time.monotonic_ns()}.log"
    env = {k: v for k, v in ENV.items() if k != "SERVE_API_KEY"} | ({"SERVE_API_KEY": key} if key else {})
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stages.commands.serve", "--host", host, "--port", str(port),
                                 *args], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                auth = {"Authorization": f"Bearer {key}"} if key else {}   # the key guards /health too
                if httpx.get(f"http://{host}:{port}/health", headers=auth, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 180 s:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        yield proc, f"http://{host}:{port}/v1", log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = clone(tmp_path_factory.mktemp("serve"))
    sh("dvc", "repro", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with serving(repo, "--max_request_mb", "2") as (proc, url, log):
        yield proc, openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120), log


def ask(client: openai.OpenAI, messages: list[dict], **kwargs) -> str:
    return client.chat.completions.create(model="finetuned", messages=messages, **kwargs).choices[0].message.content


def test_concurrent_clients_get_the_answers_the_pipeline_scored(repo, server):
    """8 clients x 20 requests at once, each a test pair as a client sends it (images inline): every served answer
    is the infer stage's prediction for that pair, word for word (greedy, same template and image budget)."""
    _, client, _ = server
    rows, predictions = read_jsonl(repo / "data/dataset/test.jsonl"), read_jsonl(repo / "data/predictions/finetuned.jsonl")
    assert len(rows) == len(predictions)

    def one_client(c: int) -> list[tuple[int, str]]:
        picks = [(c * REQUESTS + r) % len(rows) for r in range(REQUESTS)]
        return [(i, ask(client, row_messages(rows[i], repo))) for i in picks]

    with ThreadPoolExecutor(CLIENTS) as pool:
        served = [answer for answers in pool.map(one_client, range(CLIENTS)) for answer in answers]
    assert len(served) == CLIENTS * REQUESTS
    wrong = [(i, answer, predictions[i]["response"]) for i, answer in served if answer != predictions[i]["response"]]
    assert not wrong, wrong[:3]


def png(size: tuple[int, int], noise: bool = False) -> bytes:
    b = io.BytesIO()
    Image.frombytes("L", size, os.urandom(size[0] * size[1]) if noise else bytes(size[0] * size[1])).save(b, "PNG")
    return b.getvalue()


def inline(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}


def bad_requests(repo: Path) -> dict[str, tuple[dict, str]]:
    """case -> (what the client sends, a fragment of the message it must get back)."""
    user = row_messages(read_jsonl(repo / "data/dataset/test.jsonl")[0], repo)[-1]["content"]
    good = [p for p in user if p["type"] == "image_url"]
    text = [p for p in user if p["type"] == "text"]
    msg = lambda parts: {"messages": [{"role": "user", "content": parts}]}   # noqa: E731
    return {
        "a missing image file": (msg([{"type": "image_url", "image_url": {"url": "/no/such/image.png"}}, good[1], *text]),
                                 "/no/such/image.png"),
        "a corrupt image": (msg([inline(png((64, 64), noise=True)[:2000]), good[1], *text]), "image 1 of 2: a broken image"),
        "not an image": (msg([inline(b"GIF? no, plain text"), good[1], *text]), "image 1 of 2: not an image"),
        "one image of two": (msg([good[0], *text]), "the request has 1 image"),
        "three images": (msg([*good, good[0], *text]), "the request has 3 images"),
        "an oversized image": (msg([inline(png((2048, 2048), noise=True)), good[1], *text]), "at most 2 MiB"),
        "an over-long prompt": (msg([*good, {"type": "text", "text": "显微镜图像" * 400}]), "max_length(1024)"),
        "an unknown model": ({**msg([*good, *text]), "model": "gpt-4o"}, "gpt-4o"),
    }


@pytest.mark.parametrize("case", ["a missing image file", "a corrupt image", "not an image", "one image of two",
                                  "three images", "an oversized image", "an over-long prompt", "an unknown model"])
def test_a_bad_request_gets_a_4xx_that_says_why_and_the_server_keeps_serving(repo, server, case, reliability):
    proc, client, _ = server
    body, fragment = bad_requests(repo)[case]
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**{"model": "finetuned", **body})
    refused = 400 <= e.value.status_code < 500 and fragment in str(e.value.body)
    reliability.bad_input(refused)
    assert refused, (e.value.status_code, e.value.body)
    row = read_jsonl(repo / "data/dataset/test.jsonl")[0]
    assert ask(client, row_messages(row, repo)) == read_jsonl(repo / "data/predictions/finetuned.jsonl")[0]["response"]
    assert proc.poll() is None


def test_a_wrong_or_missing_key_is_a_401(repo, server):
    _, client, _ = server
    row = read_jsonl(repo / "data/dataset/test.jsonl")[0]
    wrong = openai.OpenAI(base_url=str(client.base_url), api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        ask(wrong, row_messages(row, repo))
    assert e.value.status_code == 401 and "API key" in str(e.value.body)
    none = httpx.post(f"{client.base_url}chat/completions", json={"model": "finetuned",
                      "messages": row_messages(row, repo)}, timeout=60)   # no Authorization header at all
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    for route in ("models", "../health"):   # ms-swift's own check let these through without the key
        assert httpx.get(f"{client.base_url}{route}", timeout=10).status_code == 401, route
    listed = httpx.get(f"{client.base_url}models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == "finetuned"


def test_the_key_appears_in_no_log(server):
    _, _, log = server
    text = log.read_text()
    assert "model_list: ['finetuned']" in text and KEY not in text


def test_the_readme_client_example_runs_as_written(repo, server):
    """The README's Python client, its port changed to this server's; its answer is `predict`'s for that pair."""
    _, client, _ = server
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "OpenAI(" in b)
    port = client.base_url.port
    run = subprocess.run([sys.executable, "-c", example.replace("127.0.0.1:8000", f"127.0.0.1:{port}")], cwd=repo,
                         env={**ENV, "SERVE_API_KEY": KEY}, text=True, capture_output=True)   # the key exported
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    images = re.findall(r'image\("([^"]+)"\)', example)
    predicted = json.loads(sh(sys.executable, "-m", "stages.commands.predict", *images, cwd=repo).stdout)
    assert out.strip() == str(predicted["answer"])


def test_other_addresses_are_refused_without_a_key(repo):
    """127.0.0.2 is this machine too, but not one of the names the command treats as local: it stands for
    any other address."""
    r = sh(sys.executable, "-m", "stages.commands.serve", "--host", "127.0.0.2", cwd=repo, check=False)
    assert r.returncode == 1 and "SERVE_API_KEY" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = sh(sys.executable, "-m", "stages.commands.serve", "--port", str(taken.getsockname()[1]), cwd=repo,
               check=False)
    assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr


def test_with_a_key_on_another_address_it_reads_no_server_files_and_stops_on_sigterm(repo):
    row = read_jsonl(repo / "data/dataset/test.jsonl")[0]
    with serving(repo, host="127.0.0.2") as (proc, url, log):
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120)
        by_path = [{"type": "image_url", "image_url": {"url": str(repo / p)}} for p in row["images"]]
        with pytest.raises(openai.APIStatusError) as e:
            ask(client, [{"role": "user", "content": [*by_path, {"type": "text", "text": "q"}]}])
        assert e.value.status_code == 422 and "Refusing to read the media file" in str(e.value.body)
        assert ask(client, row_messages(row, repo))      # images sent in the request are answered
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "Finished server process" in log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("/v1", "/health"), timeout=2)
