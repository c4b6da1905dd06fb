"""Our metrics as `evaluate` modules: one script per metric in this folder, each a subclass of
`evaluate.Metric` whose `_compute` calls the scorer functions of `r2gen_hf.metrics` (the math lives there,
once). Hub names such as "bleu" need the network; these load offline from their local path:

    import evaluate
    from r2gen_hf.metrics import METRIC_MODULES, load_metric

    bleu = load_metric("bleu")                      # = evaluate.load(str(METRIC_MODULES["bleu"]))
    bleu.compute(predictions=[...], references=[...])  # {"bleu_1": ..., ..., "bleu_4": ...}

The scripts are named `r2gen_*` so that they never shadow the Hub's modules in evaluate's module cache
(offline, `evaluate.load("bleu")` falls back to a cached module of that name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


MODULE_DIR = Path(__file__).resolve().parent

# name -> path of the module script. Every module takes `predictions` and `references` (lists of strings,
# one reference report per prediction); the NLG ones return keys of `r2gen_hf.metrics.compute_nlg_metrics`,
# "ce" those of `r2gen_hf.metrics.compute_ce_metrics`.
METRIC_MODULES: dict[str, Path] = {
    "bleu": MODULE_DIR / "r2gen_bleu.py",  # bleu_1, bleu_2, bleu_3, bleu_4
    "meteor": MODULE_DIR / "r2gen_meteor.py",  # meteor (needs Java)
    "rouge_l": MODULE_DIR / "r2gen_rouge_l.py",  # rouge_l
    "cider": MODULE_DIR / "r2gen_cider.py",  # cider
    "nlg": MODULE_DIR / "r2gen_nlg.py",  # all seven (compute(..., meteor=False) leaves METEOR out)
    "ce": MODULE_DIR / "r2gen_ce.py",  # clinical efficacy: ce_micro_f1, ... and the labeler's name
}


def report_metric_info(description: str, citation: str, inputs_description: str, reference_url: str):
    """The `evaluate.MetricInfo` every module here returns: string predictions against string references."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        reference_urls=[reference_url],
    )


def load_metric(name: str, **kwargs: Any):
    """The `evaluate` module `name` (a key of `METRIC_MODULES`), loaded from its local script (offline).
    `kwargs` go to `evaluate.load` (e.g. `keep_in_memory=True`, `experiment_id=...`)."""
    import evaluate

    if name not in METRIC_MODULES:
        raise ValueError(f"Unknown metric {name!r}; choose one of {sorted(METRIC_MODULES)}.")
    return evaluate.load(str(METRIC_MODULES[name]), **kwargs)


__all__ = ["METRIC_MODULES", "MODULE_DIR", "load_metric"]
