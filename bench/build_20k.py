"""Benchmark of the build stage on a large table: N two-image samples (64x64 px; a PNG and a JPEG each, all
distinct), built by `python -m stages.build` in a temporary copy of the repository. Prints the stage's wall
time and peak resident memory for each size, so that a flat memory curve shows the rows are streamed.

    python bench/build_20k.py                  # 2,000 and 20,000 samples
    python bench/build_20k.py --sizes 20000 --image-size 224
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def make_repo(dest: Path, n: int, side: int) -> None:
    """stages/, dvc.yaml, params.yaml (data.raw_dir -> data/bench) and N samples of random images."""
    shutil.copytree(ROOT / "stages", dest / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"].update(raw_dir="data/bench", labels="labels.csv", format="table")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    images = dest / "data" / "bench" / "images"
    images.mkdir(parents=True)
    rng, lines = np.random.default_rng(0), ["id,image_1,image_2,analysis,direction,distance"]
    for i in range(n):
        for k, fmt in ((1, "png"), (2, "jpg")):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(buf, "PNG" if fmt == "png" else "JPEG")
            (images / f"{i:06d}_{k}.{fmt}").write_bytes(buf.getvalue())
        d = int(rng.integers(1, 11))
        lines.append(f"{i:06d},images/{i:06d}_1.png,images/{i:06d}_2.jpg,move {d} steps,{'+-'[i % 2]},{d}")
    (dest / "data" / "bench" / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_build(repo: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, last log line) of one `python -m stages.build`."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stages.build"], cwd=repo, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"build failed:\n{err}")
    return wall, usage.ru_maxrss / 1024, err.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--image-size", type=int, default=64, help="px, square")
    args = ap.parse_args()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp)
            t = time.perf_counter()
            make_repo(repo, n, args.image_size)
            made = time.perf_counter() - t
            wall, rss, last = run_build(repo)
            print(f"{n:,} samples x 2 images ({args.image_size}x{args.image_size} px, made in {made:.1f} s): "
                  f"build {wall:.1f} s wall, peak RSS {rss:.0f} MiB | {last}")


if __name__ == "__main__":
    main()
