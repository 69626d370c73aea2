"""Model shapes the benchmark builds, and the FLOP count its utilisation figures use.

`2b` is Qwen3-VL-2B-Instruct's published config (language model 28 x 2048, 16 heads, 8 KV heads, head dim
128, MLP 6144, vocabulary 151,936, tied embeddings; ViT 24 x 1024, 16 heads, MLP 4096, patch 16, merge 2,
deepstack at blocks 5/11/17), randomly initialised: speed does not depend on the weights' values.
`tiny` is the pipeline's embedded default, for the CPU smoke run.
"""
from __future__ import annotations

SHAPES = {
    "2b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
               intermediate_size=6144, vision_depth=24, vision_hidden_size=1024, vision_num_heads=16,
               vision_intermediate_size=4096, deepstack_visual_indexes=[5, 11, 17]),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vision_depth=2, vision_hidden_size=64, vision_num_heads=4,
                 vision_intermediate_size=128, deepstack_visual_indexes=[0, 1]),
}
VOCAB = 151_936
PATCH, MERGE = 16, 2


def lm_linear_params(s: dict) -> int:
    """Weights of the language model's linear layers (attention q/k/v/o and the gated MLP), per model."""
    h, head = s["hidden_size"], s["hidden_size"] // s["num_attention_heads"]
    q, kv = s["num_attention_heads"] * head, s["num_key_value_heads"] * head
    return s["num_hidden_layers"] * (h * q + 2 * h * kv + q * h + 3 * h * s["intermediate_size"])


def vit_linear_params(s: dict) -> int:
    """Weights the ViT applies to every patch: blocks (qkv, proj, MLP), the patch embedding (16x16x3 pixels
    x 2 frames), and the merger and deepstack mergers applied to every group of merge^2 patches, per patch."""
    v, out, m2 = s["vision_hidden_size"], s["hidden_size"], MERGE * MERGE
    blocks = s["vision_depth"] * (4 * v * v + 2 * v * s["vision_intermediate_size"])
    mergers = (1 + len(s["deepstack_visual_indexes"])) * (m2 * v * m2 * v + m2 * v * out) // m2
    return blocks + 3 * PATCH * PATCH * 2 * v + mergers


def vit_forward_flops(s: dict, patches_per_image: int, images: int) -> float:
    """2 FLOP per weight per patch, plus full (bidirectional) attention within each image."""
    attention = 4 * s["vision_depth"] * patches_per_image ** 2 * s["vision_hidden_size"]
    return images * (2 * vit_linear_params(s) * patches_per_image + attention)


def lm_forward_flops(s: dict, tokens: int, logits: int) -> float:
    """2 FLOP per weight per token, causal attention (QK^T and AV over half the square), and the output
    layer (vocabulary x hidden) for `logits` positions."""
    d = s["num_attention_heads"] * (s["hidden_size"] // s["num_attention_heads"])
    attention = 2 * s["num_hidden_layers"] * tokens ** 2 * d
    return 2 * lm_linear_params(s) * tokens + attention + 2 * VOCAB * s["hidden_size"] * logits


def train_flops(s: dict, tokens: int, patches_per_image: int, images: int) -> float:
    """One training sample with LoRA on the language model and a frozen ViT: language model forward +
    backward, where the backward of a frozen weight computes only the input gradient (as much work as its
    forward; LoRA's own weight gradients are negligible), so 2x the forward; the ViT forward once.
    Gradient checkpointing's recomputation is not counted (model FLOPs, not hardware FLOPs)."""
    return 2 * lm_forward_flops(s, tokens, tokens) + vit_forward_flops(s, patches_per_image, images)


def infer_flops(s: dict, prompt_tokens: int, new_tokens: float, patches_per_image: int, images: int) -> float:
    """One inference sample: ViT forward, the prompt's forward (one output row, for the first token), then
    one forward per further generated token; attention to the cache is counted as in one causal pass."""
    return (vit_forward_flops(s, patches_per_image, images)
            + lm_forward_flops(s, prompt_tokens + int(new_tokens), int(new_tokens)))


def patches(image_size: int) -> int:
    """ViT patches of one square image (each temporal pair of frames is one patch: images are repeated)."""
    return (image_size // PATCH) ** 2
