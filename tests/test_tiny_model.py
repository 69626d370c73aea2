"""The tiny Qwen3-VL (and Qwen2-VL) is the real thing (loads, tokenises like Qwen, runs on two images)
and byte-reproducible, because DVC hashes the directory it is built into; its optional start (trained-scale
weights, a vision tower pretrained on generic blur) changes what it says and nothing else."""
import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stages.tiny_model.build import build_tiny_qwen2_vl, build_tiny_qwen3_vl  # noqa: E402
from stages.tiny_model.chat_templates import CHAT_TEMPLATE, QWEN2_VL_CHAT_TEMPLATE  # noqa: E402
from stages.tiny_model.vision import fan_in_init, generic_image, pretrain_vision  # noqa: E402

ANSWER = json.dumps({"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}, ensure_ascii=False)
PROMPT = "请分析这两张连续的显微镜图像，并以JSON格式输出电机应该移动的方向、步数和分析过程。"
# The chat templates Qwen ships with Qwen3-VL-Instruct and Qwen2-VL-Instruct, hashed.
QWEN3_VL_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"
QWEN2_VL_TEMPLATE_SHA256 = "a0bc6f6fc7a29a80017a433e8f03a1cc1236e838a944a2d034295a60c4f2fddb"


def build(path: Path, seed: int, builder=build_tiny_qwen3_vl) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    builder(path, seed)
    return path


def digests(model_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.iterdir())}


def run_on_two_images(model_dir: Path) -> tuple[str, str]:
    """Chat template -> processor -> forward pass and 5 generated tokens; the classes that loaded."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    assert model.dtype == torch.float32
    images = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200))]
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    inputs = processor(text=[text], images=images, return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == 151_655).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod(-1).sum()) // 4  # 2x2 patches per token
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert logits.shape == (1, inputs["input_ids"].shape[1], 151_936) and torch.isfinite(logits).all()
    assert 1 <= generated.shape[1] - inputs["input_ids"].shape[1] <= 5
    return type(processor).__name__, type(model).__name__


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("tiny") / "seed0", seed=0)


def test_directory_is_a_complete_hf_model(model_dir):
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "processor_config.json", "chat_template.jinja"} <= set(digests(model_dir))
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert config["text_config"]["vocab_size"] == 151_936
    assert (config["image_token_id"], config["video_token_id"]) == (151_655, 151_656)
    assert hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest() == QWEN3_VL_TEMPLATE_SHA256
    assert (model_dir / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE


def test_same_seed_gives_byte_identical_files(model_dir, tmp_path):
    assert digests(build(tmp_path / "again", seed=0)) == digests(model_dir)


def test_other_seed_changes_only_the_weights(model_dir, tmp_path):
    first, other = digests(model_dir), digests(build(tmp_path / "seed1", seed=1))
    assert first.keys() == other.keys()
    assert {name for name in first if first[name] != other[name]} == {"model.safetensors"}


def test_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "stale.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not empty"):
        build_tiny_qwen3_vl(tmp_path, seed=0)


def test_tokenizer_has_qwens_ids_and_round_trips_the_task(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    real_ids = {"<|endoftext|>": 151_643, "<|im_start|>": 151_644, "<|im_end|>": 151_645,
                "<|vision_start|>": 151_652, "<|vision_end|>": 151_653, "<|image_pad|>": 151_655,
                "<|video_pad|>": 151_656, "<tool_call>": 151_657, "<think>": 151_667, "</think>": 151_668}
    assert {t: tok.convert_tokens_to_ids(t) for t in real_ids} == real_ids
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    for text in (ANSWER, PROMPT, "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>"):
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        assert max(ids) < 151_936
    chinese = sorted({ch for ch in PROMPT + ANSWER if ord(ch) > 127})
    assert all(len(tok.tokenize(ch)) == 1 for ch in chinese)  # the task's characters are single tokens
    assert tok.tokenize("1234") == ["1", "2", "3", "4"]  # digits one by one, as Qwen does


def test_embedding_has_a_trained_models_logit_scale(model_dir):
    """Only tokens the tokenizer can produce have non-zero (tied) embedding rows, of std EMBED_STD, so
    an unused row never wins the argmax and a logit can outweigh the ~150k zero rows."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from stages.tiny_model.build import EMBED_STD

    weights = load_file(model_dir / "model.safetensors")
    emb = next(w for name, w in weights.items() if name.endswith("embed_tokens.weight"))
    vocab = AutoTokenizer.from_pretrained(model_dir).get_vocab()
    real = sorted(i for t, i in vocab.items() if not t.startswith("<|unused_"))
    assert 400 < len(real) < 5_000 and real[-1] == 151_668
    nonzero = emb.abs().sum(-1) > 0
    assert nonzero.nonzero().flatten().tolist() == real       # fillers and rows past the tokenizer: zero
    assert abs(emb[real].std().item() - EMBED_STD) < 0.05 * EMBED_STD
    hidden = emb.shape[1]
    assert emb[real].norm(dim=-1).mean() > 0.8 * EMBED_STD * hidden ** 0.5 > 3   # logits can reach tens


def test_processor_and_model_run_on_two_images(model_dir):
    assert run_on_two_images(model_dir) == ("Qwen3VLProcessor", "Qwen3VLForConditionalGeneration")


def test_qwen2_vl_variant_is_reproducible_and_runs(tmp_path):
    from transformers import AutoTokenizer

    first = build(tmp_path / "a", seed=0, builder=build_tiny_qwen2_vl)
    assert digests(build(tmp_path / "b", seed=0, builder=build_tiny_qwen2_vl)) == digests(first)
    assert json.loads((first / "config.json").read_text())["model_type"] == "qwen2_vl"
    assert hashlib.sha256(QWEN2_VL_CHAT_TEMPLATE.encode()).hexdigest() == QWEN2_VL_TEMPLATE_SHA256
    tok = AutoTokenizer.from_pretrained(first)
    assert tok.convert_tokens_to_ids(["<|image_pad|>", "<|file_sep|>"]) == [151_655, 151_664]
    assert len(tok) == 151_665  # Qwen2-VL's tokenizer has no <tool_response>/<think> tokens
    assert tok.decode(tok(ANSWER)["input_ids"]) == ANSWER
    assert run_on_two_images(first) == ("Qwen2VLProcessor", "Qwen2VLForConditionalGeneration")


@pytest.mark.parametrize("builder", [build_tiny_qwen3_vl, build_tiny_qwen2_vl])
def test_pretrained_start_is_reproducible_and_changes_only_what_it_says(tmp_path, builder):
    """model.builtin.init / pretrain_vision_steps: byte-identical for one seed (DVC hashes the directory); the
    language model's weights redrawn at a trained scale, the vision tower then trained; embeddings untouched."""
    from safetensors.torch import load_file

    def make(name, **kw):
        (tmp_path / name).mkdir()
        builder(tmp_path / name, 0, **kw)
        return tmp_path / name

    plain, a, b = make("plain"), make("a", init="fan_in", pretrain_vision_steps=2), make("b", init="fan_in",
                                                                                        pretrain_vision_steps=2)
    assert digests(a) == digests(b)
    w0, w1 = load_file(plain / "model.safetensors"), load_file(a / "model.safetensors")
    changed = {k for k in w0 if not (w0[k] == w1[k]).all()}
    assert any("visual" in k and "patch_embed" in k for k in changed)      # trained, not only redrawn
    q = next(k for k in w0 if "visual" not in k and k.endswith("q_proj.weight"))
    assert q in changed and 0.5 < w1[q].std().item() * w1[q].shape[1] ** 0.5 < 2   # N(0, 1/fan_in)
    assert not any("embed_tokens" in k for k in changed)


def test_the_same_model_whatever_the_number_of_threads(tmp_path):
    """A float sum split over N threads rounds by N: models/base built on one core and on two once differed, so a
    pulled workspace on another machine retrained everything. The build runs on one thread whatever is set."""
    before = torch.get_num_threads()
    built = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            (tmp_path / str(n)).mkdir()
            build_tiny_qwen3_vl(tmp_path / str(n), 0, init="fan_in", pretrain_vision_steps=30)
            built.append(digests(tmp_path / str(n)))
            assert torch.get_num_threads() == n                                  # the caller's setting is back
    finally:
        torch.set_num_threads(before)
    assert built[0] == built[1]


def test_fan_in_init_scale_and_embeddings_kept():
    net = torch.nn.ModuleDict({"embed_tokens": torch.nn.Embedding(50, 256), "proj": torch.nn.Linear(256, 512)})
    embed = net["embed_tokens"].weight.detach().clone()
    assert fan_in_init(net, 2.0, seed=0) == 1
    assert torch.equal(net["embed_tokens"].weight, embed)
    assert net["proj"].weight.std().item() == pytest.approx(2.0 / 256 ** 0.5, rel=0.02)


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
