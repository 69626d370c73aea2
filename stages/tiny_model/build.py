"""Tiny, randomly initialised Qwen3-VL (and Qwen2-VL) models that transformers and ms-swift
load as the real thing.

Why they exist: the pipeline (swift sft -> swift infer -> score) has to run end to end on a CPU-only
machine that cannot reach a model hub. A ~10 M-parameter model with Qwen's real architecture,
vocabulary layout, special-token ids and chat template goes through the same code paths as
Qwen/Qwen3-VL-2B-Instruct, yet builds in a second and trains in seconds on a CPU.

Why they are byte-deterministic: DVC hashes the output directory, so two builds from one seed must
write identical files, or every `dvc repro` would re-run training for nothing.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stages.tiny_model.chat_templates import CHAT_TEMPLATE, QWEN2_VL_CHAT_TEMPLATE
from stages.tiny_model.tokenizer import QWEN2_ADDED_TOKENS, build_tokenizer
from stages.tiny_model.vision import fan_in_init, pretrain_vision

log = logging.getLogger(__name__)

# 151,936 = Qwen's embedding rows; kept so the image/video token ids that ms-swift's Qwen-VL
# templates hard-code (151655, 151656) index real rows.
VOCAB_SIZE = 151_936
# Std of the tied embedding's real rows (fillers are zero, see _shape_embeddings): logits of a
# 64-wide model then reach tens, as a trained model's do, instead of +-0.2 at the usual 0.02.
EMBED_STD = 0.5


def _mrope_section(head_dim: int, ratio: tuple[int, int, int]) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) in the released model's ratio
    (Qwen3-VL 24:20:20, Qwen2-VL 16:24:24); time takes the rounding remainder."""
    half = head_dim // 2
    hw = half * ratio[1] // sum(ratio)
    return [half - 2 * hw, hw, hw]


def _text_config(hidden_size: int, num_hidden_layers: int, num_attention_heads: int, num_key_value_heads: int,
                 intermediate_size: int, **released) -> dict:
    """The language model's sizes; everything else (rope, context, ...) comes from the release."""
    return dict(vocab_size=VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=intermediate_size,
                num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                num_key_value_heads=num_key_value_heads, bos_token_id=151_643, eos_token_id=151_645,
                tie_word_embeddings=True, dtype="float32", **released)


def _shape_embeddings(embedding, vocab: dict[str, int], std: float, generator) -> None:
    """Give the (tied) embedding the logit scale of a trained model: rows of tokens the tokenizer can
    produce get N(0, std); the never-used filler rows and the padding rows past the tokenizer
    (151,669..151,935) get zeros.

    With the usual N(0, 0.02) rows and a 64-wide model every logit is within about +-0.2, so the
    softmax over 151,936 rows is almost flat (the loss stays near ln(151,936) = 11.9) and the ~150k
    unused rows win the argmax as often as the real ones (the fine-tuned model wrote
    `<|unused_85342|>` for a digit); LoRA cannot rescale the frozen embedding. Zero rows score exactly
    0, as the unused rows of a pretrained model never win, and real rows of norm ~ std * sqrt(hidden)
    let a logit reach tens, enough to outweigh 150k zeros."""
    import torch

    real = torch.zeros(embedding.shape[0], dtype=torch.bool, device=embedding.device)
    real[[i for t, i in vocab.items() if not t.startswith("<|unused_")]] = True
    with torch.no_grad():
        embedding.copy_(torch.empty_like(embedding).normal_(0.0, std, generator=generator) * real[:, None])


def _save(out_dir: Path, seed: int, model_cls, config, processor, generation: dict, embed_std: float,
          dtype: str = "float32", device: str = "cpu", init: str = "qwen", pretrain_vision_steps: int = 0) -> None:
    """Seeded init and save: weights first (float32 for CPU training; the benchmark's 2 B-parameter
    shape is initialised on the GPU and saved in bfloat16), then tokenizer/processor."""
    import torch
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    if any(out_dir.iterdir()):  # leftovers would silently become part of what DVC hashes
        raise ValueError(f"{out_dir} is not empty")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a float sum split over N threads rounds by N: models/base differed on 1 and 2 cores
    try:
        model = _init(model_cls, config, processor, seed, embed_std, dtype, device, init, pretrain_vision_steps)
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(bos_token_id=151_643, pad_token_id=151_643,
                                               eos_token_id=[151_645, 151_643], **generation)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny %s (seed %d): %s parameters -> %s", config.model_type, seed, f"{n_params:,}", out_dir)


def _init(model_cls, config, processor, seed: int, embed_std: float, dtype: str, device: str, init: str,
          pretrain_vision_steps: int):
    """The seeded weights: initialised, embeddings shaped, optionally re-scaled and the vision tower pretrained."""
    import torch

    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(config).to(getattr(torch, dtype)).eval()
    for c in (model.config, model.config.text_config):
        c.dtype = dtype
    _shape_embeddings(model.get_input_embeddings().weight, processor.tokenizer.get_vocab(), embed_std,
                      torch.Generator(device).manual_seed(seed))
    if init == "fan_in":
        fan_in_init(model.model.language_model, 1.0, seed + 1)
        fan_in_init(model.model.visual, 1.0, seed + 2)
    if pretrain_vision_steps:
        pretrain_vision(model, processor.image_processor, pretrain_vision_steps, seed, device)
    return model


def build_tiny_qwen3_vl(out_dir: Path, seed: int, *, hidden_size: int = 64, num_hidden_layers: int = 2,
                        num_attention_heads: int = 4, num_key_value_heads: int = 2, intermediate_size: int = 128,
                        vision_depth: int = 2, vision_hidden_size: int = 64, vision_num_heads: int = 4,
                        vision_intermediate_size: int = 128, deepstack_visual_indexes: list[int] | None = None,
                        embed_std: float = EMBED_STD, dtype: str = "float32", device: str = "cpu", init: str = "qwen",
                        pretrain_vision_steps: int = 0) -> None:
    """Write a complete Qwen3-VL model directory (float32 weights, tokenizer, processor, chat
    template) into the existing, empty `out_dir`; same seed -> byte-identical files.

    It is Qwen3-VL-2B-Instruct with every size shrunk; what code keys on is kept: token ids,
    patch 16 / merge 2 / temporal 2, interleaved M-RoPE, deepstack, tied embeddings. With the
    released sizes it is Qwen3-VL-2B's exact shape, randomly initialised."""
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    head_dim = hidden_size // num_attention_heads
    text = _text_config(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
                        intermediate_size, head_dim=head_dim, max_position_embeddings=262_144,
                        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_interleaved": True,
                                         "mrope_section": _mrope_section(head_dim, (24, 20, 20))})
    # Deepstack feeds ViT block i's features into LLM layer i, so it can use at most as many
    # blocks as there are LLM layers (the released model taps 3 of 24 blocks).
    vision = dict(depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=vision_intermediate_size,
                  num_heads=vision_num_heads, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=hidden_size, num_position_embeddings=2304,
                  deepstack_visual_indexes=(list(range(min(vision_depth, num_hidden_layers)))
                                            if deepstack_visual_indexes is None else deepstack_visual_indexes))
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, dtype="float32")
    # The released processor settings: pixel bounds per image / video frame, 0.5 mean and std.
    shared = dict(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 65_536, "longest_edge": 16_777_216}, **shared),
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": 4_096, "longest_edge": 25_165_824}, **shared),
        tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE)
    # Qwen3-VL-Instruct's released sampling defaults; the pipeline overrides them (temperature 0).
    _save(out_dir, seed, Qwen3VLForConditionalGeneration, config, processor,
          dict(do_sample=True, top_k=20, top_p=0.8, temperature=0.7, repetition_penalty=1.0), embed_std, dtype, device,
          init, pretrain_vision_steps)


def build_tiny_qwen2_vl(out_dir: Path, seed: int, *, hidden_size: int = 64, num_hidden_layers: int = 2,
                        num_attention_heads: int = 4, num_key_value_heads: int = 2, intermediate_size: int = 128,
                        vision_depth: int = 2, vision_hidden_size: int = 64, vision_num_heads: int = 4,
                        vision_intermediate_size: int = 128, embed_std: float = EMBED_STD, init: str = "qwen",
                        pretrain_vision_steps: int = 0) -> None:
    """The same for Qwen2-VL (Qwen2-VL-2B-Instruct shrunk: patch 14, 1-D-sectioned M-RoPE, CLIP
    normalisation, no deepstack); ms-swift needs `--model_type qwen2_vl --template qwen2_vl`."""
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    head_dim = hidden_size // num_attention_heads
    text = _text_config(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
                        intermediate_size, max_position_embeddings=32_768, rms_norm_eps=1e-6,
                        max_window_layers=num_hidden_layers,
                        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0,
                                         "mrope_section": _mrope_section(head_dim, (16, 24, 24))})
    vision = dict(depth=vision_depth, embed_dim=vision_hidden_size, num_heads=vision_num_heads,
                  mlp_ratio=vision_intermediate_size // vision_hidden_size, hidden_size=hidden_size,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, dtype="float32")
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 3_136, "longest_edge": 12_845_056}),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=build_tokenizer(QWEN2_ADDED_TOKENS, model_max_length=32_768),
        chat_template=QWEN2_VL_CHAT_TEMPLATE)
    # Qwen2-VL-Instruct's released defaults: sampling in name only (top_k 1), i.e. greedy.
    _save(out_dir, seed, Qwen2VLForConditionalGeneration, config, processor,
          dict(do_sample=True, top_k=1, top_p=0.001, temperature=0.01, repetition_penalty=1.0), embed_std,
          init=init, pretrain_vision_steps=pretrain_vision_steps)
