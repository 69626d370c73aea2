"""How fast the tiny model learns to read the images: the recipe search behind issue 5.

ms-swift costs ~50 ms per sample on a CPU, so a sweep of the tiny model's recipe through `dvc exp run`
would take hours. This trains the same model (LoRA through PEFT, or every weight) on the same synthetic
pairs and chat template, in a plain loop that computes the output layer only at the answer's tokens, and
reports teacher-forced accuracy of the first decision token (the direction after "电机应该向") and of the
distance's first digit on held-out pairs. Many variants fit on one GPU at once, one process each.

Tasks (labels only; the images are always the generator's): `real` (the flagship task), and three controls
that separate reading one image from comparing two: `bright` (is image 1 brighter than 60/255), `bright2`
(is image 2 brighter than image 1), `sharp1` (is image 1 within 5 steps of focus).

    python -m bench.tiny_learning --task real --lm_gain 1 --vit_gain 1 --n_train 6400 --epochs 2 --bs 32 \\
        --device cuda --out curve.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from stages.common import PARAMS_FILE, ROOT, load_params
from stages.generate import analysis_text, label, sample
from stages.tiny_vision import fan_in_init, pretrain_vision

PREFIX = '{"analysis": "电机应该向'   # the answer up to its first decision token
LM_TARGETS = r"^model\.language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
VIT_TARGETS = r"^model\.visual\..*\.(qkv|proj|linear_fc1|linear_fc2)$"


def task_label(task: str, img1: np.ndarray, img2: np.ndarray, d: int) -> int:
    """The signed distance the answer is built from: the generator's own `d` for `real`, else +-1 for a control."""
    if task == "real":
        return d
    hit = {"bright": lambda: img1.mean() > 60, "bright2": lambda: img2.mean() > img1.mean(),
           "sharp1": lambda: abs(d) <= 5}[task]()
    return 1 if hit else -1


VISION_KEYS = {False: ("pixel_values", "image_grid_thw"), True: ("pixel_values_videos", "video_grid_thw")}


def encode(proc, prompt: str, img1, img2, answer: str, video: bool = False) -> dict:
    """One sample through the processor and chat template: ids, labels on the answer (and <|im_end|>), pixels,
    and the positions of the direction token and of the distance's first digit. `video`: the pair as one
    two-frame clip, so that each of the ViT's temporal patches (2 frames x 16 x 16 px) holds both images."""
    import torch
    from PIL import Image

    tok = proc.tokenizer
    frames = [Image.fromarray(img1).convert("RGB"), Image.fromarray(img2).convert("RGB")]
    vision = [{"type": "video"}] if video else [{"type": "image"}, {"type": "image"}]
    messages = [{"role": "user", "content": [*vision, {"type": "text", "text": prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    text = [proc.apply_chat_template(messages, tokenize=False)]
    enc = (proc(text=text, videos=[frames], do_sample_frames=False, return_tensors="pt",
                video_metadata=[{"fps": 1.0, "total_num_frames": 2, "frames_indices": [0, 1]}]) if video
           else proc(text=text, images=frames, return_tensors="pt"))
    ids, ans = enc["input_ids"][0], tok(answer, add_special_tokens=False)["input_ids"]
    start = next(s for s in range(len(ids) - len(ans), -1, -1) if ids[s:s + len(ans)].tolist() == ans)
    labels = torch.full_like(ids, -100)
    labels[start:start + len(ans) + 1] = ids[start:start + len(ans) + 1]
    dpos = start + len(tok(PREFIX, add_special_tokens=False)["input_ids"])
    direction = json.loads(answer)["direction"]
    npos = dpos + len(tok(f"{direction}方向移动", add_special_tokens=False)["input_ids"])
    mm = enc.get("mm_token_type_ids")
    pixels, grid = VISION_KEYS[video]
    return {"input_ids": ids, "labels": labels, "vision": {pixels: enc[pixels], grid: enc[grid]},
            "mm_token_type_ids": None if mm is None else mm[0],
            "dpos": dpos, "npos": npos}


def pixel_bounds(proc, size: int) -> None:
    """Keep `size` x `size` px images at their size (the processor's default bounds would upscale them); a video's
    bounds count the pixels of all its frames (here 2)."""
    proc.image_processor.size = {"shortest_edge": size * size, "longest_edge": size * size}
    proc.video_processor.size = {"shortest_edge": 2 * size * size, "longest_edge": 2 * size * size}


def make_samples(proc, params: dict, size: int, n: int, seed: int, task: str, video: bool = False) -> list[dict]:
    cfg = {**params["synth"], "image_size": size}
    rng, out = np.random.default_rng(seed), []
    for _ in range(n):
        img1, img2, d = sample(rng, cfg)
        direction, distance = label(task_label(task, img1, img2, d))
        answer = json.dumps({"analysis": analysis_text(direction, distance), "direction": direction,
                             "distance": distance}, ensure_ascii=False)
        out.append(encode(proc, params["data"]["prompt"], img1, img2, answer, video))
    return out


def collate(items: list[dict], pad_id: int, device: str) -> tuple[dict, "torch.Tensor"]:
    import torch

    n, length = len(items), max(len(x["input_ids"]) for x in items)
    ids, labels = torch.full((n, length), pad_id), torch.full((n, length), -100)
    att, mm = torch.zeros((n, length), dtype=torch.long), torch.zeros((n, length), dtype=torch.long)
    for i, x in enumerate(items):
        k = len(x["input_ids"])
        ids[i, :k], labels[i, :k], att[i, :k] = x["input_ids"], x["labels"], 1
        if x["mm_token_type_ids"] is not None:
            mm[i, :k] = x["mm_token_type_ids"]
    kw = {"input_ids": ids, "attention_mask": att, **{k: torch.cat([x["vision"][k] for x in items])
                                                        for k in items[0]["vision"]}}
    if items[0]["mm_token_type_ids"] is not None:
        kw["mm_token_type_ids"] = mm
    return {k: v.to(device) for k, v in kw.items()}, labels.to(device)


def encode_split(proc, jsonl: Path, prompt: str) -> list[dict]:
    """A split the build stage wrote (`data/dataset/test.jsonl`), encoded as `make_samples` encodes its pairs; image
    paths are relative to the directory holding `data/`."""
    from PIL import Image

    base, out = jsonl.parent.parent.parent, []
    with open(jsonl, encoding="utf-8") as f:
        for row in map(json.loads, f):
            img1, img2 = (np.array(Image.open(base / path)) for path in row["images"])
            out.append(encode(proc, prompt, img1, img2, row["messages"][-1]["content"]))
    return out


def teacher_forced(model, items: list[dict], pad_id: int, device: str) -> tuple[float, float]:
    """Share of `items` whose direction token, and whose distance's first digit, is the model's top choice given
    the reference answer before it. The answer's text before the direction is fixed, so for the direction this is
    also greedy decoding's answer."""
    import torch

    hits = np.zeros(2)
    with torch.no_grad():
        for i in range(0, len(items), 32):
            batch = items[i:i + 32]
            kw, _ = collate(batch, pad_id, device)
            h = model.model(**kw).last_hidden_state
            for j, x in enumerate(batch):
                for k, pos in enumerate((x["dpos"], x["npos"])):
                    hits[k] += model.lm_head(h[j, pos - 1]).argmax().item() == x["input_ids"][pos].item()
    return tuple(hits / len(items))


def main(argv: list[str] | None = None) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models/base")
    ap.add_argument("--task", default="real", choices=["real", "bright", "bright2", "sharp1"])
    ap.add_argument("--size", type=int, default=64, help="image side, px (64: 4 tokens per image)")
    ap.add_argument("--n_train", type=int, default=2000)
    ap.add_argument("--n_test", type=int, default=300)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 4 x rank)")
    ap.add_argument("--vit", action="store_true", help="LoRA on the vision tower too")
    ap.add_argument("--full", action="store_true", help="train every weight instead of LoRA")
    ap.add_argument("--freeze_embed", action="store_true", help="with --full: keep the (tied) embedding and output "
                    "layer as built, as `train.freeze_parameters: [model.language_model.embed_tokens]` does")
    ap.add_argument("--pretrain_vit", type=int, default=0, help="steps of generic blur/brightness pretraining "
                    "of the vision tower before the fine-tune (pretrain_vision); 0 = none")
    ap.add_argument("--video", action="store_true", help="the pair as one two-frame video instead of two images")
    ap.add_argument("--lm_gain", type=float, default=0, help="fan_in_init of the language model; 0 = as built")
    ap.add_argument("--vit_gain", type=float, default=0, help="fan_in_init of the vision tower; 0 = as built")
    ap.add_argument("--eval_every", type=int, default=100, help="optimizer steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="append one JSON line per evaluation")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    params = load_params(PARAMS_FILE)
    proc = AutoProcessor.from_pretrained(a.model)
    pixel_bounds(proc, a.size)
    t0 = time.perf_counter()
    train = make_samples(proc, params, a.size, a.n_train, 1000 + a.seed, a.task, a.video)
    test = make_samples(proc, params, a.size, a.n_test, 99, a.task, a.video)
    print(f"data: {a.n_train} + {a.n_test} samples in {time.perf_counter() - t0:.0f} s", flush=True)

    model = Qwen3VLForConditionalGeneration.from_pretrained(a.model, dtype=torch.float32)
    for module, gain, seed in ((model.model.language_model, a.lm_gain, 321), (model.model.visual, a.vit_gain, 322)):
        if gain:
            fan_in_init(module, gain, seed)
    pretrained = (pretrain_vision(model, proc.image_processor, a.pretrain_vit, a.seed, a.device, a.size)
                  if a.pretrain_vit else None)
    if a.full:
        model.requires_grad_(True)
        model.model.language_model.embed_tokens.requires_grad_(not a.freeze_embed)
    else:
        targets = f"({LM_TARGETS})|({VIT_TARGETS})" if a.vit else LM_TARGETS
        model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=4 * a.rank, lora_dropout=0.0,
                                                 target_modules=targets))
    model.to(a.device)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    pad = proc.tokenizer.pad_token_id or 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=0.1)
    steps = int(a.epochs * a.n_train / a.bs)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * s / steps)))

    def evaluate() -> tuple[float, float]:
        model.eval()
        result = teacher_forced(inner, test, pad, a.device)
        model.train()
        return result

    order = np.concatenate([np.random.default_rng(a.seed).permutation(a.n_train)
                            for _ in range(int(np.ceil(a.epochs)))])
    t0 = time.perf_counter()
    for step in range(steps):
        kw, labels = collate([train[k] for k in order[step * a.bs:(step + 1) * a.bs]], pad, a.device)
        h = inner.model(**kw).last_hidden_state[:, :-1]
        mask = labels[:, 1:] != -100       # the output layer only where the loss is taken
        loss = torch.nn.functional.cross_entropy(inner.lm_head(h[mask]), labels[:, 1:][mask])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if (step + 1) % a.eval_every == 0 or step == steps - 1:
            direction, digit = evaluate()
            row = {"task": a.task, "seen": (step + 1) * a.bs, "train_s": round(time.perf_counter() - t0, 1),
                   "loss": round(loss.item(), 4), "direction": direction, "distance_digit": digit,
                   "pretrained_r2": pretrained,
                   "args": {k: str(v) for k, v in vars(a).items()}}
            print(f"seen {row['seen']}: loss {row['loss']:.3f}, direction {direction:.3f}, first digit {digit:.3f}",
                  flush=True)
            if a.out:
                with open(a.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
