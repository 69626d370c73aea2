"""The tiny model's tokenizer: a byte-level BPE trained in a second on the task's own text, laid out as Qwen's
(special and added tokens at Qwen's ids, so ms-swift's templates find them where they expect)."""
from __future__ import annotations

import json

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
