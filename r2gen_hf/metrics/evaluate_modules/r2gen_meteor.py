"""`evaluate` module: METEOR 1.5 (`-l en -norm`, corpus score) by pycocoevalcap's jar; needs Java.

The numbers come from `r2gen_hf.metrics.nlg.meteor_score` (protocol in that module's docstring): one full
cleaned reference report per prediction, strings scored as given (no PTB tokenizer), as in R2Gen/R2GenGPT.
Load it offline with `r2gen_hf.metrics.load_metric("meteor")` or `evaluate.load(<path of this file>)`.
"""

import evaluate

from r2gen_hf.metrics.nlg import meteor_score
from r2gen_hf.metrics.evaluate_modules import report_metric_info


_DESCRIPTION = (
    "METEOR 1.5 (`-l en -norm`, corpus score) by pycocoevalcap's jar; needs Java, "
    "equal to the COCO-caption scorer on the same strings."
)

_CITATION = (
    "Denkowski and Lavie, Meteor Universal: Language Specific Translation Evaluation for Any Target Language, "
    "WMT 2014."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated reports (str), scored as given; an empty one counts as an empty string.
    references: list of reference reports (str), one per prediction, full and non-empty.
Returns:
    dict with `meteor` (float in [0, 1]).
Examples:
    >>> metric = r2gen_hf.metrics.load_metric("meteor")
    >>> metric.compute(predictions=["the lungs are clear ."], references=["the lungs are clear ."])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2genMeteor(evaluate.Metric):
    def _info(self):
        return report_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, "https://github.com/salaniz/pycocoevalcap")

    def _compute(self, predictions, references):
        return {"meteor": meteor_score(predictions, references)}
