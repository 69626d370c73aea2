"""Throughput and latency of the serve command under concurrent clients: `python -m stages.commands.serve` on
127.0.0.1 over this workspace's trained model (run `dvc repro` first), then N clients (threads of the real
`openai` client) sending test pairs at once, images inline, each client one request after the other.

    python -m bench.serve_load                          # 8 clients x 20 requests
    python -m bench.serve_load --clients 1 --requests 40

Prints the server's start time, requests/s over the whole run, p50 / p95 / max latency, and how many served
answers differ from the infer stage's predictions (data/predictions/finetuned.jsonl) for the same pairs.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

from stages.common import read_jsonl
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20, help="per client")
    args = ap.parse_args()
    rows = read_jsonl(ROOT / "data/dataset/test.jsonl")
    predictions = read_jsonl(ROOT / "data/predictions/finetuned.jsonl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", prefix="serve-load-", suffix=".log", delete=False) as log:
        proc, startup = start(port, log)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
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


if __name__ == "__main__":
    main()
