"""The speed benchmark (bench/): its FLOP count matches the real Qwen3-VL modules it claims to count, its rates
come from the right timestamps, its two swift configurations differ only in speed settings, and
`python -m bench.speed --smoke` runs every part end to end on the tiny model on a CPU."""
import json
import math
import subprocess
import sys
import time

import pytest
import yaml

from bench import shapes
from bench.speed import FULL, PARTS, SMOKE, batch_rate, bench_params, median_rate, repeated, steady_rate, swift_usage
from stages.params import validate
from tests.conftest import ROOT
from tests.workspace import ENV


def meta_qwen3_vl(s: dict):
    """Qwen3-VL built from a bench shape the way stages.tiny_model.build.build_tiny_qwen3_vl configures it, on the meta
    device (no memory, no init time): only the modules' shapes are real."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text = dict(vocab_size=shapes.VOCAB, hidden_size=s["hidden_size"], intermediate_size=s["intermediate_size"],
                num_hidden_layers=s["num_hidden_layers"], num_attention_heads=s["num_attention_heads"],
                num_key_value_heads=s["num_key_value_heads"], head_dim=s["hidden_size"] // s["num_attention_heads"],
                tie_word_embeddings=True)
    vision = dict(depth=s["vision_depth"], hidden_size=s["vision_hidden_size"],
                  intermediate_size=s["vision_intermediate_size"], num_heads=s["vision_num_heads"],
                  patch_size=shapes.PATCH, spatial_merge_size=shapes.MERGE, temporal_patch_size=2,
                  out_hidden_size=s["hidden_size"], num_position_embeddings=2304,
                  deepstack_visual_indexes=s["deepstack_visual_indexes"])
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
    with torch.device("meta"):
        return Qwen3VLForConditionalGeneration(config)


@pytest.fixture(scope="module", params=["2b", "tiny"])
def shape_and_model(request):
    s = shapes.SHAPES[request.param]
    return s, meta_qwen3_vl(s)


def linear_weights(model, prefix: str) -> int:
    """Weights (no biases) of the nn.Linear modules whose qualified name starts with `prefix`."""
    import torch

    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.startswith(prefix))


def test_lm_linear_params_are_the_decoder_layers_linear_weights(shape_and_model):
    """The language model's FLOPs per token are 2x exactly these weights (q/k/v/o, gate/up/down of every layer)."""
    s, model = shape_and_model
    assert linear_weights(model, "model.language_model.layers.") == shapes.lm_linear_params(s)


def test_lm_linear_params_of_2b_is_qwen3_vl_2b():
    """Qwen3-VL-2B's language model is 1.7 B parameters, of which 1.41 B are its layers' linear weights (the rest:
    the 311 M tied embedding, norms); a wrong head count or MLP width moves this by far more than 1 %."""
    assert 1.40e9 < shapes.lm_linear_params(shapes.SHAPES["2b"]) < 1.42e9


def test_vit_block_params_are_the_blocks_linear_weights(shape_and_model):
    """The per-patch ViT count's block term is the blocks' qkv, proj and MLP weights."""
    s, model = shape_and_model
    blocks = shapes.vit_linear_params(s) - shapes.vit_linear_params({**s, "vision_depth": 0})
    assert linear_weights(model, "model.visual.blocks.") == blocks
    assert {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n.startswith("model.visual.blocks.0.")} >= {
        "qkv", "proj", "linear_fc1", "linear_fc2"}


def test_vit_deepstack_mergers_are_counted_per_merged_group(shape_and_model):
    """Each deepstack merger runs once per group of merge^2 patches: its weights / 4 per patch."""
    s, model = shape_and_model
    deepstack = shapes.vit_linear_params(s) - shapes.vit_linear_params({**s, "deepstack_visual_indexes": []})
    real = linear_weights(model, "model.visual.deepstack_merger_list.")
    assert real > 0 and deepstack == real // shapes.MERGE ** 2


def test_vit_linear_params_total(shape_and_model):
    """Blocks + patch embedding (a Conv3d over 2 x 16 x 16 x 3) + every merger's weights / merge^2."""
    s, model = shape_and_model
    visual = model.model.visual
    mergers = (linear_weights(model, "model.visual.merger.")
               + linear_weights(model, "model.visual.deepstack_merger_list."))
    assert visual.patch_embed.proj.weight.numel() == 3 * shapes.PATCH ** 2 * 2 * s["vision_hidden_size"]
    assert shapes.vit_linear_params(s) == (linear_weights(model, "model.visual.blocks.")
                                           + visual.patch_embed.proj.weight.numel() + mergers // shapes.MERGE ** 2)


def test_train_flops_of_2b_match_the_reference_figure():
    """A 2B Qwen3-VL training sample of 570 tokens with two 448x448 images (784 patches each) is about 5.2 TFLOP."""
    flop = shapes.train_flops(shapes.SHAPES["2b"], 570, 784, 2)
    assert 4.5e12 < flop < 6e12
    assert shapes.patches(448) == 784


def test_infer_flops_grow_with_new_tokens():
    """Each further token costs one forward pass: 2 x (layers' linear weights + the output layer), plus attention."""
    s = shapes.SHAPES["2b"]
    flops = [shapes.infer_flops(s, 300, n, 784, 2) for n in (0, 1, 8, 32)]
    assert flops == sorted(flops) and len(set(flops)) == 4
    per_token = 2 * (shapes.lm_linear_params(s) + shapes.VOCAB * s["hidden_size"])
    assert per_token < flops[-1] - shapes.infer_flops(s, 300, 31, 784, 2) < 1.05 * per_token


def test_steady_rate_leaves_out_the_warm_up_steps():
    """Times are each step's end: with warm-up 1 the clock starts at step 1's end, so steps 2..4 (48 samples)
    took 12 s; with warm-up 2 the slow step 2 is left out too (32 samples in 2 s)."""
    times = [0.0, 10.0, 11.0, 12.0]
    assert steady_rate(times, 16, 1) == pytest.approx(16 * 3 / 12)
    assert steady_rate(times, 16, 2) == pytest.approx(16 * 2 / 2)
    assert steady_rate([5.0, 6.0], 4, 1) == pytest.approx(4.0)


def test_median_rate_leaves_out_one_time_stalls():
    # steps after one warm-up step take 1, 1, 4 (a stall), 1 s: the mean counts the stall, the median does not
    times = [10.0, 11.0, 12.0, 16.0, 17.0]
    assert steady_rate(times, 32, 1) == pytest.approx(32 * 4 / 7)
    assert median_rate(times, 32, 1) == pytest.approx(32.0)
    assert median_rate([0.0, 9.0, 11.0], 8, 2) == pytest.approx(4.0)   # the warm-up step (9 s) is left out
    with pytest.raises(ValueError):
        median_rate([0.0, 1.0], 8, 2)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_steady_rate_needs_more_steps_than_warm_up(n):
    with pytest.raises(ValueError, match="warm-up"):
        steady_rate([float(i) for i in range(n)], 16, 3)


def test_batch_rate_weights_batches_by_size():
    """swift infer cuts 1024 samples at batch 512 into 512+488+24 (chunks of --write_batch_size 1000): the rate
    counts the samples of the batches after the first, not batches x max_batch_size."""
    assert batch_rate([0.0, 10.0, 12.0], [512, 488, 24]) == pytest.approx(512 / 12)
    with pytest.raises(ValueError):
        batch_rate([1.0], [512])


def test_swift_usage_reads_the_last_usage_line():
    log = ("noise {'a': 1}\n{'num_prompt_tokens': 10, 'num_generated_tokens': 4, 'num_samples': 2, 'runtime': 1.5, "
           "'samples/s': 1.3, 'tokens/s': 2.6}\nEnd time")
    assert swift_usage(log)["num_generated_tokens"] == 4
    assert swift_usage("no usage here") is None


def test_repeated_rows_fill_an_epoch_longer_than_the_window():
    assert repeated([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    assert repeated([1, 2, 3], 2) == [1, 2, 3] and repeated([1, 2], 4) == [1, 2, 1, 2]


@pytest.fixture
def gpu_profile() -> dict:
    with open(ROOT / "params-gpu.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("cfg", [FULL, SMOKE], ids=["full", "smoke"])
def test_slow_and_fast_swift_runs_differ_only_in_speed_settings(gpu_profile, cfg):
    """swift_slow (the baseline's micro-batch, accumulation, checkpointing) against swift_gpu (the profile): same global
    batch, so the same optimizer steps and comparable losses; both valid params with the benchmark's LoRA r64."""
    fast, slow = bench_params(gpu_profile, cfg, slow=False), bench_params(gpu_profile, cfg, slow=True)
    global_batch = {name: p["train"]["per_device_train_batch_size"] * p["train"]["gradient_accumulation_steps"]
                    for name, p in (("fast", fast), ("slow", slow))}
    expected = cfg.get("batch", gpu_profile["train"]["per_device_train_batch_size"]
                       * gpu_profile["train"]["gradient_accumulation_steps"])
    assert global_batch["fast"] == global_batch["slow"] == expected
    assert slow["train"]["gradient_checkpointing"] is True and slow["train"]["per_device_train_batch_size"] <= 4
    assert fast["train"]["gradient_checkpointing"] is False
    for p in (fast, slow):
        assert p["lora"]["rank"] == 64 and p["infer"]["max_new_tokens"] == cfg["new_tokens"]
        validate(p)
    differ = {k for k in fast["train"] if fast["train"][k] != slow["train"][k]}
    assert differ <= {"per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
                      "use_liger_kernel", "dataloader_num_workers", "logging_steps"}   # slow logs every step
    assert {k: v for k, v in fast.items() if k != "train"} == {k: v for k, v in slow.items() if k != "train"}


def test_full_run_keeps_the_gpu_profile(gpu_profile):
    """The full benchmark measures params-gpu.yaml as written (batch, dtype, liger, LoRA dropout, inference
    batch), with only the benchmark's fixed LoRA rank/targets, learning rate and logging on top."""
    fast = bench_params(gpu_profile, FULL, slow=False)
    for section in ("train", "infer"):
        for key, value in gpu_profile[section].items():
            if key not in ("learning_rate", "logging_steps"):
                assert fast[section][key] == value, f"{section}.{key}"
    assert fast["lora"]["dropout"] == gpu_profile["lora"]["dropout"]
    assert fast["train"]["gradient_checkpointing"] is False and fast["train"]["torch_dtype"] == "bfloat16"
    assert fast["train"]["logging_steps"] == gpu_profile["train"]["logging_steps"]   # its syncs, as the stage has them


def test_bench_params_leaves_the_profile_alone(gpu_profile):
    """main() derives the fast and the slow params from the same profile dict, one after the other."""
    before = json.dumps(gpu_profile, sort_keys=True)
    bench_params(gpu_profile, FULL, slow=False)
    bench_params(gpu_profile, FULL, slow=True)
    assert json.dumps(gpu_profile, sort_keys=True) == before


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`python -m bench.speed --smoke` once (real swift sft / swift infer / transformers, tiny model, CPU; about
    90 s): its results.json, the RESULTS.md beside it, its work directory and how long it took."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out/results.json"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "bench.speed", "--smoke", "--work", str(tmp / "work"), "--out", str(out)],
                       cwd=ROOT, env=ENV, text=True, capture_output=True, timeout=600)
    seconds = time.perf_counter() - start
    print(f"bench.speed --smoke took {seconds:.0f} s")
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return {"results": json.loads(out.read_text(encoding="utf-8")), "report": out.parent / "RESULTS.md",
            "work": tmp / "work", "seconds": seconds}


@pytest.mark.slow
def test_smoke_measures_every_part(smoke):
    results = smoke["results"]
    assert "failed" not in results, results.get("failed")
    assert set(results["parts"]) == set(PARTS)
    for name, part in results["parts"].items():
        assert isinstance(part["samples_per_s"], float) and math.isfinite(part["samples_per_s"]), name
        assert part["tflop_per_sample"] > 0, name
        assert part["kind"] == ("train" if name in ("swift_gpu", "seeds_train", "swift_slow") else "infer")
    assert results["tokens"]["train"] > results["tokens"]["prompt"] > 0


@pytest.mark.slow
def test_smoke_rates_are_positive(smoke):
    """Every rate the table shows is a positive throughput."""
    parts = smoke["results"]["parts"]
    assert {n: p["samples_per_s"] for n, p in parts.items() if p["samples_per_s"] <= 0} == {}


@pytest.mark.slow
def test_smoke_swift_infer_is_clocked_per_batch(smoke):
    """bench/time_infer.py clocks every batch of the real `swift infer`, and the generated tokens come from the
    usage line swift logs (SMOKE: 3 batches of 4, up to 8 new tokens each)."""
    clock = json.loads((smoke["work"] / "logs/swift_infer_times.json").read_text(encoding="utf-8"))
    assert clock["sizes"] == [4, 4, 4] and clock["times"] == sorted(clock["times"])
    assert 0 < smoke["results"]["parts"]["swift_infer"]["new_tokens"] <= SMOKE["new_tokens"]
    # each batch is split into its phases. Without the plugins they run one after the other, inside the time
    # between two batches' ends; with the prefetch plugin the next batch's encode overlaps this one's generate,
    # so only generate must fit there.
    serial = json.loads((smoke["work"] / "logs/swift_infer_serial_times.json").read_text(encoding="utf-8"))
    for c, phases, prepared in ((serial, ("encode", "generate"), 0), (clock, ("generate",), 3)):
        assert {k: len(v) for k, v in c["phases"].items()} == {**dict.fromkeys(
            ("encode", "collate", "pre_forward", "generate", "vision", "prefill", "rope_index", "infer"), 3),
            "prepare": prepared, "handover": prepared, "receive": 0}   # the prefetch plugin's, on each batch
        assert all(g <= i for g, i in zip(c["phases"]["generate"], c["phases"]["infer"]))
        for i in range(3):   # the rope index, the vision tower and the first language-model forward: in generate
            assert sum(c["phases"][k][i] for k in ("rope_index", "vision", "prefill")) <= c["phases"]["generate"][i]
        gaps = [b - a for a, b in zip(c["times"], c["times"][1:])]
        for i, gap in enumerate(gaps, start=1):
            assert 0 < sum(c["phases"][k][i] for k in phases) <= gap, (phases, i)
    assert smoke["results"]["parity"] == {"rows": 12, "differing": 0}
    phases = smoke["results"]["parts"]["swift_infer"]["phases_s"]
    assert phases["encode"] > 0 and phases["generate"] > 0
    assert "encode" in smoke["report"].read_text(encoding="utf-8")


@pytest.mark.slow
def test_smoke_swift_slow_and_gpu_agree_on_the_loss(smoke):
    """The benchmark's claim that its two swift configurations train the same thing: same data, same global
    batch, so the same loss at step 1 (later steps drift only by float summation order)."""
    parts = smoke["results"]["parts"]
    losses = {n: {r["step"]: r["loss"] for r in parts[n]["losses"]} for n in ("swift_slow", "swift_gpu")}
    for name, by_step in losses.items():
        assert sorted(by_step) == [1, 2, 3], name
        assert all(math.isfinite(v) for v in by_step.values()), name
    assert abs(losses["swift_slow"][1] - losses["swift_gpu"][1]) < 1e-3
    assert parts["swift_slow"]["global_batch"] == parts["swift_gpu"]["global_batch"]


@pytest.mark.slow
def test_smoke_step_times_come_from_the_real_swift_sft(smoke):
    """bench/time_train.py's clock on the real `swift sft`: one time per optimizer step, increasing."""
    times = json.loads((smoke["work"] / "logs/swift_gpu_times.json").read_text(encoding="utf-8"))["times"]
    assert len(times) == SMOKE["gpu_steps"] and times == sorted(times) and times[0] > 0


@pytest.mark.slow
def test_smoke_report_has_a_row_per_part(smoke):
    report = smoke["report"].read_text(encoding="utf-8")
    for name, part in smoke["results"]["parts"].items():
        assert f"| {part['label']} | " in report, name
    assert "## Loss per optimizer step" in report
