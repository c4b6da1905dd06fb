"""The offline demo: its baseline and scoring (fast), and a shortened `make demo` end to end (slow: the real
Gemma 3 270M)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import SwinConfig, SwinModel

from r2gen_hf.demo import (
    DEMO_SWIN_CONFIG,
    FindingPretrainingConfig,
    compare_with_baseline,
    finding_codes,
    finding_targets,
    most_frequent_report,
    pretrain_on_findings,
    pretraining_inputs,
    score_reports,
    study_tokens,
)
from r2gen_hf.testing import tiny_image_processor

ROOT = Path(__file__).resolve().parents[1]
NORMAL = "the heart is normal in size . the lungs are clear . no pleural effusion or pneumothorax ."
CARDIOMEGALY = "the heart is enlarged . the lungs are clear . no pleural effusion or pneumothorax ."


def test_most_frequent_report_breaks_ties_by_first_seen():
    assert most_frequent_report(["b", "a", "a", "b", "c"]) == "b"
    assert most_frequent_report(["c", "a", "a"]) == "a"
    with pytest.raises(ValueError, match="No training reports"):
        most_frequent_report([])


def test_baseline_scores_against_the_synthetic_ground_truth():
    """A normal report for every study: No Finding is its only positive, so over the synthetic observations
    TP = 1 (the normal study), FP = 2 (No Finding for the abnormal ones), FN = 3 (their 3 findings)."""
    truth = [[], ["cardiomegaly"], ["nodule", "pneumothorax"]]
    references = [NORMAL, CARDIOMEGALY, "a nodule in the right upper lobe . small right pneumothorax ."]
    baseline = score_reports([NORMAL] * 3, references, truth)
    assert baseline["ce_micro_f1_synthetic"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 3))
    assert baseline["num_studies"] == 3 and {"bleu_4", "cider", "meteor", "rouge_l", "ce_micro_f1"} <= baseline.keys()

    better = score_reports([NORMAL, CARDIOMEGALY, NORMAL], references, truth)  # gets the cardiomegaly right
    assert better["ce_micro_f1_synthetic"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    comparison = compare_with_baseline(better, baseline)
    assert comparison["ce_micro_f1_synthetic_ratio"] == pytest.approx((4 / 7) / (2 / 7))
    assert comparison["ce_goal_met"] and comparison["bleu_4_goal_met"] == (better["bleu_4"] > baseline["bleu_4"])

    nothing = {"ce_micro_f1_synthetic": 0.0, "bleu_4": 0.0}
    assert not compare_with_baseline(nothing, nothing)["ce_goal_met"]
    assert compare_with_baseline({**nothing, "ce_micro_f1_synthetic": 0.1}, nothing)["ce_goal_met"]

    with pytest.raises(ValueError, match="2 predictions but 3"):
        score_reports([NORMAL] * 2, references[:2], truth)


def test_finding_targets_depend_on_the_findings_only():
    codes = finding_codes(num_findings=3, num_tokens=4, width=8, seed=0)
    labels = torch.tensor([[1.0, 0, 1], [1.0, 0, 1], [0.0, 0, 0], [0.0, 1, 0]])
    targets = finding_targets(labels, codes)  # (4, 4, 8)
    assert targets.shape == (4, 4, 8)
    assert torch.equal(targets[0], targets[1]) and not torch.allclose(targets[2], targets[3])
    assert torch.allclose(targets[2], torch.nn.functional.layer_norm(codes[-1], (8,)))  # normal: the always-on code
    assert torch.allclose(targets.mean(-1), torch.zeros(4, 4), atol=1e-5)  # layer-normalised tokens


def label_share(tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of the tokens' between-study variance that a linear function of the labels explains."""
    flat = tokens.flatten(1)  # (N, L * D)
    design = torch.cat([labels, torch.ones(len(labels), 1)], dim=1)
    residual = flat - design @ torch.linalg.lstsq(design, flat).solution
    return float(1 - residual.var(0).sum() / flat.var(0).sum())


def test_finding_pretraining_makes_the_findings_dominate_the_visual_tokens():
    """A short `pretrain_on_findings` run on the demo Swin: the loss falls, and the labels explain at least twice as much of
    the study tokens' variation than for the random Swin."""
    config = FindingPretrainingConfig(num_studies=48, seed=7, steps=200, batch_size=16, warmup_steps=5)
    pixel_values, labels = pretraining_inputs(tiny_image_processor(DEMO_SWIN_CONFIG["image_size"]), config)
    assert pixel_values.shape == (48, 2, 3, 64, 64) and labels.shape == (48, 6)
    torch.manual_seed(0)
    swin = SwinModel(SwinConfig(**DEMO_SWIN_CONFIG))
    with torch.no_grad():
        before = label_share(study_tokens(swin.eval(), pixel_values), labels)
    losses = pretrain_on_findings(swin, pixel_values, labels, config)
    with torch.no_grad():
        after = label_share(study_tokens(swin.eval(), pixel_values), labels)
    assert len(losses) == 200 and sum(losses[-10:]) < 0.8 * sum(losses[:10])
    assert after > max(0.3, 2 * before), (before, after)  # measured: 0.15 -> 0.59


def test_reload_check_batches_as_the_demo_run_does():
    """The reload check regenerates the run's first test batch; its batch size must be the YAML's."""
    import yaml

    from r2gen_hf import demo

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    defaults = {action.dest: action.default for action in demo.build_parser()._actions}
    assert defaults["eval_batch_size"] == config["per_device_eval_batch_size"]


@pytest.mark.slow
def test_shortened_demo_end_to_end(tmp_path):
    """The Makefile's demo steps, shortened (few studies, 2 steps, short reports), on the real Gemma 3 270M."""
    data, output = tmp_path / "data", tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    steps = [
        ["-m", "data_prep.synthetic", "--output", str(data), "--num_studies", "30", "--seed", "1", "--image_size", "64"],
        ["finetune.py", "configs/demo.yaml", "--dataset_dir", str(data), "--output_dir", str(output),
         "--max_steps", "2", "--max_eval_samples", "3", "--generation_max_length", "12",
         "--logging_steps", "1"],
    ]
    for step in steps:
        subprocess.run([sys.executable, *step], cwd=ROOT, env=env, check=True, timeout=900)
    result = subprocess.run(
        [sys.executable, "-m", "r2gen_hf.demo", str(output), "--dataset_dir", str(data)],
        cwd=ROOT, env=env, timeout=600, capture_output=True, text=True,
    )

    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics) == {"test", "baseline"}
    from r2gen_hf.metrics import CE_METRIC_KEYS, NLG_METRIC_KEYS

    for scores in metrics.values():
        assert set(NLG_METRIC_KEYS) | set(CE_METRIC_KEYS) | {"ce_micro_f1_synthetic"} <= scores.keys()
        assert scores["num_studies"] == 3
    goals = compare_with_baseline(metrics["test"], metrics["baseline"])
    summary = (output / "summary.md").read_text()
    # The pipeline worked (exit 0); whether two steps beat the baseline is reported, not assumed.
    assert result.returncode == 0, result.stderr[-3000:]
    assert "regenerates the first 3 test reports (the run's first batch): identical" in summary, summary
    for goal, line in (("ce_goal_met", "- CE micro-F1 against"), ("bleu_4_goal_met", "- BLEU-4 above")):
        reported = next(text for text in summary.splitlines() if text.startswith(line))
        assert ("not met" in reported) != goals[goal], reported

    rows = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"id", "prediction", "reference", "finding_labels"} <= row.keys() for row in rows)
    assert rows[0]["prediction"] in summary and rows[0]["reference"] in summary
    assert (output / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "adapter_model.safetensors").exists() and (output / "r2gen_base.json").exists()
    assert json.loads((output / "r2gen_base.json").read_text())["vision_model"] == "r2gen_hf:swin-demo"
