"""`evaluate` module: CIDEr-D (idf from the scored references, x10) as pycocoevalcap's `Cider` computes it.

The numbers come from `r2gen_hf.metrics.nlg.cider_score` (protocol in that module's docstring): one full
cleaned reference report per prediction, strings scored as given (no PTB tokenizer), as in R2Gen/R2GenGPT.
Load it offline with `r2gen_hf.metrics.load_metric("cider")` or `evaluate.load(<path of this file>)`.
"""

import evaluate

from r2gen_hf.metrics.nlg import cider_score
from r2gen_hf.metrics.evaluate_modules import report_metric_info


_DESCRIPTION = (
    "CIDEr-D (idf from the scored references, x10) as pycocoevalcap's `Cider` computes it, "
    "equal to the COCO-caption scorer on the same strings."
)

_CITATION = "Vedantam, Zitnick and Parikh, CIDEr: Consensus-based Image Description Evaluation, CVPR 2015."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated reports (str), scored as given; an empty one counts as an empty string.
    references: list of reference reports (str), one per prediction, full and non-empty.
Returns:
    dict with `cider` (float in [0, 10]).
Examples:
    >>> metric = r2gen_hf.metrics.load_metric("cider")
    >>> metric.compute(predictions=["the lungs are clear ."], references=["the lungs are clear ."])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2genCider(evaluate.Metric):
    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, "https://github.com/salaniz/pycocoevalcap")

    def _compute(self, predictions, references):
        return {"cider": cider_score(predictions, references)}
