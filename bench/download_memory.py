"""Peak memory of the model stage's ModelScope download against the file size: `python -m stages.model` with
model.source: modelscope, in a temporary copy of the repository, from the test hub on 127.0.0.1
(tests/hub_server.py, which streams files from disk), for a model whose weights file is 64 MiB and then 1 GiB.

    python -m bench.download_memory            # 64 MiB and 1 GiB (needs ~3 GB of free disk in $TMPDIR)
    python -m bench.download_memory --sizes 64 # MiB, one run per size

It prints, per size, the wall time and the stage's peak resident memory (ru_maxrss of the child): flat in the file
size when the client streams to disk.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from stages.params.tree import set_dotted
from tests.hub_server import Hub, Repo

ROOT = Path(__file__).resolve().parent.parent

MODEL_ID = "bench/big-model"


def weights(path: Path, mib: int) -> Path:
    """A file of `mib` MiB of random bytes, written a MiB at a time."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(2**20))
    return path


def run_stage(tmp: Path, endpoint: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `python -m stages.model` in a fresh copy with a fresh cache."""
    repo = tmp / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(tmp / "cache", ignore_errors=True)
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for k, v in {"source": "modelscope", "model_id": MODEL_ID, "revision": "master"}.items():
        set_dotted(params, f"model.{k}", v)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELSCOPE_")},
           "MODELSCOPE_ENDPOINT": endpoint, "MODELSCOPE_CACHE": str(tmp / "cache"), "MODELSCOPE_HOME": str(tmp / "home"),
           "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false", "NO_PROXY": "127.0.0.1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stages.model"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)      # this child's own rusage
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"the model stage failed ({os.waitstatus_to_exitcode(status)})")
    return wall, usage.ru_maxrss / 1024           # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 1024], help="weights file sizes, MiB")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for mib in args.sizes:
            big = weights(tmp / "model.safetensors", mib)
            files = {"config.json": json.dumps({"model_type": "qwen3_vl"}).encode(), "tokenizer_config.json": b"{}",
                     "model.safetensors": big}
            hub = Hub(repos={MODEL_ID: Repo(revisions={"master": files})})
            server, endpoint = hub.serve()
            wall, peak = run_stage(tmp, endpoint)
            server.shutdown()
            rows.append({"file_mib": mib, "wall_s": round(wall, 1), "peak_rss_mib": round(peak, 1),
                         "mib_per_s": round(mib / wall, 1)})
            print(f"weights {mib:>5} MiB: {wall:6.1f} s ({mib / wall:6.1f} MiB/s), peak RSS of the stage {peak:7.1f} MiB",
                  flush=True)
            big.unlink()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
