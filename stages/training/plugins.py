"""Which ms-swift plugins (`--external_plugins`, files in this repository) a `swift sft` run takes."""
from __future__ import annotations

from stages.speed import plugin_files

# The vision rotary plugin (stages/speed/vision_rope.py) is for inference only: in training (batch 48, frozen
# tower) it gave 58.3 samples/s against 58.5 without (H100, runs 16 and 15).
SPEED = plugin_files("packed_vision", "batch_copy")


def plugin_argv(p: dict) -> list[str]:
    """Every run: the vision tower's attention in one call per image size (stages/speed/packed_vision.py), the
    same result as transformers' call per image, and each batch's pixels copied to the GPU in the tower's dtype
    without the host waiting (stages/speed/batch_copy.py). The builtin model adds its loss over the output rows its
    tokenizer uses (stages/training/used_rows.py): the same loss and gradients as the full 151,936-row head, in
    a fifth of the step time on a CPU; only under LoRA with the output layer untouched (its zero rows stay
    zero) and without Liger (which never forms the logits)."""
    lora, t = p["lora"], p["train"]
    touched = any(name in module for module in lora["target_modules"] + lora["modules_to_save"]
                  for name in ("lm_head", "embed_tokens"))
    if p["model"]["source"] != "builtin" or t["tuner_type"] != "lora" or touched or t["use_liger_kernel"]:
        return ["--external_plugins", *SPEED]
    return ["--external_plugins", *SPEED, "stages/training/used_rows.py", "--loss_type", "used_rows",
            "--callbacks", "used_rows"]
