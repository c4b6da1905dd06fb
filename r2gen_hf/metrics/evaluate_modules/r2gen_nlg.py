"""`evaluate` module: BLEU-1..4, METEOR, ROUGE-L and CIDEr, each as pycocoevalcap's scorer computes it.

The numbers come from `r2gen_hf.metrics.nlg.compute_nlg_metrics` (protocol in that module's docstring): one full
cleaned reference report per prediction, strings scored as given (no PTB tokenizer), as in R2Gen/R2GenGPT.
Load it offline with `r2gen_hf.metrics.load_metric("nlg")` or `evaluate.load(<path of this file>)`.
"""

import evaluate

from r2gen_hf.metrics.nlg import compute_nlg_metrics
from r2gen_hf.metrics.evaluate_modules import report_metric_info


_DESCRIPTION = (
    "BLEU-1..4, METEOR, ROUGE-L and CIDEr, each as pycocoevalcap's scorer computes it, "
    "equal to the COCO-caption scorer on the same strings."
)

_CITATION = "Chen et al., Microsoft COCO Captions: Data Collection and Evaluation Server, arXiv:1504.00325, 2015."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated reports (str), scored as given; an empty one counts as an empty string.
    references: list of reference reports (str), one per prediction, full and non-empty.
Returns:
    dict with `bleu_1`..`bleu_4`, `meteor`, `rouge_l`, `cider` (`cider` in [0, 10], the others
    in [0, 1]); `meteor=False` leaves METEOR (and Java) out.
Examples:
    >>> metric = r2gen_hf.metrics.load_metric("nlg")
    >>> metric.compute(predictions=["the lungs are clear ."], references=["the lungs are clear ."])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2genNlg(evaluate.Metric):
    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, "https://github.com/salaniz/pycocoevalcap")

    def _compute(self, predictions, references, meteor=True):
        return compute_nlg_metrics(predictions, references, meteor=meteor)
