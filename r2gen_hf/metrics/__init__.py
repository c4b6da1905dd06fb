"""Evaluation metrics for generated reports.

* `nlg`: BLEU-1..4, METEOR, ROUGE-L and CIDEr, equal to pycocoevalcap's COCO-caption scorers
  (`compute_nlg_metrics`; see `r2gen_hf.metrics.nlg` for the exact protocol).
* `clinical`: clinical efficacy (CE): the 14 CheXpert observations from reports (`label_reports`, with a
  rule-based offline labeler or CheXbert), CE precision / recall / F1 (`compute_ce_metrics`), RadGraph F1
  when `radgraph` is installed, and `compute_report_metrics` (NLG + CE + optional bootstrap intervals).
* `bootstrap`: seeded percentile bootstrap confidence intervals (`bootstrap_ci`, `nlg_bootstrap_ci`).
* `evaluate_modules`: each metric as an `evaluate` module inside the package, loadable offline with
  `load_metric(name)` or `evaluate.load(str(METRIC_MODULES[name]))`.
"""

from .bootstrap import bootstrap_ci, nlg_bootstrap_ci, percentile_interval, resample_indices
from .clinical import (
    CE_METRIC_KEYS,
    CHEXPERT_5_OBSERVATIONS,
    CHEXPERT_OBSERVATIONS,
    SYNTHETIC_OBSERVATIONS,
    SYNTHETIC_TO_CHEXPERT,
    CheXbertLabeler,
    RuleBasedLabeler,
    ce_bootstrap_ci,
    ce_metrics_from_labels,
    compute_ce_metrics,
    compute_radgraph_f1,
    compute_report_metrics,
    get_labeler,
    label_reports,
    labels_from_findings,
)
from .evaluate_modules import METRIC_MODULES, load_metric
from .nlg import (
    NLG_METRIC_KEYS,
    MeteorScorer,
    bleu_scores,
    cider_score,
    close_meteor_scorer,
    compute_nlg_metrics,
    get_meteor_scorer,
    meteor_score,
    rouge_l_score,
)


__all__ = [
    "CE_METRIC_KEYS",
    "CHEXPERT_5_OBSERVATIONS",
    "CHEXPERT_OBSERVATIONS",
    "CheXbertLabeler",
    "RuleBasedLabeler",
    "SYNTHETIC_OBSERVATIONS",
    "SYNTHETIC_TO_CHEXPERT",
    "bootstrap_ci",
    "ce_bootstrap_ci",
    "ce_metrics_from_labels",
    "compute_ce_metrics",
    "compute_radgraph_f1",
    "compute_report_metrics",
    "get_labeler",
    "label_reports",
    "labels_from_findings",
    "nlg_bootstrap_ci",
    "percentile_interval",
    "resample_indices",
    "METRIC_MODULES",
    "MeteorScorer",
    "NLG_METRIC_KEYS",
    "bleu_scores",
    "cider_score",
    "close_meteor_scorer",
    "compute_nlg_metrics",
    "get_meteor_scorer",
    "load_metric",
    "meteor_score",
    "rouge_l_score",
]
