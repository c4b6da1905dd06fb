"""`evaluate` module: ROUGE-L (LCS F-measure, beta 1.2, averaged over studies) as pycocoevalcap's `Rouge` computes it.

The numbers come from `r2gen_hf.metrics.nlg.rouge_l_score` (protocol in that module's docstring): one full
cleaned reference report per prediction, strings scored as given (no PTB tokenizer), as in R2Gen/R2GenGPT.
Load it offline with `r2gen_hf.metrics.load_metric("rouge_l")` or `evaluate.load(<path of this file>)`.
"""

import evaluate

from r2gen_hf.metrics.nlg import rouge_l_score
from r2gen_hf.metrics.evaluate_modules import report_metric_info


_DESCRIPTION = (
    "ROUGE-L (LCS F-measure, beta 1.2, averaged over studies) as pycocoevalcap's `Rouge` computes it, "
    "equal to the COCO-caption scorer on the same strings."
)

_CITATION = "Lin, ROUGE: A Package for Automatic Evaluation of Summaries, ACL Workshop 2004."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated reports (str), scored as given; an empty one counts as an empty string.
    references: list of reference reports (str), one per prediction, full and non-empty.
Returns:
    dict with `rouge_l` (float in [0, 1]).
Examples:
    >>> metric = r2gen_hf.metrics.load_metric("rouge_l")
    >>> metric.compute(predictions=["the lungs are clear ."], references=["the lungs are clear ."])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2genRougeL(evaluate.Metric):
    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, "https://github.com/salaniz/pycocoevalcap")

    def _compute(self, predictions, references):
        return {"rouge_l": rouge_l_score(predictions, references)}
