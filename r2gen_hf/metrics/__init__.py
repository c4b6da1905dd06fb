"""Evaluation metrics for generated reports.

* `nlg`: BLEU-1..4, METEOR, ROUGE-L and CIDEr, equal to pycocoevalcap's COCO-caption scorers
  (`compute_nlg_metrics`; see `r2gen_hf.metrics.nlg` for the exact protocol).
* `evaluate_modules`: each metric as an `evaluate` module inside the package, loadable offline with
  `load_metric(name)` or `evaluate.load(str(METRIC_MODULES[name]))`.
"""

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
