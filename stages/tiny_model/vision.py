"""What the builtin tiny model starts with instead of purely random weights: a trained network's weight
scale, and a vision tower that has learnt to see blur and brightness in generic scenes.

Why: a real Qwen3-VL comes to fine-tuning with a pretrained vision tower; a random tiny one does not, and
then cannot learn within a CPU budget to compare the blur of two microscope images (bench/FINDINGS.md,
"What the tiny model can learn": chance in every recipe; 98 % direction once the vision tower is pretrained
this way). The scenes are not the microscope generator's specimens and never come in pairs, so the
fine-tune still has to learn the task: which image is sharper, and how far from focus.
"""
from __future__ import annotations

import copy
import logging

import numpy as np

log = logging.getLogger(__name__)
# The pipeline's images: 64 x 64 px, i.e. 4 x 4 patches of 16 px merged 2 x 2 into 4 tokens (Qwen3-VL).
IMAGE_SIZE = 64
SIGMA_RANGE = (0.3, 8.0)    # px: from sharper than the generator's best focus to beyond its 10 steps out


def fan_in_init(module, gain: float, seed: int) -> int:
    """Redraw every 2-D weight but embeddings as N(0, gain^2 / fan_in), the scale of a trained model's
    layers. At Qwen's 0.02 a 64-wide model is close to the identity: the hidden state at the answer then
    moves by 0.2 % between images (10 % after the redraw). Returns how many tensors were redrawn."""
    import torch

    g, n = torch.Generator().manual_seed(seed), 0
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * gain / p.shape[1] ** 0.5)
                n += 1
    return n


def generic_image(rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[float]]:
    """A generic scene: discs, bars and strokes over a textured background, then a random Gaussian blur,
    exposure and noise. Returns the 8-bit image and what the vision tower is asked to see in it:
    log(blur sigma) and the mean brightness."""
    from scipy.ndimage import gaussian_filter

    img = rng.uniform(0.1, 0.6) + rng.uniform(0.02, 0.15) * gaussian_filter(rng.normal(size=(size, size)),
                                                                            rng.uniform(0.5, 6))
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(3, 16)):
        cx, cy = rng.uniform(0, size, 2)
        shape = rng.integers(3)
        if shape == 0:
            mask = np.hypot(xx - cx, yy - cy) < rng.uniform(1, 12)
        elif shape == 1:
            mask = (abs(xx - cx) < rng.uniform(1, 12)) & (abs(yy - cy) < rng.uniform(1, 12))
        else:
            t = rng.uniform(0, np.pi)
            mask = abs((xx - cx) * np.sin(t) - (yy - cy) * np.cos(t)) < rng.uniform(0.5, 2.5)
        img[mask] += rng.uniform(-0.4, 0.4)
    sigma = float(np.exp(rng.uniform(*np.log(SIGMA_RANGE))))
    img = gaussian_filter(img, sigma) * rng.uniform(0.7, 1.3) + rng.normal(0, rng.uniform(0.005, 0.03), img.shape)
    img = np.clip(img, 0, 1)
    return np.round(img * 255).astype(np.uint8), [float(np.log(sigma)), float(img.mean())]


def pretrain_vision(model, image_processor, steps: int, seed: int, device: str = "cpu", size: int = IMAGE_SIZE,
                    n_images: int | None = None, bs: int = 64, lr: float = 1e-3) -> dict:
    """Train the vision tower and its merger, through a linear head on the mean of an image's tokens, to
    regress the standardised targets of `generic_image` (`n_images` scenes, default: as many as the steps
    draw, at most 16,384). Only `model.model.visual` changes. Returns the held-out R^2 of each target."""
    import torch
    from PIL import Image
    from tqdm import tqdm

    n_images = n_images or min(16384, steps * bs)
    rng = np.random.default_rng(seed)
    scenes = [generic_image(rng, size) for _ in tqdm(range(n_images + 512), desc="model: drawing scenes", unit="img",
                                                     mininterval=2)]
    processor = copy.deepcopy(image_processor)   # at the pipeline's size, not the saved processor's bounds
    processor.size = {"shortest_edge": size * size, "longest_edge": size * size}
    enc = processor(images=[Image.fromarray(x).convert("RGB") for x, _ in scenes], return_tensors="pt")
    pixels = enc["pixel_values"].reshape(len(scenes), -1, enc["pixel_values"].shape[-1])
    grid = enc["image_grid_thw"][:1]
    y = torch.tensor([t for _, t in scenes], dtype=torch.float32)
    y = (y - y.mean(0)) / y.std(0)
    torch.manual_seed(seed)
    visual = model.model.visual.to(device).train()
    head = torch.nn.Linear(model.config.text_config.hidden_size, y.shape[1]).to(device)
    params = [*visual.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)

    def predict(idx):
        out = model.model.get_image_features(pixels[idx].reshape(-1, pixels.shape[-1]).to(device),
                                             grid.repeat(len(idx), 1).to(device)).pooler_output
        return head(torch.stack(out).mean(1))

    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="model: pretraining the vision tower", unit="step", mininterval=2):
        idx = torch.randint(0, n_images, (bs,), generator=gen)
        torch.nn.functional.mse_loss(predict(idx), y[idx].to(device)).backward()
        opt.step()
        opt.zero_grad()
    visual.eval()
    with torch.no_grad():
        test = torch.arange(n_images, n_images + 512)
        err = ((predict(test).cpu() - y[test]) ** 2).mean(0)
    r2 = {name: round(1 - e.item() / y[test, i].var().item(), 3)
          for i, (name, e) in enumerate(zip(("log_sigma", "mean"), err))}
    log.info("vision tower pretrained on generic scenes: %d steps, held-out R^2 %s", steps, r2)
    return r2
