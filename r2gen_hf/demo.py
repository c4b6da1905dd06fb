"""The offline demo: a small randomly initialised Swin as a named model source, the most-frequent-report
baseline, and the demo's report (metrics against the baseline, curves plot, markdown summary).

`make demo` runs `data_prep.synthetic`, then `finetune.py configs/demo.yaml`, then `python -m r2gen_hf.demo`.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import load_from_disk
from tqdm.auto import tqdm
from transformers import SwinConfig, SwinModel

from .checkpoints import BASE_RECORD, load_trained_model
from .cli_logging import configure_logging
from .data import R2GenDataCollator
from .gemma3_270m import cache_root
from .inference import read_results
from .metrics import (
    SYNTHETIC_OBSERVATIONS,
    ce_metrics_from_labels,
    compute_report_metrics,
    label_reports,
    labels_from_findings,
)
from .testing import tiny_image_processor


logger = logging.getLogger(__name__)

CE_RATIO_GOAL = 1.5  # the demo's CE micro-F1 (synthetic labels) must be at least this multiple of the baseline's
SUMMARY_METRICS = {
    "ce_micro_f1_synthetic": "CE micro-F1, synthetic ground truth",
    "ce_macro_f1_synthetic": "CE macro-F1, synthetic ground truth",
    "ce_micro_f1": "CE micro-F1, labels of the reference reports (14 obs.)",
    "bleu_1": "BLEU-1",
    "bleu_4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
}
EVAL_CURVES = {"bleu_4": "BLEU-4", "cider": "CIDEr", "ce_micro_f1": "CE micro-F1 (14 obs.)"}
TIMINGS = {"train_runtime": "Training time", "test_runtime": "Test-split generation and scoring time"}

# A 3-stage Swin for 64 px views (the processor downsizes the synthetic set's 128 px images): 16x16 patches of
# 4 px, merged twice into 4x4 = 16 visual tokens of width 128 per view.
DEMO_SWIN_CONFIG = {
    "image_size": 64,
    "patch_size": 4,
    "num_channels": 3,
    "embed_dim": 32,
    "depths": [2, 2, 2],
    "num_heads": [1, 2, 4],
    "window_size": 4,
}
DEMO_SWIN_SEED = 0


@dataclass
class FindingPretrainingConfig:
    """The demo Swin's pretraining, the stand-in for R2GenGPT's ImageNet-pretrained Swin.

    A separate synthetic set (`seed` differs from the demo's data seed 0, so no demo study is seen) and a
    target that makes the findings dominate the visual tokens: each study's tokens (views averaged, as the
    model's `view_combination="mean"` does) are regressed onto the layer-normalised sum of fixed random
    per-finding codes. Measured on the demo's validation split (a random projector + LayerNorm on top): the
    labels explain 74% of the tokens' between-study variance after these 400 steps (cardiomegaly and the
    effusions; the small pneumothoraces and nodules hardly at 64 px), 6% for the random Swin. The language
    model only learned to read the images once they dominated the tokens (README, "`make demo`")."""

    num_studies: int = 800
    seed: int = 12345
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20


def finding_codes(num_findings: int, num_tokens: int, width: int, seed: int) -> torch.Tensor:
    """`(num_findings + 1, num_tokens, width)` fixed random codes, the last one present in every study."""
    return torch.randn(num_findings + 1, num_tokens, width, generator=torch.Generator().manual_seed(seed))


def finding_targets(labels: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """`labels` `(B, num_findings)` 0/1 -> `(B, num_tokens, width)`: LN(always-on code + the codes of the study's
    findings)."""
    present = torch.cat([labels, labels.new_ones(labels.shape[0], 1)], dim=1)  # (B, F + 1)
    return F.layer_norm(torch.einsum("bf,fld->bld", present, codes), codes.shape[-1:])


def study_tokens(swin: SwinModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """`(B, V, C, H, W)` -> `(B, L, D)`: each view encoded, then the views averaged."""
    batch_size, num_views = pixel_values.shape[:2]
    tokens = swin(pixel_values=pixel_values.flatten(0, 1)).last_hidden_state  # (B * V, L, D)
    return tokens.view(batch_size, num_views, *tokens.shape[1:]).mean(dim=1)


def pretrain_on_findings(
    swin: SwinModel, pixel_values: torch.Tensor, labels: torch.Tensor, config: FindingPretrainingConfig
) -> list[float]:
    """Trains `swin` in place (AdamW, warmup then cosine, bf16 autocast) so that each study's visual tokens
    match `finding_targets`. `pixel_values` `(N, V, C, H, W)`, `labels` `(N, num_findings)`. Returns the loss
    of every step."""
    with torch.no_grad():
        num_tokens, width = study_tokens(swin, pixel_values[:1]).shape[1:]
    codes = finding_codes(labels.shape[1], num_tokens, width, config.seed)
    optimizer = torch.optim.AdamW(swin.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / config.steps)),
    )
    generator = torch.Generator().manual_seed(config.seed)
    swin.train()
    losses = []
    for _ in tqdm(range(config.steps), desc="Pretraining the demo Swin on findings", unit="step"):
        batch = torch.randint(0, len(pixel_values), (config.batch_size,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tokens = study_tokens(swin, pixel_values[batch]).float()  # (B, L, D)
        loss = F.mse_loss(tokens, finding_targets(labels[batch], codes))
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def pretraining_inputs(processor, config: FindingPretrainingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The pretraining set: `(N, 2, C, H, W)` pixel values of `config.num_studies` synthetic studies and their
    `(N, num_findings)` labels."""
    from data_prep.synthetic import FINDINGS, generate_studies

    studies = generate_studies(config.num_studies, seed=config.seed)
    views = [image.convert("RGB") for study in studies for image in study.images]
    pixel_values = processor(views, return_tensors="pt")["pixel_values"]  # (N * 2, C, H, W)
    labels = torch.tensor([[name in study.finding_labels for name in FINDINGS] for study in studies], dtype=torch.float32)
    return pixel_values.view(len(studies), -1, *pixel_values.shape[1:]), labels


def demo_swin_path(pretraining: FindingPretrainingConfig | None = None) -> Path:
    """A directory with the demo's Swin and its image processor, built once and cached: seeded random weights,
    then `pretrain_on_findings` (about a minute on two CPU cores).

    A named source rather than an in-memory model, so that the demo goes through the same
    `from_vision_text_pretrained` path as a real checkpoint, and `r2gen_base.json` can name it.
    """
    pretraining = pretraining or FindingPretrainingConfig()
    recipe = [DEMO_SWIN_CONFIG, DEMO_SWIN_SEED, asdict(pretraining)]
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_root() / f"swin-demo-{digest}"
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".swin-demo-", dir=target.parent))
    torch.manual_seed(DEMO_SWIN_SEED)
    swin = SwinModel(SwinConfig(**DEMO_SWIN_CONFIG))
    processor = tiny_image_processor(DEMO_SWIN_CONFIG["image_size"])  # Swin's resize + ImageNet normalisation
    if pretraining.steps:
        logger.info("Building the demo Swin once (cached in %s): %s", target, pretraining)
        losses = pretrain_on_findings(swin, *pretraining_inputs(processor, pretraining), pretraining)
        logger.info("Finding pretraining loss: %.3f -> %.3f", losses[0], losses[-1])
    swin.eval().save_pretrained(staging)
    processor.save_pretrained(staging)
    os.replace(staging, target)
    return target


# -------------------------------------------------------------------------------------------- report


def most_frequent_report(reports: Sequence[str]) -> str:
    """The most frequent report; ties go to the one seen first (the baseline is deterministic)."""
    if not reports:
        raise ValueError("No training reports to choose a baseline from.")
    return Counter(reports).most_common(1)[0][0]  # most_common keeps first-seen order among equal counts


def score_reports(predictions: Sequence[str], references: Sequence[str], finding_labels: Sequence[Sequence[str]]) -> dict:
    """`compute_report_metrics` (NLG, and CE with both sides labeled by the rule labeler), plus CE against the
    synthetic set's ground truth (`ce_*_synthetic`: generated reports labeled, references not needed) over
    `SYNTHETIC_OBSERVATIONS`."""
    if len(finding_labels) != len(predictions):
        raise ValueError(f"Got {len(predictions)} predictions but {len(finding_labels)} studies' finding labels.")
    metrics = compute_report_metrics(predictions, references, labeler="rule")
    truth = [labels_from_findings(labels) for labels in finding_labels]
    metrics.update(
        ce_metrics_from_labels(
            label_reports(predictions, "rule"), truth, observation_groups={"_synthetic": SYNTHETIC_OBSERVATIONS}
        )
    )
    metrics["num_studies"] = len(predictions)
    return metrics


def compare_with_baseline(test: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's bar: CE micro-F1 over the synthetic labels at least `CE_RATIO_GOAL` times the baseline's,
    and BLEU-4 above the baseline's."""
    ce, ce_baseline = test["ce_micro_f1_synthetic"], baseline["ce_micro_f1_synthetic"]
    if ce_baseline > 0:
        ratio = ce / ce_baseline
    else:  # a baseline with no correct finding: any correct one is infinitely better, none is no better
        ratio = float("inf") if ce > 0 else 0.0
    return {
        "ce_micro_f1_synthetic_ratio": ratio,
        "ce_goal_met": ratio >= CE_RATIO_GOAL,
        "bleu_4_goal_met": test["bleu_4"] > baseline["bleu_4"],
    }


def plot_training_curves(log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """A PNG of the training loss (and learning rate) per step, and of the evaluation metrics when the run
    evaluated during training."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    train = [entry for entry in log_history if "loss" in entry and "step" in entry]
    evals = [entry for entry in log_history if "eval_bleu_4" in entry]
    figure, (loss_axis, eval_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([e["step"] for e in train], [e["loss"] for e in train], marker=".", label="training loss")
    loss_axis.set(xlabel="step", ylabel="cross-entropy (nats / report token)", title="Training")
    if train and "learning_rate" in train[0]:
        rate_axis = loss_axis.twinx()
        rate_axis.plot([e["step"] for e in train], [e["learning_rate"] for e in train], color="grey", alpha=0.5)
        rate_axis.set_ylabel("learning rate", color="grey")
    loss_axis.legend(loc="upper right")
    if evals:
        for key, label in EVAL_CURVES.items():
            if f"eval_{key}" in evals[0]:
                eval_axis.plot([e["step"] for e in evals], [e[f"eval_{key}"] for e in evals], marker="o", label=label)
        eval_axis.legend()
    else:
        eval_axis.text(0.5, 0.5, "no evaluation during training", ha="center", va="center", transform=eval_axis.transAxes)
    eval_axis.set(xlabel="step", ylabel="score", title="Validation (generated reports)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def check_reload(
    output_dir: str | os.PathLike, studies: Sequence[Mapping[str, Any]], expected: Sequence[str]
) -> list[tuple[str, str]]:
    """Loads the saved model as a user would (`load_trained_model`), regenerates the reports of `studies` in one
    batch with the saved generation config, and returns the `(written during the run, regenerated)` pairs that
    differ: none when the saved model reproduces the run.

    Pass the run's first evaluation batch (the same studies, the same batch size): the model is reloaded as the
    run generated, the base in the dtype it was trained in (recorded in `r2gen_base.json`) with the adapters
    unmerged. In bf16 a different batch size, merged LoRA or float32 compute moves the logits by more than
    rounding and can flip a greedy choice (measured on a bf16 run: the first report differed at batch size 1,
    6 of 16 with float32 compute and merged LoRA), which would say nothing about what was saved."""
    record = json.loads(Path(output_dir, BASE_RECORD).read_text())
    model, processor = load_trained_model(output_dir, dtype=record.get("dtype", "float32"), merge=False)
    batch = R2GenDataCollator(processor, include_reports=False)(list(studies))
    with torch.no_grad():
        sequences = model.generate(**batch)
    reports = processor.batch_decode(sequences[:, batch["input_ids"].shape[1] :])  # (B,) new tokens only
    return [(old, new) for old, new in zip(expected, reports) if old != new]


def write_summary(
    path: str | os.PathLike,
    metrics: Mapping[str, Mapping[str, Any]],
    comparison: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    baseline_report: str,
    reload_differences: Sequence[tuple[str, str]],
    reloaded: int,
    timings: Mapping[str, float],
    num_examples: int = 4,
) -> None:
    """A short markdown page: the scores against the baseline, whether the reloaded model reproduces its
    first report, and a few generated reports next to their references and true findings."""
    test, baseline = metrics["test"], metrics["baseline"]
    lines = [
        "# r2gen-hf offline demo",
        "",
        "A small Swin (pretrained on a separate synthetic set to see the findings, then frozen) + projector + "
        "Gemma 3 270M with LoRA, fine-tuned on the synthetic chest X-ray set (`data_prep.synthetic`) on this "
        "machine's CPU. Synthetic images and template reports: this shows the pipeline working end to end, not "
        "clinical performance.",
        "",
        f"Test split: {test['num_studies']} studies. Baseline: the most frequent training report, written for every study.",
        "",
        "| metric | fine-tuned | baseline |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {test[key]:.3f} | {baseline[key]:.3f} |" for key, label in SUMMARY_METRICS.items()]
    ratio = comparison["ce_micro_f1_synthetic_ratio"]
    lines += [
        "",
        f"- CE micro-F1 against the synthetic ground truth: {ratio:.2f}x the baseline's (goal: at least {CE_RATIO_GOAL}x) — "
        + ("met" if comparison["ce_goal_met"] else "**not met**"),
        "- BLEU-4 above the baseline's: " + ("met" if comparison["bleu_4_goal_met"] else "**not met**"),
        f"- CE labels come from `{test['labeler']}` (rule-based, offline), not CheXbert.",
        f"- Reloaded from disk with `load_trained_model`, the model regenerates the first {reloaded} test reports "
        "(the run's first batch): "
        + (f"**{len(reload_differences)} different**, e.g. {reload_differences[0][1]!r} instead of {reload_differences[0][0]!r}"
           if reload_differences else "identical"),
    ]
    lines += [f"- {label}: {timings[key]:.0f} s" for key, label in TIMINGS.items() if key in timings]
    lines += ["", f"Baseline report: *{baseline_report}*", "", "## Generated reports", ""]
    for row in rows[:num_examples]:
        findings = ", ".join(row["finding_labels"]) or "none (normal)"
        lines += [
            f"**{row['id']}** — true findings: {findings}",
            "",
            f"- generated: {row['prediction']}",
            f"- reference: {row['reference']}",
            "",
        ]
    lines += ["Curves: `training_curves.png`. All numbers: `metrics.json`. Every report: `predictions.jsonl`.", ""]
    Path(path).write_text("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Scores the demo run against the baseline and writes its report.")
    parser.add_argument("output_dir", help="finetune.py's output_dir for configs/demo.yaml (e.g. outputs/demo).")
    parser.add_argument("--dataset_dir", required=True, help="The synthetic set the run was trained on.")
    parser.add_argument("--test_split", default="test")
    parser.add_argument(
        "--eval_batch_size", type=int, default=16,
        help="The run's per_device_eval_batch_size (configs/demo.yaml): its first test batch is regenerated as batched.",
    )
    parser.add_argument(
        "--require_goals", action="store_true",
        help=f"Exit non-zero unless CE micro-F1 (synthetic labels) is at least {CE_RATIO_GOAL}x the baseline's and BLEU-4 beats it.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.INFO, show_time=False)
    output = Path(args.output_dir)
    predictions_file = output / args.test_split / "predictions.jsonl"
    if not predictions_file.exists():
        raise FileNotFoundError(f"{predictions_file} is missing: run `finetune.py configs/demo.yaml` (with do_predict) first.")

    # 1. The run's test predictions, with each study's true findings.
    dataset = load_from_disk(args.dataset_dir)
    split = dataset[args.test_split]
    findings = dict(zip(split["id"], split["finding_labels"]))
    rows = [{**row, "finding_labels": findings[row["id"]]} for row in read_results(predictions_file)]
    references = [row["reference"] for row in rows]
    truth = [row["finding_labels"] for row in rows]

    # 2. The run and the baseline, scored the same way.
    baseline_report = most_frequent_report(dataset["train"]["report"])
    metrics = {
        "test": score_reports([row["prediction"] for row in rows], references, truth),
        "baseline": score_reports([baseline_report] * len(rows), references, truth),
    }
    comparison = compare_with_baseline(metrics["test"], metrics["baseline"])

    # 3. The saved model reloads and rewrites the run's first batch of test reports.
    first_batch = rows[: args.eval_batch_size]
    positions = {study_id: position for position, study_id in enumerate(split["id"])}
    studies = [split[positions[row["id"]]] for row in first_batch]
    reload_differences = check_reload(output, studies, [row["prediction"] for row in first_batch])

    # 4. Files: metrics, predictions, curves, summary.
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(output / "predictions.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    state = json.loads((output / "trainer_state.json").read_text())
    plot_training_curves(state["log_history"], output / "training_curves.png")
    timings = {}
    for name in ("train_results.json", "test_results.json"):
        if (output / name).exists():
            timings.update(json.loads((output / name).read_text()))
    write_summary(
        output / "summary.md", metrics, comparison, rows, baseline_report, reload_differences, len(first_batch), timings
    )

    goals_met = comparison["ce_goal_met"] and comparison["bleu_4_goal_met"]
    logger.log(
        logging.INFO if goals_met else logging.WARNING,
        "CE micro-F1 (synthetic labels) %.3f vs baseline %.3f (%.2fx, goal %.1fx); BLEU-4 %.3f vs %.3f: goals %s. See %s.",
        metrics["test"]["ce_micro_f1_synthetic"], metrics["baseline"]["ce_micro_f1_synthetic"],
        comparison["ce_micro_f1_synthetic_ratio"], CE_RATIO_GOAL, metrics["test"]["bleu_4"], metrics["baseline"]["bleu_4"],
        "met" if goals_met else "NOT met", output / "summary.md",
    )
    if reload_differences:
        logger.error(
            "The reloaded model wrote %d of the first %d test reports differently, e.g. %r instead of %r.",
            len(reload_differences), len(first_batch), reload_differences[0][1], reload_differences[0][0],
        )
        return 1
    return 1 if args.require_goals and not goals_met else 0


if __name__ == "__main__":
    sys.exit(main())
