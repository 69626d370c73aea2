"""Stage generate: seeded synthetic microscope focus pairs -> data/raw (images/ + labels.csv).

Optics: the image of a specimen at motor position z is the specimen convolved with a Gaussian PSF of
sigma = hypot(focus_sigma, blur_per_step * (z - z_focus)) px (the defocus blur circle grows linearly
with |dz|; focus_sigma is the diffraction limit), then a per-capture exposure factor, shot noise
(Poisson, full_well photons at full scale) and Gaussian read noise, clipped and quantized to 8 bits.
A pair is captured at z and z + 1; the label d = z_focus - z is the signed distance from the first image.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from stages.common import atomic_dir, count, setup_logging

log = logging.getLogger("pipeline.generate")
COLUMNS = ["id", "image_1", "image_2", "analysis", "direction", "distance"]
RANGES = {  # key: (type, low, high, what is valid)
    "num_samples": (int, 1, None, "an integer >= 1"),
    "image_size": (int, 32, 2048, "an integer in 32..2048 (px)"),
    "max_distance": (int, 1, None, "an integer >= 1 (steps)"),
    "focus_sigma": (float, 0.0, None, "a number >= 0 (px)"),
    "blur_per_step": (float, 1.0e-6, None, "a number > 0 (px per step)"),
    "noise_std": (float, 0.0, 1.0, "a number in 0..1"),
    "full_well": (int, 0, None, "an integer >= 0 (photons; 0 = no shot noise)"),
    "brightness_jitter": (float, 0.0, 0.99, "a number in 0..0.99"),
}


def check_config(cfg: dict) -> dict:
    """The synth section, every bad or missing key reported at once."""
    errors = []
    for key, (kind, lo, hi, valid) in RANGES.items():
        v = cfg.get(key)
        ok = isinstance(v, (int, float) if kind is float else int) and not isinstance(v, bool)
        if not ok or v < lo or (hi is not None and v > hi):
            errors.append(f"synth.{key} must be {valid}, got {v!r}")
    if errors:
        raise ValueError("; ".join(errors))
    return cfg


def synth_config(params: dict) -> tuple[Path, dict, int]:
    """params.yaml as a dict -> (out_dir, checked synth section, seed)."""
    cfg, seed = params.get("synth") or {}, params.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return Path(cfg.get("out_dir") or "data/raw"), check_config(cfg), seed


def _window(size: int, cx: float, cy: float, radius: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The pixels within `radius` of (cx, cy): their slices and x, y offsets from the centre."""
    y0, y1, x0, x1 = (min(max(int(c + r), 0), size) for c in (cy, cx) for r in (-radius, radius + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return (slice(y0, y1), slice(x0, x1)), xx - cx, yy - cy


def make_specimen(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cells with darker nuclei and granular cytoplasm, plus debris, on an uneven background; 0..~0.8."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    gx, gy = rng.normal(0, 0.05, 2)
    back = rng.uniform(0.12, 0.3) + gx * xx + gy * yy
    smooth = gaussian_filter(rng.normal(size=(size, size)), size / 8)
    back += 0.03 * smooth / (smooth.std() + 1e-9) + gaussian_filter(rng.normal(0, 0.03, (size, size)), 0.7)
    cells = np.zeros((size, size))
    for _ in range(rng.poisson(size * size / 400) + 1):
        cx, cy, theta, a = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0, np.pi), rng.uniform(3, 8)
        b = a * rng.uniform(0.55, 1.0)
        win, x, y = _window(size, cx, cy, a + 2)
        u, v = (x * np.cos(theta) + y * np.sin(theta)) / a, (y * np.cos(theta) - x * np.sin(theta)) / b
        body = 1 / (1 + np.exp(np.clip((np.hypot(u, v) - 1) * b * 2.5, -50, 50)))  # edge ~1 px wide
        nu = np.hypot(u - rng.uniform(-0.25, 0.25), v - rng.uniform(-0.25, 0.25)) / rng.uniform(0.3, 0.5)
        nucleus = 1 / (1 + np.exp(np.clip((nu - 1) * b, -50, 50)))
        cells[win] = np.maximum(cells[win], rng.uniform(0.25, 0.5) * body * (1 - rng.uniform(0.2, 0.5) * nucleus))
    grain = 1 + 0.5 * gaussian_filter(rng.normal(size=(size, size)), 0.8)
    debris = np.zeros((size, size))
    for _ in range(rng.poisson(size * size / 600)):
        cx, cy, s = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.5, 1.2)
        win, x, y = _window(size, cx, cy, 4 * s)
        debris[win] += rng.uniform(-0.25, 0.35) * np.exp(-(x * x + y * y) / (2 * s * s))
    return back + cells * grain + debris


def defocus(img: np.ndarray, sigma: float) -> np.ndarray:
    """Convolve with a Gaussian PSF of `sigma` px (edges reflected, as a wider field of view would)."""
    return gaussian_filter(img, sigma, mode="reflect") if sigma > 0 else img.copy()


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


def generate(out_dir: Path, cfg: dict, seed: int) -> list[dict]:
    """Write images/<id>_{1,2}.png and labels.csv into `out_dir`, atomically; return the label rows."""
    check_config(cfg)
    n, rows = cfg["num_samples"], []
    width = max(6, len(str(n - 1)))
    with atomic_dir(Path(out_dir)) as tmp:
        (tmp / "images").mkdir()
        for i, ss in enumerate(tqdm(np.random.SeedSequence(seed).spawn(n), desc="generate", unit="pair")):
            img1, img2, d = sample(np.random.default_rng(ss), cfg)
            sid, (direction, distance) = f"{i:0{width}d}", label(d)
            for k, img in ((1, img1), (2, img2)):
                Image.fromarray(img).save(tmp / "images" / f"{sid}_{k}.png")
            rows.append({"id": sid, "image_1": f"images/{sid}_1.png", "image_2": f"images/{sid}_2.png",
                         "analysis": analysis_text(direction, distance), "direction": direction,
                         "distance": distance})
        with open(tmp / "labels.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    plus = sum(r["direction"] == "+" for r in rows)
    log.info("%s: %d '+' / %d '-' -> %s", count(n, "sample"), plus, n - plus, out_dir)
    return rows


def main() -> None:
    setup_logging()
    with open("params.yaml", encoding="utf-8") as f:
        generate(*synth_config(yaml.safe_load(f)))


if __name__ == "__main__":
    main()
