"""The speed plugins (stages/speed/): the packed vision attention gives transformers' per-image result (the
predictions with and without both plugins are compared on a trained model in test_pipeline_e2e.py)."""
import torch
import torch.nn.functional as F

from stages.speed.packed_vision import equal_runs, packed_sdpa
from stages.speed.prefetch import batches
from stages.tiny_model.build import build_tiny_qwen3_vl

# 5 + 3 images of 8x8 patches around 2 of 4x6: three runs, the middle one of another length
GRID = [[1, 8, 8]] * 5 + [[1, 4, 6]] * 2 + [[1, 8, 8]] * 3


def test_equal_runs_groups_consecutive_equal_lengths_only():
    assert equal_runs([0, 4, 8, 12, 15, 18, 22], heads=1) == [(0, 12, 4), (12, 18, 3), (18, 22, 4)]
    assert equal_runs([0, 4, 4, 8], heads=1) == [(0, 8, 4)]          # an empty sequence is skipped
    assert equal_runs([0], heads=1) == [] and equal_runs([0, 5], heads=2) == [(0, 5, 5)]


def test_equal_runs_caps_the_scores_of_one_call():
    # heads * L**2 = 2 * 16 = 32 scores a sequence: 64 allow two a call, and one when fewer than one fits
    assert equal_runs([0, 4, 8, 12, 16, 20], heads=2, max_scores=64) == [(0, 8, 4), (8, 16, 4), (16, 20, 4)]
    assert equal_runs([0, 4, 8], heads=2, max_scores=10) == [(0, 4, 4), (4, 8, 4)]


def test_packed_sdpa_is_sdpa_within_each_sequence():
    torch.manual_seed(0)
    lengths = [5, 5, 5, 3, 7, 7, 5]
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    q, k, v = (torch.randn(1, 4, sum(lengths), 8, dtype=torch.float64) for _ in range(3))
    out, _ = packed_sdpa(None, q, k, v, scaling=0.3, cu_seq_lens_q=bounds)
    expected = torch.cat([F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale=0.3)
                          for a, b in zip(bounds.tolist(), bounds[1:].tolist())], dim=2).transpose(1, 2)
    assert out.shape == (1, sum(lengths), 4, 8)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_batches_slices_as_ms_swift_does():
    assert batches(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert batches(list(range(3)), 0) == [[0, 1, 2]] and batches([], 4) == []


def test_the_vision_tower_gives_the_same_features_with_the_plugin(tmp_path, monkeypatch):
    """The tiny Qwen3-VL's vision tower over images of two sizes: bitwise what transformers' SDPA per image gives."""
    from transformers import Qwen3VLForConditionalGeneration
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionAttention

    build_tiny_qwen3_vl(tmp_path, 42)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    grid = torch.tensor(GRID)
    torch.manual_seed(0)
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 16 * 16)

    def features():
        with torch.no_grad():
            out = model.model.visual(pixels, grid_thw=grid)
        return [out.pooler_output, *out.deepstack_features]

    calls = []
    original = Qwen3VLVisionAttention.forward
    assert original._packed, "importing stages.speed.packed_vision wraps the vision attention"
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(a[0].shape[0]) or sdpa(*a, **k))
    packed = features()
    assert calls == [5, 2, 3] * 2                     # one call per run and layer (vision_depth 2), not per image
    monkeypatch.setattr(Qwen3VLVisionAttention, "forward", original.__wrapped__)
    calls.clear()
    per_image = features()
    assert calls == [1] * len(GRID) * 2                # transformers' own path: a call per image and layer
    for a, b in zip(packed, per_image, strict=True):
        assert torch.equal(a, b)


def test_on_device_casts_only_the_pixels_and_only_floating_tensors():
    """The prefetched batch is what ms-swift's to_device gives, except the pixels in the vision tower's dtype (the
    tower casts them first thing, so the numbers it computes with are the same)."""
    from stages.speed.prefetch import on_device

    batch = {"input_ids": torch.tensor([[1, 2]]), "pixel_values": torch.tensor([[0.1, 0.2]]),
             "image_grid_thw": torch.tensor([[1, 2, 2]]), "pixel_values_videos": None, "nested": [torch.ones(1)]}
    out = on_device(batch, torch.device("cpu"), torch.bfloat16)
    assert out["pixel_values"].dtype == torch.bfloat16
    assert torch.equal(out["pixel_values"], batch["pixel_values"].to(torch.bfloat16))
    assert out["input_ids"].dtype == torch.int64 and out["image_grid_thw"].dtype == torch.int64
    assert out["nested"][0].dtype == torch.float32 and out["pixel_values_videos"] is None
    assert on_device(batch, torch.device("cpu"), None)["pixel_values"].dtype == torch.float32


def test_pixel_dtype_is_the_patch_embedding_s(tmp_path):
    from transformers import Qwen3VLForConditionalGeneration

    from stages.speed.prefetch import pixel_dtype

    build_tiny_qwen3_vl(tmp_path, 42)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert pixel_dtype(model) == torch.bfloat16 and pixel_dtype(torch.nn.Linear(2, 2)) is None
