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

import json
import logging
from pathlib import Path

from stages.tiny_vision import fan_in_init, pretrain_vision

log = logging.getLogger(__name__)

# 151,936 = Qwen's embedding rows; kept so the image/video token ids that ms-swift's Qwen-VL
# templates hard-code (151655, 151656) index real rows.
VOCAB_SIZE = 151_936
# Qwen's byte-level BPE fills ids 0..151,642; the added tokens below start right after it.
FIRST_SPECIAL_ID = 151_643
# Qwen's added tokens in id order (151643..151668). Only the first 14 are "special" (never split,
# dropped by skip_special_tokens); from <tool_call> on they are plain added tokens, so tool calls
# and <think> blocks survive decoding, as with the real tokenizers.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
# Qwen2-VL's tokenizer predates the last four (its added tokens end at <|file_sep|> = 151664).
QWEN2_ADDED_TOKENS = ADDED_TOKENS[:8]
# At most this many BPE tokens; the corpus below yields a few hundred merges, enough that every
# character of the task's prompts and answers is one token, trained in well under a second.
BPE_VOCAB_SIZE = 4096
# Std of the tied embedding's real rows (fillers are zero, see _shape_embeddings): logits of a
# 64-wide model then reach tens, as a trained model's do, instead of +-0.2 at the usual 0.02.
EMBED_STD = 0.5


def _corpus() -> list[str]:
    """Text shaped like what the model will see (chat roles, the task's Chinese prompts, JSON
    answers, English), so its words and characters become single tokens and sequences stay short."""
    prompt = "请分析这两张连续的显微镜图像，并以JSON格式输出电机应该移动的方向、步数和分析过程。"
    extra = ["图像清晰，焦点准确，无需移动。", "图像模糊，需要调整对焦。", "显微镜载物台的位置发生了变化。",
             "system\nYou are a helpful assistant.", "user\nPicture 1: Picture 2: Video 1:", "assistant\n",
             "The motor should move 7 steps in the + direction; the image is out of focus.",
             '{"name": "move", "arguments": {"steps": 12}}', "true false null 0123456789 []{}:,.-+"]
    answers = [json.dumps({"analysis": f"电机应该向{d}方向移动{n}步。", "direction": d, "distance": n},
                          ensure_ascii=False) for d in "+-" for n in range(100)]
    # Repetition matters: BpeTrainer only merges pairs seen at least min_frequency times.
    return [prompt, *extra] * 20 + answers


def _train_bpe(corpus: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE trained under Qwen2Tokenizer's own pre-tokenisation (NFC, Qwen's split
    regex, digits one by one), which transformers re-imposes on load, so the merges stay valid.
    Training also isolates each CJK character: the task's few, repeated sentences would otherwise
    merge into whole-sentence tokens (even swallowing the "-"/"+" direction); this way every
    character is one token and any Chinese text tokenises the same way."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"\p{Han}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) for m in model["merges"]]


def _qwen_vocab(trained: dict[str, int], added: list[str]) -> dict[str, int]:
    """The trained vocab padded with fillers up to Qwen's layout, so every added token lands on its
    real id (putting them in the base vocab, not adding them later, pins them). No merge produces a
    filler, so text never encodes to one; an untrained model may still emit one, which then decodes
    as the literal text `<|unused_N|>`."""
    vocab = dict(trained)
    vocab.update({f"<|unused_{i}|>": i for i in range(len(trained), FIRST_SPECIAL_ID)})
    vocab.update({t: FIRST_SPECIAL_ID + i for i, t in enumerate(SPECIAL_TOKENS + added)})
    return vocab


def build_tokenizer(added: list[str] = ADDED_TOKENS, model_max_length: int = 262_144):
    """A Qwen2Tokenizer with Qwen's special tokens, ids and settings (eos=<|im_end|>, no bos);
    Qwen3-VL by default, Qwen2-VL with its shorter added-token list and 32k context."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    trained, merges = _train_bpe(_corpus(), BPE_VOCAB_SIZE)
    tokenizer = Qwen2Tokenizer(
        vocab=_qwen_vocab(trained, added), merges=merges, unk_token=None, bos_token=None,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=model_max_length, errors="replace", split_special_tokens=False,
        clean_up_tokenization_spaces=False)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    return tokenizer


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
    model.generation_config = GenerationConfig(bos_token_id=151_643, pad_token_id=151_643,
                                               eos_token_id=[151_645, 151_643], **generation)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny %s (seed %d): %s parameters -> %s", config.model_type, seed, f"{n_params:,}", out_dir)


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
    released sizes (bench/shapes.py) it is Qwen3-VL-2B's exact shape, randomly initialised."""
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


# Qwen2-VL-Instruct's chat template, byte for byte as Qwen ships it (one line, default system prompt).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")

# Qwen3-VL-Instruct's chat template, byte for byte as Qwen ships it (sha256 3636d0f0...a489e4):
# `AutoProcessor(...).apply_chat_template` then renders prompts exactly as for the real model.
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
