"""Throughput and latency of the serve command under concurrent clients: `python -m stages.commands.serve` on
127.0.0.1 over this workspace's trained model (run `dvc repro` first), then N clients (threads of the real
`openai` client) sending test pairs at once, images inline, each client one request after the other.

    python -m bench.serve_load                          # 8 clients x 20 requests
    python -m bench.serve_load --clients 1 --requests 40
    python -m bench.serve_load --worst --requests 2     # memory: images at the server's pixel limit, then over it

Prints the server's start time, requests/s over the whole run, p50 / p95 / max latency, and how many served
answers differ from the infer stage's predictions (data/predictions/finetuned.jsonl) for the same pairs. With
--worst, each request carries two images of noise at the largest size the server decodes, and then two PNGs of
178 MP (150 KB each: the size a header may claim); it prints the server's resident memory at rest and its peak.
"""
from __future__ import annotations

import argparse
import base64
import io
import socket
import threading
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import psutil
from PIL import Image

from stages.common import read_jsonl, stage_params
from stages.dataset.checks import pixel_budget
from stages.serving.checks import max_pixels
from stages.serving.client import row_messages

ROOT = Path(__file__).resolve().parent.parent


def start(port: int, log) -> tuple[subprocess.Popen, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "stages.commands.serve", "--port", str(port)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped (exit {proc.returncode}); its log: {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, time.monotonic() - t0
        except httpx.TransportError:
            time.sleep(0.5)


def launch() -> tuple[subprocess.Popen, float, object, openai.OpenAI]:
    """The serve command on a free port of 127.0.0.1, its start time, its log and a client of it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", prefix="serve-load-", suffix=".log", delete=False) as log:
        proc, startup = start(port, log)
    return proc, startup, log, openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                                             timeout=900)


def png_url(image: Image.Image) -> dict:
    b = io.BytesIO()
    image.save(b, "PNG", compress_level=1)
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b.getvalue()).decode()}}


def worst_messages(side: int, prompt: str) -> tuple[list[dict], list[dict]]:
    """Two images of noise at the pixel limit (accepted: decoded, then downscaled by ms-swift), and two PNGs whose
    header claims 178 MP (refused from the header)."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8))
    bomb = Image.new("L", (13000, 13700))   # 178 MP: just under what Pillow itself refuses
    return ([{"role": "user", "content": [png_url(noise), png_url(noise), {"type": "text", "text": prompt}]}],
            [{"role": "user", "content": [png_url(bomb), png_url(bomb), {"type": "text", "text": prompt}]}])


class PeakMemory:
    """The server's resident memory, sampled every 20 ms in a thread: at rest when started, and the peak."""

    def __init__(self, pid: int):
        self.proc, self.peak, self.done = psutil.Process(pid), 0, threading.Event()
        self.rest = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> str:
        self.done.set()
        self.thread.join()
        return f"at rest {self.rest / 2**30:.2f} GiB, peak {self.peak / 2**30:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20, help="per client")
    ap.add_argument("--worst", action="store_true", help="memory under images at and over the pixel limit")
    args = ap.parse_args()
    if args.worst:
        return worst(args)
    rows = read_jsonl(ROOT / "data/dataset/test.jsonl")
    predictions = read_jsonl(ROOT / "data/predictions/finetuned.jsonl")
    proc, startup, log, client = launch()
    try:
        client.chat.completions.create(model="finetuned", messages=row_messages(rows[0], ROOT))   # warm-up

        def one_client(c: int) -> list[tuple[float, bool]]:
            out = []
            for r in range(args.requests):
                i = (c * args.requests + r) % len(rows)
                t = time.monotonic()
                answer = client.chat.completions.create(model="finetuned", messages=row_messages(rows[i], ROOT))
                out.append((time.monotonic() - t, answer.choices[0].message.content == predictions[i]["response"]))
            return out

        t0 = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [r for rs in pool.map(one_client, range(args.clients)) for r in rs]
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(60)
    latencies = sorted(t for t, _ in results)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * len(latencies)) - 1)]
    print(f"server start: {startup:.1f} s (log: {log.name})")
    print(f"{args.clients} clients x {args.requests} requests: {len(results)} in {wall:.1f} s = "
          f"{len(results) / wall:.2f} requests/s")
    print(f"latency: p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s")
    print(f"answers differing from the infer stage's predictions: {sum(not ok for _, ok in results)} of {len(results)}")


def worst(args) -> None:
    p = stage_params("infer_finetuned")
    limit = max_pixels(pixel_budget(p["model"]))
    side = int(limit ** 0.5)
    at_limit, over = worst_messages(side, stage_params("build")["data"]["prompt"])
    proc, startup, _, client = launch()

    def send(messages: list[dict]) -> str:
        try:
            client.chat.completions.create(model="finetuned", messages=messages)
            return "answered"
        except openai.APIStatusError as e:
            return f"refused ({e.status_code})"

    try:
        print(f"server start: {startup:.1f} s; pixel limit {limit:,} px: images of {side}x{side} px")
        for name, messages in (("at the limit", at_limit), ("178 MP headers", over)):
            memory = PeakMemory(proc.pid)
            t0 = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                said = list(pool.map(lambda _: send(messages), range(args.clients * args.requests)))
            print(f"{name}: {args.clients} concurrent clients, {len(said)} requests ({', '.join(sorted(set(said)))}) "
                  f"in {time.monotonic() - t0:.1f} s; server memory {memory.stop()}")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
