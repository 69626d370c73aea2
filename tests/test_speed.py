"""The speed plugins (stages/speed/) against transformers' and ms-swift's own paths (the predictions with and
without all of them are compared on a trained model in test_pipeline_e2e.py)."""
import importlib
import sys

import pytest
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
    """The tiny Qwen3-VL's vision tower over images of two sizes: what transformers' SDPA per image gives.

    In float64, to within 1e-12, not bitwise: one SDPA call over a run of images and one call per image need not
    round alike on every CPU (in float32 one CPU differed in the last bits)."""
    from transformers import Qwen3VLForConditionalGeneration
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionAttention

    build_tiny_qwen3_vl(tmp_path, 42)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa",
                                                            dtype=torch.float64).eval()
    grid = torch.tensor(GRID)
    torch.manual_seed(0)
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 16 * 16, dtype=torch.float64)

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
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


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


def test_append_is_concatenation_and_reuses_its_room():
    from stages.speed.kv_cache import append

    torch.manual_seed(0)
    prompt, steps = torch.randn(3, 2, 5, 4), [torch.randn(3, 2, 1, 4) for _ in range(4)]
    cached, buffer = append(torch.tensor([]), None, prompt, room=2)
    assert torch.equal(cached, prompt) and buffer.shape == (3, 2, 7, 4)
    expected, first = prompt, buffer
    for step in steps:
        cached, buffer = append(cached, buffer, step, room=2)
        expected = torch.cat([expected, step], dim=-2)
        assert torch.equal(cached, expected)
    assert buffer.shape[-2] == 8 + 2 and first.shape[-2] == 7   # the 8th position outgrew the room: made again
    cropped = cached[..., :6, :]                                   # a crop is a prefix: written over in place
    again, same = append(cropped, buffer, steps[0], room=2)
    assert same is buffer and torch.equal(again, torch.cat([cropped, steps[0]], dim=-2))
    selected = cached[[2, 0]]                                      # a beam reorder is a new tensor: a new buffer
    moved, fresh = append(selected, buffer, steps[1][:2], room=2)
    assert fresh is not buffer and torch.equal(moved, torch.cat([selected, steps[1][:2]], dim=-2))


def test_generate_gives_the_same_tokens_with_the_kv_room(tmp_path, monkeypatch):
    """The tiny Qwen3-VL's greedy generation over a padded batch, with the layer writing into its room (forced on,
    as on a GPU): the same tokens and the same final logits as transformers' concatenation."""
    from transformers import Qwen3VLForConditionalGeneration
    from transformers.cache_utils import DynamicLayer

    from stages.speed import kv_cache

    build_tiny_qwen3_vl(tmp_path, 42)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    ids = torch.randint(10, 200, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0                                                # left padding, as ms-swift batches prompts

    def run():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=40, do_sample=False,
                                 min_new_tokens=40, output_logits=True, return_dict_in_generate=True)
        return out.sequences, out.logits[-1], out.past_key_values.layers[0]

    assert DynamicLayer.update is kv_cache.update
    plain = run()
    monkeypatch.setattr(kv_cache, "takes_room", lambda layer, keys: type(layer) is DynamicLayer)
    roomy = run()
    # 9 prompt positions + ROOM, until position 9 + ROOM + 1 needs one more buffer: 48 cached positions in all
    assert not hasattr(plain[2], "_key_room") and roomy[2]._key_room.shape[-2] == 9 + kv_cache.ROOM + 1 + kv_cache.ROOM
    assert roomy[2].keys.shape[-2] == plain[2].keys.shape[-2] == 9 + 40 - 1
    assert torch.equal(plain[0], roomy[0])
    torch.testing.assert_close(plain[1], roomy[1], rtol=1e-5, atol=1e-5)


def test_stopped_is_ms_swift_s_test():
    from stages.speed.stop_words import stopped

    assert stopped('{"a": 1}<|im_end|>', [1, 2], ["<|im_end|>"]) and not stopped("abc", [1, 2], ["<|im_end|>"])
    assert stopped("", [5, 1, 2], [[1, 2]]) and not stopped("", [1, 2, 5], [[1, 2]])
    assert not stopped("", [2], [[1, 2]]) and not stopped("x", [1], [[]])   # a row shorter than the word; []


def test_the_stop_words_stop_the_same_rows_at_the_same_step(tmp_path):
    """ms-swift's criteria and the plugin's, step by step over one growing batch: a str stop word, a two-token
    list and a list longer than the 20 tokens ms-swift decodes; rows stop at different steps, two never do."""
    from swift.template.utils import StopWordsCriteria
    from transformers import AutoTokenizer

    from stages.speed import stop_words

    build_tiny_qwen3_vl(tmp_path, 42)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    end, brace, newline = 151_645, 92, 198
    words = ["<|im_end|>", [brace, newline], [7] * 25]
    torch.manual_seed(0)
    ids = torch.randint(10, 60, (5, 12))                # random text tokens: none of the stop words
    plan = {(0, 3): [end], (1, 6): [brace], (1, 7): [newline], (3, 2): [brace], (3, 4): [newline]}
    own, plugin, first_stop = StopWordsCriteria(tokenizer, words), StopWordsCriteria(tokenizer, words), {}
    assert StopWordsCriteria.__call__ is stop_words.__call__
    for step in range(40):
        new = torch.randint(10, 60, (5, 1))
        for (row, at), token in plan.items():
            if step == at:
                new[row] = token[0]
        if step >= 8:
            new[2] = 7                                  # row 2 ends with 25 sevens at step 32
        ids = torch.cat([ids, new], dim=1)
        expected = stop_words.OWN(own, ids, None)
        got = plugin(ids, None)
        assert got.dtype == torch.bool and torch.equal(got, expected), step
        first_stop.update({row: step for row in got.nonzero().flatten().tolist() if row not in first_stop})
    assert first_stop == {0: 3, 1: 7, 2: 32}   # row 3's brace and newline are apart, row 4 has none: never


def test_the_compiled_vision_rotary_embedding_is_transformers_within_a_rounding(monkeypatch):
    """Qwen3-VL's vision rotary embedding over bf16 queries and keys of two patch counts, compiled (forced on, as
    on a GPU; one dynamic-shape kernel) against transformers' own: every element within one bf16 rounding step
    (the fused multiply-add), nearly all equal."""
    from transformers.models.qwen3_vl import modeling_qwen3_vl as qwen3_vl

    from stages.speed import vision_rope

    fused = qwen3_vl.apply_rotary_pos_emb_vision
    assert fused._fused
    monkeypatch.setattr(vision_rope, "compiles", lambda q: True)
    torch.manual_seed(0)
    for patches in (300, 784):
        q, k = (torch.randn(patches, 4, 16, dtype=torch.bfloat16) for _ in range(2))
        angles = torch.randn(patches, 16)
        expected = fused.__wrapped__(q, k, angles.cos(), angles.sin())
        got = fused(q, k, angles.cos(), angles.sin())
        for a, b in zip(got, expected):
            assert a.dtype == torch.bfloat16 and a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=2 ** -7, atol=2 ** -7)
            assert (a != b).float().mean() < 0.01


def test_a_failed_compile_falls_back_to_transformers_function_once(monkeypatch, caplog):
    from stages.speed import vision_rope

    calls = []

    def broken(fn, **kwargs):
        def compiled(*args):
            calls.append(args)
            raise RuntimeError("no working C compiler\nmore detail")
        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(vision_rope, "compiles", lambda q: True)
    apply = vision_rope.fused(lambda q, k, cos, sin: (q * cos, k * sin))
    q = torch.ones(2, 3)
    with caplog.at_level("WARNING"):
        first, second = apply(q, q, 2.0, 3.0), apply(q, q, 2.0, 3.0)
    assert all(torch.equal(a, b) for a, b in zip(first, (q * 2, q * 3))) and len(first) == len(second) == 2
    assert len(calls) == 1 and caplog.text.count("torch.compile failed (RuntimeError: no working C compiler)") == 1


def test_the_stop_words_take_over_a_check_ms_swift_began(tmp_path):
    from swift.template.utils import StopWordsCriteria
    from transformers import AutoTokenizer

    from stages.speed import stop_words

    build_tiny_qwen3_vl(tmp_path, 42)
    criteria = StopWordsCriteria(AutoTokenizer.from_pretrained(tmp_path), [[7, 7]])
    ids = torch.tensor([[20, 7, 7], [20, 21, 7]])
    assert stop_words.OWN(criteria, ids, None).tolist() == [True, False]
    assert criteria(torch.cat([ids, torch.tensor([[30], [7]])], dim=1), None).tolist() == [True, True]


def test_encoding_processes_are_for_a_gpu_and_half_its_share_of_the_cores():
    from stages.speed.encoders import SHM_NEEDED, encoding_processes, machine

    shm = SHM_NEEDED
    assert encoding_processes("cuda", 16, 1, shm) == 8 and encoding_processes("cuda", 64, 1, shm) == 8
    assert encoding_processes("cuda", 6, 1, shm) == 3 and encoding_processes("cuda", 2, 1, shm) == 0
    assert encoding_processes("cuda", 64, 4, shm) == 8 and encoding_processes("cuda", 16, 4, shm) == 2
    assert encoding_processes("cpu", 16, 1, shm) == 0
    assert encoding_processes("cuda", 16, 1, 64 * 2 ** 20) == 0   # a container's default /dev/shm
    cpus, gpus_here, shm_free = machine()
    assert cpus >= 1 and gpus_here >= 1 and shm_free >= 0


def test_slices_cut_each_batch_within_its_own_requests():
    from stages.speed.encoders import slices

    assert slices([5, 3], 2) == ([[0, 1, 2], [3, 4], [5, 6], [7]], [2, 2])
    assert slices([4], 8) == ([[0], [1], [2], [3]], [4])
    order, counts = slices([512, 512, 100], 16)
    assert counts == [16, 16, 15] and sum(order, []) == list(range(1124)) and max(map(len, order)) == 32


def test_unpack_gives_back_what_pack_took():
    """Tensors that concatenate come back as views with the same values; the rest (a key one sample lacks, a
    scalar, another trailing shape) stays in its sample untouched."""
    from stages.speed.encoders import pack, unpack

    samples = [{"input_ids": [1, 2], "pixel_values": torch.rand(4, 6), "grid": torch.tensor([[1, 2, 2]]),
                "only": torch.ones(2), "scalar": torch.tensor(3), "wide": torch.zeros(1, 2)},
               {"input_ids": [3], "pixel_values": torch.rand(2, 6), "grid": torch.tensor([[1, 1, 2]]),
                "scalar": torch.tensor(4), "wide": torch.zeros(1, 3)}]
    expected = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()} for s in samples]
    bare, packed = pack(samples)
    assert set(packed) == {"pixel_values", "grid"} and packed["pixel_values"][1] == [4, 2]
    assert all(not isinstance(v, torch.Tensor) or k in {"only", "scalar", "wide"} for s in bare for k, v in s.items())
    back = unpack(bare, packed)
    for got, want in zip(back, expected):
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert torch.equal(got[k], v) if isinstance(v, torch.Tensor) else got[k] == v


def test_an_encoding_error_crosses_to_this_process_with_its_traceback():
    """A picklable error keeps its type; one that holds a lock (cannot be pickled, and the DataLoader's queue would
    drop it) comes as a RuntimeError naming it; both carry the worker's traceback."""
    import pickle
    import threading

    from stages.speed.encoders import handed_back

    def fail(error):
        try:
            raise error
        except Exception as e:   # noqa: BLE001
            return handed_back(e)
    plain = pickle.loads(pickle.dumps(fail(FileNotFoundError(2, "No such file", "x.png"))))
    assert type(plain) is FileNotFoundError and plain.filename == "x.png" and "fail" in plain.__notes__[0]
    held = ValueError("bad image")
    held.lock = threading.Lock()
    crossed = pickle.loads(pickle.dumps(fail(held)))
    assert type(crossed) is RuntimeError and str(crossed) == "ValueError: bad image"
    assert "in an encoding process" in crossed.__notes__[0]


def test_named_images_are_the_request_s_own_list():
    from swift.infer_engine import InferRequest

    from stages.speed.encoders import named_images

    assert named_images({"images": ["a.png", "b.png"]}) == ["a.png", "b.png"]
    assert named_images({"images": "a.png"}) == ["a.png"] and named_images({"messages": []}) == []
    assert named_images(InferRequest(messages=[], images=["c.png"])) == ["c.png"]


def tiny_engine(tmp_path, n: int, missing: int | None = None):
    """ms-swift's engine over the tiny Qwen3-VL on the CPU (batches of 4), and n two-image requests (request
    `missing`'s second image a file that is not an image, so that it fails to encode the same way wherever the test
    runs: ms-swift's load_file hands a path that does not exist to base64.b64decode, whose error then depends on the
    characters of the temporary folder's name)."""
    from PIL import Image
    from swift.infer_engine import InferRequest, TransformersEngine

    (tmp_path / "model").mkdir()
    build_tiny_qwen3_vl(tmp_path / "model", 42)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32 + 16 * i, 48), (40 * i, 90, 200 - 30 * i)).save(paths[-1])
    requests = [InferRequest(messages=[{"role": "user", "content": f"<image><image>pair {i}"}],
                             images=[str(paths[i % 5]), str(paths[(i + 1) % 5])]) for i in range(n)]
    if missing is not None:
        (tmp_path / "not_an_image.png").write_text("not an image\n", encoding="utf-8")
        requests[missing].images[1] = str(tmp_path / "not_an_image.png")
    return TransformersEngine(str(tmp_path / "model"), model_type="qwen3_vl", max_batch_size=4), requests


def test_the_encoding_processes_give_ms_swift_s_encoding(tmp_path):
    """One forked process encodes 3 batches in slices of 2: the same samples as ms-swift's `_batch_encode` (pixels in
    the dtype asked for), the failed request (beside a good one in its slice) reported at its place within its
    batch, and raised in strict mode with the worker's traceback, the next batch still its own."""
    from PIL import UnidentifiedImageError

    from stages.speed.encoders import Encoders
    from stages.speed.prefetch import SERIAL_ENCODE, batches

    engine, requests = tiny_engine(tmp_path, 11, missing=5)
    engine.template.set_mode("transformers")
    chunks = batches(requests, engine.max_batch_size)
    encoders = Encoders(engine.template, chunks, torch.bfloat16, False, 1)
    try:
        got = [encoders.encode(k, False) for k in range(len(chunks))]
    finally:
        encoders.close()
    for (batched, errors), chunk in zip(got, chunks):
        want, want_errors = SERIAL_ENCODE(engine, chunk, False)
        assert [(i, type(e)) for i, e in errors] == [(i, type(e)) for i, e in want_errors]
        assert len(batched) == len(want) and all(g.keys() == w.keys() for g, w in zip(batched, want))
        for g, w in zip(batched, want):
            for k, v in w.items():
                if k == "template_inputs":
                    # the images as the request named them (paths), not decoded: no details were asked for
                    assert g[k].messages == v.messages and len(g[k].images) == len(v.images) == 2
                    assert all(isinstance(x, str) for x in g[k].images)
                elif isinstance(v, torch.Tensor):
                    assert torch.equal(g[k], v.to(torch.bfloat16) if k.startswith("pixel_values") else v), k
                else:
                    assert g[k] == v, k
    assert [i for _, errors in got for i, _ in errors] == [1]   # request 5 is batch 1's second
    encoders = Encoders(engine.template, chunks, None, True, 2)
    try:
        encoders.encode(0, True)
        with pytest.raises(UnidentifiedImageError) as raised:
            encoders.encode(1, True)
        assert "in an encoding process" in raised.value.__notes__[0]
        third = encoders.encode(2, True)[0]   # the failed batch was read to its end
        assert [s["template_inputs"].messages[0]["content"] for s in third] == [f"<image><image>pair {i}"
                                                                               for i in (8, 9, 10)]
    finally:
        encoders.close()


def test_infer_with_encoding_processes_generates_from_ms_swift_s_inputs(tmp_path, monkeypatch):
    """The engine's infer over 3 batches with the encoding in 2 forked processes (as on a GPU): generate gets the
    tensors ms-swift's own infer gives it, batch by batch, and the answers are the same."""
    from swift.infer_engine import RequestConfig

    from stages.speed import prefetch

    engine, requests = tiny_engine(tmp_path, 10)
    config, seen = RequestConfig(max_tokens=6, temperature=0), []
    own = engine.template.generate

    def generate(model, **kwargs):
        seen.append({k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        return own(model, **kwargs)
    monkeypatch.setattr(engine.template, "generate", generate)
    want = [r.choices[0].message.content for r in prefetch.SERIAL_INFER(engine, requests, config)]
    serial, seen = seen, []
    monkeypatch.setattr(prefetch, "encoding_processes", lambda *machine: 2)
    got = [r.choices[0].message.content for r in prefetch.infer(engine, requests, config)]
    assert got == want and len(seen) == len(serial) == 3
    for g, w in zip(seen, serial):
        assert g.keys() == w.keys() >= {"input_ids", "pixel_values", "image_grid_thw"}
        assert all(torch.equal(g[k], w[k]) for k in w)
    assert not torch.equal(seen[0]["pixel_values"][:10], seen[1]["pixel_values"][:10])


@pytest.fixture
def batch_copy(monkeypatch):
    """The training plugin, imported afresh (it patches ms-swift's classes as it loads) and taken out after the
    test, so that no later test collates or loads batches through it."""
    from swift.dataloader.shard import DataLoaderShard
    from swift.template import Template

    monkeypatch.setattr(Template, "data_collator", Template.data_collator)
    monkeypatch.setattr(DataLoaderShard, "__iter__", DataLoaderShard.__iter__)
    monkeypatch.delitem(sys.modules, "stages.speed.batch_copy", raising=False)
    return importlib.import_module("stages.speed.batch_copy")


def test_training_batches_carry_pixels_in_the_tower_s_dtype(tmp_path, batch_copy):
    """ms-swift's collate of two encoded samples with the plugin: the same batch, the pixels cast to the bf16 tower's
    dtype (what patch_embed casts them to); with no model to ask, nothing is cast."""
    from swift.template import Template
    from transformers import Qwen3VLForConditionalGeneration

    engine, requests = tiny_engine(tmp_path, 2)
    template = engine.template
    template.set_mode("transformers")
    samples = [template.encode(r) for r in requests]
    assert Template.data_collator is batch_copy.data_collator
    template.model = engine.model   # the collate asks the model for the rope index
    want = batch_copy.OWN_COLLATE(template, [dict(s) for s in samples])   # the collate takes keys out
    template.model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path / "model", dtype=torch.bfloat16)
    got = template.data_collator([dict(s) for s in samples])
    assert want["pixel_values"].dtype == torch.float32 and got["pixel_values"].dtype == torch.bfloat16
    assert torch.equal(got["pixel_values"], want["pixel_values"].to(torch.bfloat16))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want
                                             if k != "pixel_values" and isinstance(want[k], torch.Tensor))
    assert batch_copy.pixel_dtype(None) is None and batch_copy.cast_pixels(dict(want), None) == want


def test_the_training_dataloader_gives_the_same_batches(batch_copy):
    """ms-swift's DataLoaderShard with the plugin's copy (non-blocking; on a CPU a plain one): the same batches."""
    from swift.dataloader.shard import DataLoaderShard

    assert DataLoaderShard.__iter__ is batch_copy.__iter__
    data = [{"x": torch.full((2,), float(i)), "n": i} for i in range(5)]
    for device in ("cpu", None):
        batches = list(DataLoaderShard(data, device=device, batch_size=2))
        assert [b["x"].tolist() for b in batches] == [[[0.0, 0.0], [1.0, 1.0]], [[2.0, 2.0], [3.0, 3.0]], [[4.0, 4.0]]]
        assert [b["n"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
