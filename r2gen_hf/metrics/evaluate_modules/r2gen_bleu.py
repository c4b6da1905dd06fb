"""`evaluate` module: BLEU-1..4 (corpus level, `closest` reference length) as pycocoevalcap's `Bleu(4)` computes it.

The numbers come from `r2gen_hf.metrics.nlg.bleu_scores` (protocol in that module's docstring): one full
cleaned reference report per prediction, strings scored as given (no PTB tokenizer), as in R2Gen/R2GenGPT.
Load it offline with `r2gen_hf.metrics.load_metric("bleu")` or `evaluate.load(<path of this file>)`.
"""

import evaluate

from r2gen_hf.metrics.nlg import bleu_scores
from r2gen_hf.metrics.evaluate_modules import report_metric_info


_DESCRIPTION = (
    "BLEU-1..4 (corpus level, `closest` reference length) as pycocoevalcap's `Bleu(4)` computes it, "
    "equal to the COCO-caption scorer on the same strings."
)

_CITATION = "Papineni et al., BLEU: a Method for Automatic Evaluation of Machine Translation, ACL 2002."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated reports (str), scored as given; an empty one counts as an empty string.
    references: list of reference reports (str), one per prediction, full and non-empty.
Returns:
    dict with `bleu_1`, `bleu_2`, `bleu_3`, `bleu_4` (floats in [0, 1]).
Examples:
    >>> metric = r2gen_hf.metrics.load_metric("bleu")
    >>> metric.compute(predictions=["the lungs are clear ."], references=["the lungs are clear ."])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2genBleu(evaluate.Metric):
    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, "https://github.com/salaniz/pycocoevalcap")

    def _compute(self, predictions, references):
        return bleu_scores(predictions, references)
