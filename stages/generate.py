"""Stage generate: seeded synthetic microscope focus pairs -> data/raw (images/ + labels.csv).

Optics: an image at motor position z is the specimen blurred by a Gaussian PSF of sigma =
hypot(focus_sigma, blur_per_step * (z - z_focus)) px (the defocus blur circle grows linearly with |dz|),
times a per-capture exposure factor, plus shot noise (full_well photons at full scale) and read noise.
A pair is taken at z and z + 1; its label d = z_focus - z is the signed distance from the first image.
"""
from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import expit
from tqdm import tqdm

from stages.common import ROOT, count, setup_logging, stage_params
from stages.params.paths import GENERATED_COLUMNS as COLUMNS
from stages.params.paths import synth_folder_problem
from stages.params.rules import SYNTH_DIR
from stages.storage.atomic import atomic_dir

log = logging.getLogger("pipeline.generate")

def _window(size: int, cx: float, cy: float, radius: float):
    """The pixels within `radius` of (cx, cy): their slices and x, y offsets from the centre."""
    y0, y1, x0, x1 = (min(max(int(c + r), 0), size) for c in (cy, cx) for r in (-radius, radius + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return (slice(y0, y1), slice(x0, x1)), xx - cx, yy - cy


def make_specimen(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cells with darker nuclei and granular cytoplasm, plus debris, on an uneven background; 0..~0.8."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    gx, gy = rng.normal(0, 0.05, 2)  # illumination gradient
    smooth = gaussian_filter(rng.normal(size=(size, size)), size / 8)
    back = rng.uniform(0.12, 0.3) + gx * xx + gy * yy + 0.03 * smooth / (smooth.std() + 1e-9)
    back += gaussian_filter(rng.normal(0, 0.03, (size, size)), 0.7)  # substrate grain
    cells = np.zeros((size, size))
    for _ in range(rng.poisson(size * size / 400) + 1):  # about 10 cells in a 64 px field
        (cx, cy), theta, a = rng.uniform(0, size, 2), rng.uniform(0, np.pi), rng.uniform(3, 8)
        b = a * rng.uniform(0.55, 1.0)  # semi-axes a >= b, px
        win, x, y = _window(size, cx, cy, a + 2)
        u, v = (x * np.cos(theta) + y * np.sin(theta)) / a, (y * np.cos(theta) - x * np.sin(theta)) / b
        (nu, nv), nr = rng.uniform(-0.25, 0.25, 2), rng.uniform(0.3, 0.5)
        body, nucleus = expit((1 - np.hypot(u, v)) * 2.5 * b), expit((1 - np.hypot(u - nu, v - nv) / nr) * b)
        brightness, darker_nucleus = rng.uniform(0.25, 0.5), rng.uniform(0.2, 0.5)
        cells[win] = np.maximum(cells[win], brightness * body * (1 - darker_nucleus * nucleus))
    grain = 1 + 0.5 * gaussian_filter(rng.normal(size=(size, size)), 0.8)
    debris = np.zeros((size, size))
    for _ in range(rng.poisson(size * size / 600)):
        (cx, cy), s = rng.uniform(0, size, 2), rng.uniform(0.5, 1.2)
        win, x, y = _window(size, cx, cy, 4 * s)
        debris[win] += rng.uniform(-0.25, 0.35) * np.exp(-(x * x + y * y) / (2 * s * s))
    return back + cells * grain + debris


def defocus(img: np.ndarray, sigma: float) -> np.ndarray:
    """Convolve with a Gaussian PSF of `sigma` px (edges reflected, as a wider field of view would)."""
    return gaussian_filter(img, sigma, mode="reflect")


def capture(specimen: np.ndarray, dz: int, optics: dict, rng: np.random.Generator) -> np.ndarray:
    """One 8-bit exposure at defocus `dz` steps: blur, then exposure jitter, shot and read noise."""
    sigma = np.hypot(optics["focus_sigma"], optics["blur_per_step"] * dz)
    j = optics["brightness_jitter"]
    signal = np.clip(defocus(specimen, sigma) * rng.uniform(1 - j, 1 + j), 0, None)
    if optics["full_well"]:
        signal = rng.poisson(signal * optics["full_well"]) / optics["full_well"]
    signal = signal + rng.normal(0, optics["noise_std"], signal.shape)
    return np.round(np.clip(signal, 0, 1) * 255).astype(np.uint8)


def label(d: int) -> tuple[str, int]:
    """Signed steps from the first image to focus -> (direction, distance)."""
    if d == 0:
        raise ValueError("d must be non-zero: the first image is never in focus")
    return ("+" if d > 0 else "-"), abs(d)


def analysis_text(direction: str, distance: int) -> str:
    return f"电机应该向{direction}方向移动{distance}步。"


def sample(rng: np.random.Generator, cfg: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """One pair: uniform direction and distance d, images at z (dz = -d) and z + 1 (dz = 1 - d)."""
    d = int(rng.integers(1, cfg["max_distance"] + 1)) * (1 if rng.random() < 0.5 else -1)
    specimen = make_specimen(rng, cfg["image_size"])
    return capture(specimen, -d, cfg, rng), capture(specimen, 1 - d, cfg, rng), d


def write_pair(job: tuple[int, np.random.SeedSequence, dict, Path, int]) -> dict:
    """Draw pair `i` from its own seed, save its two PNGs into `images`, return its labels.csv row."""
    i, seed_seq, cfg, images, width = job
    img1, img2, d = sample(np.random.default_rng(seed_seq), cfg)
    sid, (direction, distance) = f"{i:0{width}d}", label(d)
    Image.fromarray(img1).save(images / f"{sid}_1.png")
    Image.fromarray(img2).save(images / f"{sid}_2.png")
    return {"id": sid, "image_1": f"images/{sid}_1.png", "image_2": f"images/{sid}_2.png",
            "analysis": analysis_text(direction, distance), "direction": direction, "distance": distance}


def generate(out_dir: Path, cfg: dict, seed: int) -> list[dict]:
    """Write images/<id>_{1,2}.png and labels.csv into `out_dir`, atomically; return the label rows."""
    n = cfg["num_samples"]
    with atomic_dir(Path(out_dir)) as tmp:
        (tmp / "images").mkdir()
        jobs = [(i, ss, cfg, tmp / "images", max(6, len(str(n - 1))))
                for i, ss in enumerate(np.random.SeedSequence(seed).spawn(n))]
        with ProcessPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
            rows = list(tqdm(pool.map(write_pair, jobs, chunksize=16), total=n, desc="generate", unit="pair"))
        with open(tmp / "labels.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([COLUMNS] + [[r[c] for c in COLUMNS] for r in rows])
    plus = sum(r["direction"] == "+" for r in rows)
    log.info("%s: %d '+' / %d '-' -> %s", count(n, "sample"), plus, n - plus, out_dir)
    return rows


def main() -> None:
    setup_logging()
    p = stage_params("generate")
    # DVC leaves the folder in place (persist), so this check comes before anything in it is replaced, whether
    # check_params ran first or not (`dvc repro generate`)
    if problem := synth_folder_problem(ROOT):
        raise SystemExit(problem)
    generate(ROOT / SYNTH_DIR, p["synth"], p["seed"])


if __name__ == "__main__":
    main()
