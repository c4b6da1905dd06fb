"""The offline demo: its baseline and scoring (fast), and a shortened `make demo` end to end (slow: the real
Gemma 3 270M)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r2gen_hf.demo import compare_with_baseline, most_frequent_report, score_reports

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


@pytest.mark.slow
def test_shortened_demo_end_to_end(tmp_path):
    """The Makefile's demo steps, shortened (few studies, 2 steps, short reports), on the real Gemma 3 270M."""
    data, output = tmp_path / "data", tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    steps = [
        ["-m", "data_prep.synthetic", "--output", str(data), "--num_studies", "30", "--seed", "1", "--image_size", "64"],
        ["finetune.py", "configs/demo.yaml", "--dataset_dir", str(data), "--output_dir", str(output),
         "--max_steps", "2", "--max_eval_samples", "3", "--generation_max_length", "12", "--logging_steps", "1"],
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
    assert "regenerates the first test report: identical" in summary, summary
    for goal, line in (("ce_goal_met", "- CE micro-F1 against"), ("bleu_4_goal_met", "- BLEU-4 above")):
        reported = next(text for text in summary.splitlines() if text.startswith(line))
        assert ("not met" in reported) != goals[goal], reported

    rows = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"id", "prediction", "reference", "finding_labels"} <= row.keys() for row in rows)
    assert rows[0]["prediction"] in summary and rows[0]["reference"] in summary
    assert (output / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "adapter_model.safetensors").exists() and (output / "r2gen_base.json").exists()
    assert json.loads((output / "r2gen_base.json").read_text())["vision_model"] == "r2gen_hf:swin-demo"
