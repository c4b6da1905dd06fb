"""Scoring speed per 1,000 reports: our NLG scorers (`r2gen_hf.metrics.compute_nlg_metrics`) vs pycocoevalcap's
own classes (Bleu, Meteor, Rouge, Cider, called as R2Gen does), and the rule-based CE labeler.

Predictions and references are distinct cleaned reports (`labeler_speed.make_reports` with two seeds).
Ours is timed cold (the first call starts the METEOR JVM) and warm (the JVM is kept alive); pycocoevalcap's
`Meteor()` starts a JVM on every instance. Both must give the same numbers (`max_abs_difference`).
"""

import logging
import time

from r2gen_hf.data import clean_report

from . import labeler_speed


logger = logging.getLogger(__name__)


def pycocoevalcap_scores(predictions: list[str], references: list[str], meteor: bool = True) -> tuple[dict, dict]:
    """pycocoevalcap's scores and the seconds each scorer took (METEOR including its JVM start)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [reference] for i, reference in enumerate(references)}
    res = {i: [prediction] for i, prediction in enumerate(predictions)}
    scorers = [("bleu", Bleu(4)), ("rouge_l", Rouge()), ("cider", Cider())]
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.append(("meteor", None))
    scores, seconds = {}, {}
    for name, scorer in scorers:
        start = time.perf_counter()
        scorer = scorer if scorer is not None else Meteor()
        value, _ = scorer.compute_score(gts, res)
        seconds[name] = time.perf_counter() - start
        if name == "bleu":
            scores.update({f"bleu_{n + 1}": v for n, v in enumerate(value)})
        else:
            scores[name] = float(value)
        close = getattr(scorer, "close", None)  # pycocoevalcap's Meteor: stop its JVM
        if close is not None:
            close()
    return scores, seconds


def run(num_reports: int = 1000, meteor: bool = True) -> dict:
    from r2gen_hf.metrics import close_meteor_scorer, compute_nlg_metrics

    references = [clean_report(text) for text in labeler_speed.make_reports(num_reports, seed=0)]
    predictions = [clean_report(text) for text in labeler_speed.make_reports(num_reports, seed=1)]
    per_1000 = 1000 / num_reports

    close_meteor_scorer()
    start = time.perf_counter()
    ours = compute_nlg_metrics(predictions, references, meteor=meteor)
    ours_cold = time.perf_counter() - start
    start = time.perf_counter()
    compute_nlg_metrics(predictions, references, meteor=meteor)
    ours_warm = time.perf_counter() - start

    theirs, seconds = pycocoevalcap_scores(predictions, references, meteor=meteor)
    theirs_total = sum(seconds.values())
    labeling = labeler_speed.time_labeling(predictions)
    return {
        "num_reports": num_reports,
        "meteor": meteor,
        "ours_seconds_per_1000_cold": round(ours_cold * per_1000, 3),
        "ours_seconds_per_1000_warm": round(ours_warm * per_1000, 3),
        "pycocoevalcap_seconds_per_1000": round(theirs_total * per_1000, 3),
        "pycocoevalcap_seconds_by_scorer": {name: round(value * per_1000, 3) for name, value in seconds.items()},
        "speedup_warm": round(theirs_total / ours_warm, 2),
        "max_abs_difference": max(abs(ours[key] - theirs[key]) for key in ours),
        "scores": {key: round(value, 6) for key, value in ours.items()},
        "ce_rule_labeler_seconds_per_1000": labeling["seconds_per_1000_reports"],
    }
