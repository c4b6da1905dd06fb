"""The benchmark suite (`python -m bench`, bench/gpu_check.sh) on the tiny profile: files written, sane values,
FLOP counts equal to a hand computation. No assertion on wall time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import markdown as markdown_module
from bench import train as train_bench
from bench.__main__ import main as bench_main
from bench.batches import make_batch
from bench.flops import StepShape, training_flops
from bench.profiles import make_profile, tiny_config
from r2gen_hf.adapters import AlignmentConfig


ROOT = Path(__file__).resolve().parents[1]


def run_bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    assert bench_main([*args, "--profile", "tiny", "--machine", "test", "--output_dir", str(tmp_path)]) == 0
    return json.loads((tmp_path / "tiny-test.json").read_text()), (tmp_path / "tiny-test.md").read_text()


def hand_counted_shallow_flops(batch: int, seq: int, views: int, supervised: int, head_at_labels: bool) -> int:
    """Tiny profile, alignment `shallow`, no LoRA: Swin forward only, projector forward + weight gradient,
    Gemma 3 forward + input gradient (4·N·T), attention forward + backward, LM head forward + input gradient."""
    n_views = batch * views
    # Swin: 32 px, patch 4 -> 8x8 = 64 tokens of width 8 (one block, window 4), merged to 4x4 = 16 of width 16.
    patch_embed = 2 * n_views * 64 * (3 * 4 * 4) * 8
    stage0 = 2 * n_views * 64 * (4 * 8 * 8 + 2 * 8 * 32) + 4 * n_views * 64 * 4**2 * 8
    merge = 2 * n_views * 16 * (4 * 8) * (2 * 8)
    stage1 = 2 * n_views * 16 * (4 * 16 * 16 + 2 * 16 * 64) + 4 * n_views * 16 * 4**2 * 16
    vision = patch_embed + stage0 + merge + stage1  # forward only: nothing before it trains
    projector = 2 * (2 * batch * 16 * 16 * 64)  # 16 tokens per study (views averaged), 16 -> 64; + weight grad
    # Gemma 3: hidden 64, 2 query heads and 1 KV head of 32, FFN 128, 2 layers.
    per_token = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128
    lm = 2 * (2 * batch * seq * per_token) * 2  # 2 layers x forward (2·N·T) x (1 + input gradient)
    attention = 2 * (4 * batch * 2 * seq * seq * 32) * 3  # 2 layers x (QK + AV) x (forward + 2x backward)
    positions = batch * (supervised if head_at_labels else seq)
    head = 2 * positions * 64 * 262_144 * 2
    return vision + projector + lm + attention + head


@pytest.mark.parametrize("head_at_labels", [True, False])
def test_training_flops_match_hand_computation(head_at_labels):
    shape = StepShape(batch_size=2, seq_len=56, views_per_study=2, supervised_tokens=16)
    count = training_flops(tiny_config(), shape, AlignmentConfig(alignment="shallow"), head_at_labels)
    assert count.total == hand_counted_shallow_flops(2, 56, 2, 16, head_at_labels)
    assert count.recompute == 0


@pytest.mark.parametrize("alignment,llm_lora", [("shallow", False), ("deep", True)])
def test_training_flops_match_torch_flop_counter(alignment, llm_lora):
    """torch's counter sees the matmuls autograd really runs (frozen weights get no weight gradient); on CPU
    it does not count SDPA's attention, so that part is compared by hand above."""
    from torch.utils.flop_counter import FlopCounterMode

    profile = make_profile("tiny", torch.device("cpu"))
    config = AlignmentConfig(alignment=alignment, llm_lora=llm_lora)
    model, processor = profile.training_model(config)
    batch = make_batch(model.config, 2, 2, 8, processor)
    with FlopCounterMode(display=False) as counter:
        model(**batch, loss_logits_only=True).loss.backward()
    counted = counter.get_flop_counts()["Global"]
    counted_without_attention = sum(v for op, v in counted.items() if "bmm" not in str(op) and "attention" not in str(op))
    shape = StepShape(2, batch["input_ids"].shape[1], 2, 8)
    ours = training_flops(model.config, shape, config, loss_logits_only=True).to_dict()
    attention = ours["by_part"]["lm_attention"] + ours["by_part"]["vision_attention"]
    assert ours["model_flops_per_step"] - attention == counted_without_attention


def test_gemma3_4b_profile_refuses_cpu():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        make_profile("gemma3-4b", torch.device("cpu"))


@pytest.mark.parametrize("mfu", [0.49, 0.51])
def test_goals_are_the_demo_profiles_and_are_judged_on_its_own_setting(mfu):
    """The demo profile's goals (MFU >= 50% on its own setting, batch-1 decoding >= 30% of the bound), stated in
    its markdown as met or not."""
    profile = make_profile("demo", torch.device("cpu"))
    assert (profile.mfu_goal, profile.decode_goal) == (0.50, 0.30)
    own = train_bench.default_setting(profile).name
    results = [{"setting": own, "mfu": mfu}, {"setting": "other", "mfu": 0.9}]
    goal = train_bench.mfu_against_goal(profile, results)
    assert goal == {"setting": own, "mfu": mfu, "goal": 0.50, "meets_goal": mfu > 0.5}
    section = markdown_module.train_section(
        {"settings": [], "loss_logits_only": {"setting": own, "step_seconds_loss_logits_only": 1.0,
                                             "step_seconds_full_logits": 2.0, "step_time_ratio": 0.5,
                                             "step_time_reduction": 0.5, "goal_reduction": 0.25, "meets_goal": True},
         "mfu_goal": goal})
    assert f"MFU of {own}: {100 * mfu:.1f}% (goal ≥ 50%: {'met' if mfu > 0.5 else 'not met'})" in section


def test_generate_through_entry_point(tmp_path):
    results, markdown = run_bench(tmp_path, "generate", "--new_tokens", "2")
    generate = results["benchmarks"]["generate"]
    settings = {(s["batch_size"], s["num_beams"], s["compiled_lm_head"]) for s in generate["settings"]}
    assert settings == {(1, 1, False), (1, 3, False), (16, 1, False), (16, 3, False), (1, 1, True)}  # CPU: + compiled head
    for setting in generate["settings"]:
        assert setting["tokens_per_s"] > 0 and setting["reports_per_s"] > 0 and setting["new_tokens"] == 2
    bound = generate["bandwidth_bound"]
    assert bound["bandwidth_bound_tokens_per_s"] > 0 and bound["lm_weight_bytes_read_per_token"] > 0
    for key in ("eager", "compiled_head"):
        assert 0 < bound[f"fraction_of_bound_{key}"] < 1.5
    assert bound["lm_head_compile_seconds"] > 0 and "goal_fraction" not in bound  # the goals are the demo's and the GPU's
    assert "## generate" in markdown and "Bandwidth bound" in markdown and "with the compiled LM head" in markdown
    assert "Goal" not in markdown


def test_memory_through_entry_point_keeps_other_results(tmp_path):
    earlier = {"profile": "tiny", "benchmarks": {"data": {"prepared_images_per_s": 1.0, "r2gengpt_images_per_s": 1.0, "ratio": 1.0}}}
    (tmp_path / "tiny-test.json").write_text(json.dumps(earlier))
    results, markdown = run_bench(tmp_path, "memory")  # added to the same file
    assert set(results["benchmarks"]) == {"data", "memory"}
    variants = {v["quantization"]: v for v in results["benchmarks"]["memory"]["variants"]}
    assert set(variants) == {"none", "8bit", "4bit"}
    assert variants["4bit"]["lm_memory_gib"] < variants["8bit"]["lm_memory_gib"] < variants["none"]["lm_memory_gib"]
    assert "## memory" in markdown and "## data" in markdown


@pytest.mark.slow
def test_train_through_entry_point(tmp_path):
    results, markdown = run_bench(tmp_path, "train", "--warmup_steps", "1", "--timed_steps", "1")
    train = results["benchmarks"]["train"]
    names = [s["setting"] for s in train["settings"]]
    assert len(names) == len(set(names)) == 9  # 3 modes x LLM LoRA, checkpointing, full logits, QLoRA
    assert any("qlora_4bit" in name for name in names)
    for setting in train["settings"]:
        assert setting["samples_per_s"] > 0 and setting["tokens_per_s"] > 0
        assert 0 < setting["mfu"] < 1.5, setting
        assert setting["model_flops_per_step"] > 0 and setting["peak_memory_gib"] > 0
        assert setting["final_loss"] == setting["final_loss"]  # not NaN
    by_name = {s["setting"]: s for s in train["settings"]}
    comparison = train["loss_logits_only"]
    assert comparison["step_time_ratio"] > 0 and isinstance(comparison["meets_goal"], bool)
    full = by_name[comparison["setting"].replace("head_at_labels", "full_logits")]
    assert full["model_flops_per_step"] > by_name[comparison["setting"]]["model_flops_per_step"]
    assert "loss_logits_only" in markdown and "| setting |" in markdown
    assert train["mfu_goal"] is None and "MFU of" not in markdown  # no goal for the tiny profile
    assert all(len(s["step_seconds_each"]) == 1 for s in train["settings"])
    assert train["hardware"]["matmul_peak_tflops"]["float32"] > 0


@pytest.mark.slow
def test_all_through_entry_point(tmp_path):
    results, markdown = run_bench(tmp_path, "all", "--timed_steps", "1", "--warmup_steps", "0", "--no-qlora",
                                  "--new_tokens", "2", "--num_reports", "100", "--num_images", "4")
    assert set(results["benchmarks"]) == {"train", "generate", "data", "metrics", "memory"}
    metrics = results["benchmarks"]["metrics"]
    assert metrics["max_abs_difference"] < 1e-9
    assert metrics["ours_seconds_per_1000_warm"] > 0 and metrics["pycocoevalcap_seconds_per_1000"] > 0
    assert results["benchmarks"]["data"]["prepared_images_per_s"] > 0
    for name in ("train", "generate", "data", "metrics", "memory"):
        assert f"## {name}" in markdown


@pytest.mark.slow
def test_gpu_check_script_with_tiny_profile():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable, "NEW_TOKENS": "2", "TRAIN_BATCH_SIZE": "2",
           "TIMED_STEPS": "1"}
    completed = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "tiny"], env=env, capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)  # stdout holds the JSON alone
    assert result["profile"] == "tiny" and result["new_tokens"] == 2
    assert set(result["variants"]) == {"none", "8bit", "4bit"}
    for variant in result["variants"].values():
        for key in ("lm_memory_gib", "generate_batch1_greedy_tokens_per_s", "generate_batch16_beams3_reports_per_s",
                    "bandwidth_bound_tokens_per_s"):
            assert variant[key] > 0, key
        assert variant["train"]["samples_per_s"] > 0 and variant["train"]["peak_memory_gib"] > 0
    assert result["memory_bandwidth"]["read_gb_per_s"] > 0


def test_readme_performance_table_is_generated_from_the_results(tmp_path):
    """README.md's table is `python -m bench readme`'s output for bench/results/: regenerate it after a run."""
    from bench.__main__ import README, RESULTS_DIR
    from bench.markdown import README_END, README_START, readme_table, update_readme

    text = README.read_text()
    block = text[text.index(README_START) + len(README_START) : text.index(README_END)]
    assert block == "\n" + readme_table(RESULTS_DIR), "run `python -m bench readme` and commit README.md"

    # A profile without results is shown as not measured; with results, its numbers appear.
    copy = tmp_path / "README.md"
    copy.write_text(f"before\n{README_START}\nold\n{README_END}\nafter\n")
    results = tmp_path / "results"
    results.mkdir()
    assert update_readme(copy, results) and "old" not in copy.read_text()
    assert copy.read_text().count("not yet measured") == 3 and copy.read_text().endswith(f"{README_END}\nafter\n")
