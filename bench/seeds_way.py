"""The benchmark's baseline, the way fine-tuning scripts are commonly written without ms-swift:
transformers Trainer + PEFT with a collate function that runs the processor on every batch, and a
one-sample `generate` loop. Kept plain on purpose: this is what the pipeline is measured against.

    python -m bench.seeds_way train --model DIR --data train.jsonl --steps 12 --out a.json
    python -m bench.seeds_way infer --model DIR --data test.jsonl --samples 24 --out c.json [--batch 128]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

LM_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def hf_messages(row: dict, with_answer: bool = True) -> list[dict]:
    """An ms-swift row ('<image>' placeholders + a path list) -> transformers chat messages."""
    user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
    content = [{"type": "image", "image": path} for path in row["images"]]
    content.append({"type": "text", "text": user.replace("<image>", "")})
    messages = [{"role": "user", "content": content}]
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def answer_mask(input_ids, assistant_ids: list[int]):
    """Labels for the loss: -100 for the prompt (everything up to and including the last
    '<|im_start|>assistant\\n') and for padding (attention 0 is applied by the caller)."""
    labels = input_ids.clone()
    n = len(assistant_ids)
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        starts = [i for i in range(len(ids) - n + 1) if ids[i:i + n] == assistant_ids]
        labels[row, :starts[-1] + n] = -100
    return labels


def load(model_dir: str, device: str, quant_bits: int = 0):
    """bf16 on a GPU; `quant_bits` 4 or 8 loads the base through bitsandbytes, as seeds 001-003 do for QLoRA
    (NF4 with double quantization and bf16 compute, or LLM.int8) - the same config ms-swift builds for
    `--quant_method bnb --quant_bits N`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if quant_bits:
        quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=dtype) if quant_bits == 4
                 else BitsAndBytesConfig(load_in_8bit=True))
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa",
                                                            quantization_config=quant, device_map={"": device})
    else:
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype,
                                                            attn_implementation="sdpa").to(device)
    return model, AutoProcessor.from_pretrained(model_dir)


def peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_reserved() / 2 ** 30, 2) if device == "cuda" else None


def train(a) -> dict:
    import torch
    from PIL import Image
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = load(a.model, device, a.quant_bits)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=a.dropout,
                                             target_modules=LM_LINEAR, task_type="CAUSAL_LM"))
    rows = [json.loads(line) for line in open(a.data, encoding="utf-8")]
    assistant_ids = processor.tokenizer.encode("<|im_start|>assistant\n")

    def collate(batch):
        messages = [hf_messages(r) for r in batch]
        texts = [processor.apply_chat_template(m, tokenize=False) for m in messages]
        images = [Image.open(p).convert("RGB") for r in batch for p in r["images"]]
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = answer_mask(inputs["input_ids"], assistant_ids)
        labels[inputs["attention_mask"] == 0] = -100
        inputs["labels"] = labels
        return inputs

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.losses = [], []

        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append({"step": state.global_step, "loss": logs["loss"]})

    clock = Clock()
    args = TrainingArguments(
        output_dir=a.work, max_steps=a.steps, per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=a.accum, gradient_checkpointing=device == "cuda", learning_rate=a.lr,
        lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, bf16=device == "cuda",
        save_strategy="no", report_to=[], remove_unused_columns=False, seed=a.seed, data_seed=a.seed,
        dataloader_num_workers=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[clock]).train()
    return {"steps": clock.times, "losses": clock.losses, "global_batch": a.batch * a.accum,
            "peak_gib": peak_gib(device), "quant_bits": a.quant_bits,
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device == "cuda" else None}


def infer(a) -> dict:
    """The one-sample loop (batch 1: one sample, one generate call); with --batch N the same code batched, left-padded,
    which splits the time between the processor (CPU) and generate (GPU)."""
    import torch
    from PIL import Image

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = load(a.model, device)
    processor.tokenizer.padding_side = "left"
    rows = [json.loads(line) for line in open(a.data, encoding="utf-8")]
    rows = (rows * a.samples)[:a.samples]
    times, new_tokens, spent = [], [], {"processor_s": 0.0, "generate_s": 0.0}
    for i in range(0, len(rows), a.batch):
        start = time.perf_counter()
        chunk = rows[i:i + a.batch]
        texts = [processor.apply_chat_template(hf_messages(r, with_answer=False), tokenize=False,
                                               add_generation_prompt=True) for r in chunk]
        images = [Image.open(p).convert("RGB") for r in chunk for p in r["images"]]
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True).to(device)
        mid = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=a.max_new_tokens, do_sample=False,
                                 **({"cache_implementation": a.cache} if a.cache else {}))
        processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        if i // a.batch >= a.warmup:
            spent["processor_s"] += mid - start
            spent["generate_s"] += times[-1] - mid
        generated = out[:, inputs["input_ids"].shape[1]:]
        new_tokens += [int(n) for n in (generated != processor.tokenizer.pad_token_id).sum(dim=1)]
    return {"times": times, "new_tokens": new_tokens, "batch": a.batch, "peak_gib": peak_gib(device), **spent}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["train", "infer"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "seeds_way"), help="Trainer output_dir")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4, help="train: per-device batch; infer: samples per generate")
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--quant_bits", type=int, default=0, choices=[0, 4, 8], help="train: QLoRA base (GPU)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--max_new_tokens", type=int, default=32)
    ap.add_argument("--cache", default="", help="infer: generate's cache_implementation (static: compiled decode)")
    ap.add_argument("--warmup", type=int, default=1, help="infer: batches left out of processor_s/generate_s")
    a = ap.parse_args(argv)
    result = train(a) if a.what == "train" else infer(a)
    Path(a.out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
