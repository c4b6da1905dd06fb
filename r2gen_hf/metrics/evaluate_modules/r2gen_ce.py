"""`evaluate` module: clinical efficacy (CE), CheXpert-observation precision / recall / F1 of generated reports.

The numbers come from `r2gen_hf.metrics.clinical.compute_ce_metrics` (protocol in that module's docstring): both
reports labeled with the 14 CheXpert observations by `labeler` ("rule": our rule-based CheXpert-style labeler,
offline; "chexbert": CheXbert through `f1chexbert`, weights from the Hub), positive-vs-rest, micro and macro over
the 14 observations and (suffix `_5`) over Atelectasis, Cardiomegaly, Consolidation, Edema and Pleural Effusion.
The result names the labeler (`labeler`), so rule-based CE is never mistaken for CheXbert CE.
Load it offline with `r2gen_hf.metrics.load_metric("ce")` or `evaluate.load(<path of this file>)`.
"""

import evaluate

from r2gen_hf.metrics.clinical import compute_ce_metrics
from r2gen_hf.metrics.evaluate_modules import report_metric_info

_DESCRIPTION = (
    "Clinical efficacy: the 14 CheXpert observations read from generated and reference reports (rule-based "
    "CheXpert-style labeler offline, or CheXbert), compared as micro/macro precision, recall and F1."
)

_CITATION = (
    "Irvin et al., CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison, "
    "AAAI 2019; Smit et al., CheXbert, EMNLP 2020."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated reports (str).
    references: list of reference reports (str), one per prediction, full and non-empty.
    labeler: "rule" (default, offline) or "chexbert" (needs `pip install f1chexbert` and its Hub weights).
    uncertain: "negative" (default: an observation is positive iff labeled 1) or "positive" (-1 counts too).
Returns:
    dict with `ce_micro_precision`, `ce_micro_recall`, `ce_micro_f1`, `ce_macro_precision`, `ce_macro_recall`,
    `ce_macro_f1`, the same with suffix `_5`, all in [0, 1], and `labeler` (the labeler's name).
Examples:
    >>> metric = r2gen_hf.metrics.load_metric("ce")
    >>> metric.compute(predictions=["mild cardiomegaly ."], references=["the heart is enlarged ."])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2genCe(evaluate.Metric):
    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, "https://github.com/stanfordmlgroup/chexpert-labeler")

    def _compute(self, predictions, references, labeler="rule", uncertain="negative"):
        return compute_ce_metrics(predictions, references, labeler=labeler, uncertain=uncertain)
