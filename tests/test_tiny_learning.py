"""bench/tiny_learning.py, the recipe search of the tiny model: its control tasks label what they claim, its
re-initialisation has the stated scale, and a short run on a freshly built tiny model writes its curve."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.tiny_learning import encode, pixel_bounds, task_label
from stages.tiny_vision import fan_in_init, generic_image, pretrain_vision
from stages.tiny_qwen import build_tiny_qwen3_vl
from tests.conftest import ROOT
from tests.workspace import ENV


def test_task_labels():
    dark, bright = np.full((4, 4), 50, np.uint8), np.full((4, 4), 70, np.uint8)
    assert task_label("real", dark, bright, -7) == -7
    assert (task_label("bright", bright, dark, 3), task_label("bright", dark, bright, 3)) == (1, -1)
    assert (task_label("bright2", dark, bright, 3), task_label("bright2", bright, dark, 3)) == (1, -1)
    assert [task_label("sharp1", dark, dark, d) for d in (-5, 5, 6, -9)] == [1, 1, -1, -1]
    with pytest.raises(KeyError):
        task_label("blur", dark, dark, 1)


def test_fan_in_init_scale_and_embeddings_kept():
    net = torch.nn.ModuleDict({"embed_tokens": torch.nn.Embedding(50, 256), "proj": torch.nn.Linear(256, 512)})
    embed = net["embed_tokens"].weight.detach().clone()
    assert fan_in_init(net, 2.0, seed=0) == 1
    assert torch.equal(net["embed_tokens"].weight, embed)
    assert net["proj"].weight.std().item() == pytest.approx(2.0 / 256 ** 0.5, rel=0.02)


def test_short_run_writes_its_curve(tmp_path):
    model, out = tmp_path / "model", tmp_path / "curve.jsonl"
    model.mkdir()
    build_tiny_qwen3_vl(model, seed=0)
    r = subprocess.run([sys.executable, "-m", "bench.tiny_learning", "--model", str(model), "--task", "bright2",
                        "--n_train", "16", "--n_test", "8", "--bs", "8", "--eval_every", "1", "--lm_gain", "1",
                        "--vit_gain", "1", "--out", str(out)], cwd=ROOT, env=ENV, text=True, capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["seen"] for row in rows] == [8, 16]
    assert all(0 <= row["direction"] <= 1 and 0 <= row["distance_digit"] <= 1 for row in rows)
    assert rows[1]["loss"] < rows[0]["loss"]     # two steps at lr 5e-3 already fit the answer's fixed text


def test_video_encoding_puts_both_frames_in_each_patch(tmp_path):
    """--video: one clip of 2 frames, whose temporal patch (2 x 3 x 16 x 16 values) holds both images, against two
    images whose patches each repeat one image twice; the direction token's position is found either way."""
    from transformers import AutoProcessor

    build_tiny_qwen3_vl(tmp_path, seed=0)
    proc = AutoProcessor.from_pretrained(tmp_path)
    pixel_bounds(proc, 64)
    rng = np.random.default_rng(0)
    img1, img2 = (rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(2))
    answer = json.dumps({"analysis": "电机应该向+方向移动3步。", "direction": "+", "distance": 3}, ensure_ascii=False)
    video, images = (encode(proc, "请分析", img1, img2, answer, v) for v in (True, False))
    assert video["vision"]["video_grid_thw"].tolist() == [[1, 4, 4]]
    assert images["vision"]["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]
    clip, pics = video["vision"]["pixel_values_videos"], images["vision"]["pixel_values"]
    assert clip.shape == (16, 1536) and pics.shape == (32, 1536)
    frames = clip.reshape(16, 3, 2, 256)           # (patch, channel, frame, pixel)
    assert not torch.equal(frames[:, :, 0], frames[:, :, 1])
    for x in (video, images):
        tok = proc.tokenizer.decode(x["input_ids"][x["dpos"]])
        assert tok == "+", tok


def test_generic_image_blur_target_matches_the_image():
    """The pretraining's target is the blur actually applied: a larger log(sigma) means less fine detail."""
    rng = np.random.default_rng(0)
    images = [generic_image(rng, 64) for _ in range(64)]
    assert all(x.shape == (64, 64) and x.dtype == np.uint8 for x, _ in images)
    log_sigma = np.array([t[0] for _, t in images])
    assert np.log(0.3) <= log_sigma.min() and log_sigma.max() <= np.log(8)
    detail = np.array([np.abs(np.diff(x.astype(float), axis=1)).mean() for x, _ in images])
    assert np.corrcoef(log_sigma, np.log(detail + 1e-3))[0, 1] < -0.5


def test_pretrain_vision_trains_the_vision_tower_only(tmp_path):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    build_tiny_qwen3_vl(tmp_path, seed=0)
    proc = AutoProcessor.from_pretrained(tmp_path)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path)
    vit, lm = (copy.deepcopy(m.state_dict()) for m in (model.model.visual, model.model.language_model))
    r2 = pretrain_vision(model, proc.image_processor, steps=3, seed=0, n_images=32, bs=8)
    assert set(r2) == {"log_sigma", "mean"} and all(v <= 1 for v in r2.values())
    assert not torch.equal(vit["patch_embed.proj.weight"], model.model.visual.state_dict()["patch_embed.proj.weight"])
    assert all(torch.equal(v, model.model.language_model.state_dict()[k]) for k, v in lm.items())
