"""Clinical efficacy (CE) of generated reports: the 14 CheXpert observations read from the generated and the
reference report, compared as precision / recall / F1; RadGraph F1 when `radgraph` is installed; and
`compute_report_metrics`, the NLG metrics and CE together with optional bootstrap confidence intervals.

Labelers (`label_reports(texts, labeler=...)`; every result is labeled with the labeler's name, `labeler`):
  * ``"rule"`` (default): `RuleBasedLabeler`, named "rule-based CheXpert-style (r2gen_hf)". Our own
    CheXpert-style rules (`r2gen_hf.metrics.chexpert_rules`): mention phrases per observation, negation and
    uncertainty cues before and after a mention (scope: one sentence, cut at words such as "but", "which",
    or a verb), normal phrasing ("heart size is normal", "the lungs are clear": negative, never positive).
    Pure regular expressions: no weights, no network, about 0.5 ms a report (`bench/labeler_speed.py`).
    Works on raw reports and on R2Gen-cleaned ones (lower case, punctuation removed, " . " between
    sentences) alike. It is *not* the CheXpert labeler nor CheXbert, and its CE numbers are not comparable
    with published ones.
  * ``"chexbert"``: `CheXbertLabeler`, named "CheXbert (f1chexbert)": the CheXbert model through the
    `f1chexbert` package (`pip install f1chexbert`, or the `chexbert` extra of r2gen-hf). Its weights
    (about 1.3 GB, Hugging Face repo StanfordAIMI/RRG_scorers, plus bert-base-uncased) download from the
    Hub on first use; offline they must have been downloaded on this machine before. This is the labeler of the
    published CE numbers of R2GenGPT/PromptMRG-style papers.
  * any object with a ``name`` and ``__call__(texts) -> list[dict]``.

Labels (`label_reports`): one dict per text keyed by the 14 names of `CHEXPERT_OBSERVATIONS`, CheXpert's
values: 1 positive, 0 negative, -1 uncertain, None not mentioned. Within a report, mentions of one observation
are combined as CheXpert does: any positive -> 1, else any uncertain -> -1, else 0. "No Finding" is 1 when no
observation other than Support Devices (and no other abnormality such as emphysema, scoliosis, a granuloma:
`chexpert_rules.OTHER_ABNORMALITY`) is positive or uncertain, otherwise None (never 0, as CheXpert). An empty
or whitespace-only text gets None everywhere (nothing was said, not even "normal").

CE scores (`compute_ce_metrics`, `ce_metrics_from_labels`):
  * Positive-vs-rest: an observation counts as positive in a report iff its label is 1. ``uncertain`` says
    what -1 counts as: ``"negative"`` (default; R2Gen/PromptMRG-style CE, which compares CheXbert labels with
    ``== 1`` over the 14 observations) or ``"positive"`` (f1chexbert's own "rrg" mode and RadEval count
    uncertain as positive). 0 and None are always "rest".
  * micro: true positives, false positives and false negatives summed over all observations of the group,
    then P = TP / (TP + FP), R = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN).
  * macro: P, R and F1 per observation, then their plain mean over the group's observations. An observation
    whose denominator is 0 (no predicted positive for P; no reference positive for R; neither for F1) scores
    0 and still counts in the mean (scikit-learn's ``zero_division=0``): on a small set a rare observation
    drags the macro numbers down rather than being left out.
  * groups: the 14 observations (keys without suffix) and the 5 common ones, Atelectasis, Cardiomegaly,
    Consolidation, Edema, Pleural Effusion (suffix ``_5``).
  * keys: ``ce_micro_precision``, ``ce_micro_recall``, ``ce_micro_f1``, ``ce_macro_precision``,
    ``ce_macro_recall``, ``ce_macro_f1``, the same with ``_5``, and ``labeler`` (the labeler's name). All
    values are fractions in [0, 1].

Synthetic data (`data_prep.synthetic`): `SYNTHETIC_TO_CHEXPERT` maps its finding labels to CheXpert
observations and `labels_from_findings` turns a study's `finding_labels` into ground-truth labels, so that
CE can be scored against the true labels with `ce_metrics_from_labels(..., observation_groups=
{"": SYNTHETIC_OBSERVATIONS})`.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from .bootstrap import iter_resample_chunks, nlg_bootstrap_ci, percentile_interval, resample_indices
from .chexpert_rules import CUE_PATTERNS, OBSERVATION_RULES, OBSERVATIONS, OTHER_ABNORMALITY
from .nlg import NLG_METRIC_KEYS, _check_pairs, compute_nlg_metrics

CHEXPERT_OBSERVATIONS: tuple[str, ...] = OBSERVATIONS
CHEXPERT_5_OBSERVATIONS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
CE_OBSERVATION_GROUPS: dict[str, tuple[str, ...]] = {"": CHEXPERT_OBSERVATIONS, "_5": CHEXPERT_5_OBSERVATIONS}
CE_METRIC_KEYS: tuple[str, ...] = tuple(
    f"ce_{average}_{score}{suffix}"
    for suffix in CE_OBSERVATION_GROUPS
    for average in ("micro", "macro")
    for score in ("precision", "recall", "f1")
)
UNCERTAIN_POLICIES: tuple[str, ...] = ("negative", "positive")

# The `evaluate` module of `compute_ce_metrics`: `evaluate.load(str(CE_EVALUATE_MODULE))` (offline).
CE_EVALUATE_MODULE = Path(__file__).resolve().parent / "evaluate_modules" / "r2gen_ce.py"

RULE_LABELER_NAME = "rule-based CheXpert-style (r2gen_hf)"
CHEXBERT_LABELER_NAME = "CheXbert (f1chexbert)"

CHEXBERT_HINT = (
    "The CheXbert labeler needs the `f1chexbert` package: `pip install f1chexbert` (or `pip install "
    "'r2gen-hf[chexbert]'`). Its weights (about 1.3 GB: StanfordAIMI/RRG_scorers/chexbert.pth and "
    "bert-base-uncased) download from the Hugging Face Hub on first use; offline they must have been "
    "downloaded on this machine before. Without it, use labeler='rule' (rule-based, offline; not comparable "
    "with published CheXbert CE numbers)."
)
RADGRAPH_HINT = (
    "RadGraph F1 needs the `radgraph` package: `pip install radgraph` (or `pip install 'r2gen-hf[radgraph]'`). "
    "Its model weights (about 0.4 GB) download from the Hugging Face Hub on first use; offline they must have "
    "been downloaded on this machine before."
)

# ------------------------------------------------------------------------------------ synthetic data

# data_prep.synthetic finding label -> CheXpert observation. A consolidation is not also counted as Lung
# Opacity: the synthetic reports name the opacity only in some phrasings ("airspace opacity ... consistent
# with consolidation"), and CheXpert labels observations independently (no parent-child implication), so
# Lung Opacity is left out of the synthetic ground truth (None) rather than guessed.
SYNTHETIC_TO_CHEXPERT: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion_left": "Pleural Effusion",
    "pleural_effusion_right": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "nodule": "Lung Lesion",
    "consolidation": "Consolidation",
}
# The observations the synthetic set decides for every study (a study without findings is "No Finding").
SYNTHETIC_OBSERVATIONS: tuple[str, ...] = (
    "Cardiomegaly",
    "Lung Lesion",
    "Consolidation",
    "Pneumothorax",
    "Pleural Effusion",
    "No Finding",
)


def labels_from_findings(finding_labels: Sequence[str]) -> dict[str, int | None]:
    """Ground-truth CheXpert-style labels of a synthetic study from its `finding_labels` (`[]` is normal).

    Every observation of `SYNTHETIC_OBSERVATIONS` is decided: 1 when present, 0 when absent ("No Finding" is 1
    for a study without findings, else 0); the others are None (the synthetic set says nothing about them).
    """
    unknown = [label for label in finding_labels if label not in SYNTHETIC_TO_CHEXPERT]
    if unknown:
        raise ValueError(
            f"Unknown synthetic finding label(s) {unknown}; expected some of {sorted(SYNTHETIC_TO_CHEXPERT)}."
        )
    labels: dict[str, int | None] = {name: None for name in CHEXPERT_OBSERVATIONS}
    for name in SYNTHETIC_OBSERVATIONS:
        labels[name] = 0
    for label in finding_labels:
        labels[SYNTHETIC_TO_CHEXPERT[label]] = 1
    labels["No Finding"] = 0 if finding_labels else 1
    return labels


# --------------------------------------------------------------------------------- rule-based labeler

# Largest gap in words between a cue and its mention: before it (a list after "no evidence of ..."), after it
# ("... on the right is not seen"), and for "X or Y".
MAX_PRE_GAP = 12
MAX_POST_GAP = 5
MAX_OR_GAP = 2

_STRONG_PRE = frozenset({"unc_neg", "neg_both", "neg_pre", "unc_both", "unc_pre"})
_STRONG_POST = frozenset({"unc_neg", "neg_post", "unc_post", "neg_both", "unc_both"})
_NEGATION = frozenset({"neg_pre", "neg_post", "neg_both"})
_UNCERTAINTY = frozenset({"unc_pre", "unc_post", "unc_both"})

_SENTENCE_SPLIT = re.compile(r"[.?!;]+(?=\s|$)|\n\s*\n")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _alternation(patterns: Sequence[str]) -> re.Pattern | None:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b") if patterns else None


_CUES = re.compile("|".join(rf"(?P<{kind}>\b(?:{'|'.join(patterns)})\b)" for kind, patterns in CUE_PATTERNS.items()))
# (observation, category, base status, compiled) in CHEXPERT order; "other" blocks No Finding only.
_CATEGORY_STATUS = {"mention": 1, "clause": 1, "uncertain": -1, "normal": 0, "weak": -1}
_RULES: list[tuple[str, str, int, re.Pattern]] = []
_EXCLUDES: dict[str, re.Pattern] = {}
for _name, _rules in OBSERVATION_RULES.items():
    for _category, _status in _CATEGORY_STATUS.items():
        _compiled = _alternation(_rules[_category])
        if _compiled is not None:
            _RULES.append((_name, _category, _status, _compiled))
    if _rules["exclude"]:
        _EXCLUDES[_name] = _alternation(_rules["exclude"])
_RULES.append(("_other", "mention", 1, _alternation(OTHER_ABNORMALITY)))
_HEART_FAILURE = re.compile(r"\b(?:chf|heart failure)\b")


def split_sentences(text: str) -> list[str]:
    """The sentences of a raw or R2Gen-cleaned report, each normalized: lower case, characters other than
    a-z and 0-9 replaced by spaces, single spaces (the form `chexpert_rules` patterns are written for)."""
    sentences = []
    for sentence in _SENTENCE_SPLIT.split(text.lower()):
        normalized = _NON_WORD.sub(" ", sentence.replace("'", "")).strip()
        if normalized:
            sentences.append(normalized)
    return sentences


def _words(text: str) -> int:
    return len(text.split())


def _combine(kinds: Sequence[str]) -> int | None:
    """Status from the cues that reach a mention: negated uncertainty > negation > uncertainty (CheXpert's
    order); None when no cue reaches it."""
    if "unc_neg" in kinds:
        return -1
    if any(kind in _NEGATION for kind in kinds):
        return 0
    if any(kind in _UNCERTAINTY for kind in kinds):
        return -1
    return None


class _Sentence:
    """One normalized sentence and its cues."""

    __slots__ = ("text", "cues", "terms", "ors")

    def __init__(self, text: str) -> None:
        self.text = text
        self.cues: list[tuple[int, int, str]] = []  # strong cues, in order
        self.terms: list[tuple[int, int]] = []
        self.ors: list[tuple[int, int]] = []
        for match in _CUES.finditer(text):
            kind = match.lastgroup
            if kind == "term":
                self.terms.append(match.span())
            elif kind == "weak_or":
                self.ors.append(match.span())
            elif kind != "pseudo":
                self.cues.append((match.start(), match.end(), kind))

    def _blocked(self, start: int, end: int) -> bool:
        return any(t_start >= start and t_end <= end for t_start, t_end in self.terms)

    def status(self, start: int, end: int, base: int, clause: bool) -> int:
        """The status of the mention text[start:end] whose status without cues is `base` (1 or -1)."""
        text = self.text
        kinds: list[str] = []
        nearest_pre = None
        for index, (c_start, c_end, kind) in enumerate(self.cues):
            if c_start >= start and c_end <= end:
                kinds.append(kind)  # inside the mention ("the heart is not enlarged")
            elif c_end <= start and kind in _STRONG_PRE:
                nearest_pre = index
            elif c_start >= end and kind in _STRONG_POST:
                if _words(text[end:c_start]) <= MAX_POST_GAP and not self._blocked(end, c_start):
                    kinds.append(kind)
                break
        if nearest_pre is not None:
            c_start, c_end, kind = self.cues[nearest_pre]
            limit = 0 if clause else MAX_PRE_GAP
            if _words(text[c_end:start]) <= limit and not self._blocked(c_end, start):
                kinds.append(kind)
                # A chain of adjacent cues acts together ("no suspicious nodule": the negation counts).
                index = nearest_pre
                while index > 0:
                    p_start, p_end, p_kind = self.cues[index - 1]
                    if p_kind not in _STRONG_PRE or text[p_end : self.cues[index][0]].strip():
                        break
                    kinds.append(p_kind)
                    index -= 1
        combined = _combine(kinds)
        if combined is not None:
            return combined
        # "X or Y" with no other cue: uncertain (CheXpert).
        for o_start, o_end in self.ors:
            if (o_end <= start and _words(text[o_end:start]) <= MAX_OR_GAP) or (
                o_start >= end and _words(text[end:o_start]) <= MAX_OR_GAP
            ):
                return -1
        return base


def _aggregate(values: Sequence[int]) -> int | None:
    if not values:
        return None
    if 1 in values:
        return 1
    if -1 in values:
        return -1
    return 0


@lru_cache(maxsize=1)
def _empty_labels() -> tuple:
    return tuple(None for _ in CHEXPERT_OBSERVATIONS)


@lru_cache(maxsize=1 << 16)
def _label_text(text: str) -> tuple[int | None, ...]:
    """The 14 labels of one report, in `CHEXPERT_OBSERVATIONS` order (cached: references are labeled again at
    every evaluation; `_label_text.cache_clear()` empties the cache)."""
    strong: dict[str, list[int]] = {}
    weak: dict[str, list[int]] = {}
    sentences = split_sentences(text)
    if not sentences:
        return _empty_labels()
    for normalized in sentences:
        sentence = _Sentence(normalized)
        excluded: dict[str, list[tuple[int, int]]] = {
            name: [match.span() for match in pattern.finditer(normalized)] for name, pattern in _EXCLUDES.items()
        }
        for name, category, base, pattern in _RULES:
            for match in pattern.finditer(normalized):
                start, end = match.span()
                if any(e_start < end and start < e_end for e_start, e_end in excluded.get(name, ())):
                    continue
                status = base if category == "normal" else sentence.status(start, end, base, category == "clause")
                (weak if category == "weak" else strong).setdefault(name, []).append(status)
                if name == "Edema" and status != 0 and _HEART_FAILURE.fullmatch(match.group()):
                    # CheXpert: heart failure also makes Cardiomegaly uncertain.
                    strong.setdefault("Cardiomegaly", []).append(-1)
    labels = {}
    for name in CHEXPERT_OBSERVATIONS[:-1]:
        labels[name] = _aggregate(strong.get(name) or weak.get(name) or ())
    abnormal = any(value in (1, -1) for name, value in labels.items() if name != "Support Devices") or any(
        value in (1, -1) for value in strong.get("_other", ())
    )
    labels["No Finding"] = None if abnormal else 1
    return tuple(labels[name] for name in CHEXPERT_OBSERVATIONS)


class Labeler(Protocol):
    name: str

    def __call__(self, texts: Sequence[str]) -> list[dict[str, int | None]]: ...


class RuleBasedLabeler:
    """The rule-based CheXpert-style labeler (module docstring): offline, no weights, about 0.5 ms a report."""

    name = RULE_LABELER_NAME

    def label(self, text: str) -> dict[str, int | None]:
        """The 14 labels of one report (raw or R2Gen-cleaned)."""
        if not isinstance(text, str):
            raise TypeError(f"a report must be a str, not a {type(text).__name__}.")
        return dict(zip(CHEXPERT_OBSERVATIONS, _label_text(text)))

    def __call__(self, texts: Sequence[str]) -> list[dict[str, int | None]]:
        """The labels of each text (identical texts are labeled once: results are cached per process)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string.")
        result = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str.")
            result.append(dict(zip(CHEXPERT_OBSERVATIONS, _label_text(text))))
        return result


# ---------------------------------------------------------------------------------------- CheXbert


def _import_optional(module: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(hint) from error


class CheXbertLabeler:
    """CheXbert (Smit et al., 2020) through `f1chexbert`; the model loads on first use (see `CHEXBERT_HINT`)."""

    name = CHEXBERT_LABELER_NAME

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                module = _import_optional("f1chexbert", CHEXBERT_HINT)
                try:
                    kwargs = {} if self.device is None else {"device": self.device}
                    self._model = module.F1CheXbert(**kwargs)
                except Exception as error:
                    raise RuntimeError(
                        f"Could not load CheXbert through f1chexbert ({type(error).__name__}: {error}). {CHEXBERT_HINT}"
                    ) from error
            return self._model

    @staticmethod
    def _convert(values: Sequence[Any]) -> dict[str, int | None]:
        if len(values) != len(CHEXPERT_OBSERVATIONS):
            raise RuntimeError(f"f1chexbert returned {len(values)} labels, expected {len(CHEXPERT_OBSERVATIONS)}.")
        return {
            name: None if value in ("", None) or (isinstance(value, float) and np.isnan(value)) else int(value)
            for name, value in zip(CHEXPERT_OBSERVATIONS, values)
        }

    def __call__(self, texts: Sequence[str]) -> list[dict[str, int | None]]:
        model = self._load()
        result = []
        for text in texts:
            # f1chexbert's "classification" mode keeps CheXpert's values ('' blank, 1, 0, -1).
            values = model.get_label(text, mode="classification")
            if values and isinstance(values[0], (list, tuple)):
                values = values[0]
            result.append(self._convert(values))
        return result


_LABELERS: dict[str, Callable[[], Any]] = {"rule": RuleBasedLabeler, "chexbert": CheXbertLabeler}
_LABELER_CACHE: dict[str, Any] = {}


def get_labeler(labeler: str | Labeler = "rule") -> Labeler:
    """The labeler `labeler` names ("rule" or "chexbert"; one shared instance each), or `labeler` itself when
    it is already a labeler (an object with `name` and `__call__(texts)`)."""
    if not isinstance(labeler, str):
        if not callable(labeler) or not hasattr(labeler, "name"):
            raise TypeError("labeler must be 'rule', 'chexbert' or an object with a `name` and `__call__(texts)`.")
        return labeler
    if labeler not in _LABELERS:
        raise ValueError(f"Unknown labeler {labeler!r}; choose one of {sorted(_LABELERS)}.")
    if labeler not in _LABELER_CACHE:
        _LABELER_CACHE[labeler] = _LABELERS[labeler]()
    return _LABELER_CACHE[labeler]


def label_reports(texts: Sequence[str], labeler: str | Labeler = "rule") -> list[dict[str, int | None]]:
    """The 14 CheXpert observations of each report: 1 positive, 0 negative, -1 uncertain, None not mentioned
    (module docstring). `labeler`: "rule" (offline, default), "chexbert" (needs `f1chexbert`) or a labeler."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string.")
    return get_labeler(labeler)(list(texts))


# -------------------------------------------------------------------------------------------- scores


def _binary(labels: Sequence[Mapping[str, int | None]], observations: Sequence[str], uncertain: str) -> np.ndarray:
    positive = (1, -1) if uncertain == "positive" else (1,)
    return np.array([[label.get(name) in positive for name in observations] for label in labels], dtype=bool).reshape(
        len(labels), len(observations)
    )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return np.divide(
        numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape), where=denominator > 0
    )


def _scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, suffix: str) -> dict[str, np.ndarray]:
    """micro/macro P, R, F1 from per-observation counts (last axis: observations)."""
    TP, FP, FN = tp.sum(-1), fp.sum(-1), fn.sum(-1)
    precision, recall = _divide(tp, tp + fp), _divide(tp, tp + fn)
    return {
        f"ce_micro_precision{suffix}": _divide(TP, TP + FP),
        f"ce_micro_recall{suffix}": _divide(TP, TP + FN),
        f"ce_micro_f1{suffix}": _divide(2 * TP, 2 * TP + FP + FN),
        f"ce_macro_precision{suffix}": precision.mean(-1),
        f"ce_macro_recall{suffix}": recall.mean(-1),
        f"ce_macro_f1{suffix}": _divide(2 * tp, 2 * tp + fp + fn).mean(-1),
    }


def _check_uncertain(uncertain: str) -> None:
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}.")


def _label_arrays(predicted, reference, groups, uncertain):
    if len(predicted) != len(reference):
        raise ValueError(
            f"predicted and reference labels must have the same length, got {len(predicted)} and {len(reference)}."
        )
    if not predicted:
        raise ValueError("No (prediction, reference) pairs to score.")
    _check_uncertain(uncertain)
    arrays = {}
    for suffix, observations in groups.items():
        unknown = [name for name in observations if name not in CHEXPERT_OBSERVATIONS]
        if unknown:
            raise ValueError(f"Unknown observation(s) {unknown}; expected names from CHEXPERT_OBSERVATIONS.")
        p, r = _binary(predicted, observations, uncertain), _binary(reference, observations, uncertain)
        arrays[suffix] = ((p & r).astype(np.float64), (p & ~r).astype(np.float64), (~p & r).astype(np.float64))
    return arrays


def ce_metrics_from_labels(
    predicted: Sequence[Mapping[str, int | None]],
    reference: Sequence[Mapping[str, int | None]],
    *,
    uncertain: str = "negative",
    observation_groups: Mapping[str, Sequence[str]] | None = None,
    per_observation: bool = False,
) -> dict[str, float]:
    """CE precision / recall / F1 (micro and macro) of predicted against reference labels (module docstring).

    `observation_groups`: key suffix -> observations (default `CE_OBSERVATION_GROUPS`: the 14 without suffix,
    the 5 common ones with "_5"). `per_observation=True` adds `ce_precision_<name>`, `ce_recall_<name>` and
    `ce_f1_<name>` for each observation of the first group (`<name>` in snake case, e.g. `pleural_effusion`).
    """
    groups = dict(CE_OBSERVATION_GROUPS if observation_groups is None else observation_groups)
    arrays = _label_arrays(predicted, reference, groups, uncertain)
    metrics: dict[str, float] = {}
    for suffix, (tp, fp, fn) in arrays.items():
        metrics.update(
            {key: float(value) for key, value in _scores_from_counts(tp.sum(0), fp.sum(0), fn.sum(0), suffix).items()}
        )
    if per_observation:
        suffix, observations = next(iter(groups.items()))
        tp, fp, fn = (array.sum(0) for array in arrays[suffix])
        for j, name in enumerate(observations):
            key = name.lower().replace(" ", "_")
            metrics[f"ce_precision_{key}"] = float(_divide(tp[j], tp[j] + fp[j]))
            metrics[f"ce_recall_{key}"] = float(_divide(tp[j], tp[j] + fn[j]))
            metrics[f"ce_f1_{key}"] = float(_divide(2 * tp[j], 2 * tp[j] + fp[j] + fn[j]))
    return metrics


def ce_bootstrap_ci(
    predicted: Sequence[Mapping[str, int | None]],
    reference: Sequence[Mapping[str, int | None]],
    *,
    num_samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    uncertain: str = "negative",
    observation_groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of `ce_metrics_from_labels`'s scores: studies resampled with
    replacement (`r2gen_hf.metrics.bootstrap.resample_indices(n, num_samples, seed)`, the same resamples as
    every other bootstrap of this package with that seed), labels reused (nothing is relabeled)."""
    groups = dict(CE_OBSERVATION_GROUPS if observation_groups is None else observation_groups)
    arrays = _label_arrays(predicted, reference, groups, uncertain)
    values: dict[str, list[np.ndarray]] = {}
    for weights in iter_resample_chunks(len(predicted), num_samples, seed):
        for suffix, (tp, fp, fn) in arrays.items():
            scores = _scores_from_counts(weights @ tp, weights @ fp, weights @ fn, suffix)
            for key, value in scores.items():
                values.setdefault(key, []).append(value)
    return {key: percentile_interval(np.concatenate(chunks), confidence) for key, chunks in values.items()}


def compute_ce_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    labeler: str | Labeler = "rule",
    uncertain: str = "negative",
    *,
    per_observation: bool = False,
) -> dict[str, Any]:
    """CE scores of generated reports against reference reports, both labeled by `labeler` (module
    docstring): `ce_{micro,macro}_{precision,recall,f1}` over the 14 observations and with `_5` over the 5
    common ones, plus `labeler` (the labeler's name, e.g. "rule-based CheXpert-style (r2gen_hf)" or "CheXbert
    (f1chexbert)"). `uncertain`: "negative" (default: positive iff label == 1) or "positive"."""
    predictions, references = _check_pairs(predictions, references)
    _check_uncertain(uncertain)
    labeler = get_labeler(labeler)
    metrics: dict[str, Any] = ce_metrics_from_labels(
        labeler(predictions), labeler(references), uncertain=uncertain, per_observation=per_observation
    )
    metrics["labeler"] = labeler.name
    return metrics


# ---------------------------------------------------------------------------------------- RadGraph

_RADGRAPH_CACHE: dict[Any, Any] = {}
RADGRAPH_KEYS: tuple[str, ...] = ("radgraph_f1_simple", "radgraph_f1_partial", "radgraph_f1_complete")


def _radgraph_scorer(model_type: str | None):
    if model_type not in _RADGRAPH_CACHE:
        module = _import_optional("radgraph", RADGRAPH_HINT)
        try:
            kwargs = {"reward_level": "all"}
            if model_type is not None:
                kwargs["model_type"] = model_type
            _RADGRAPH_CACHE[model_type] = module.F1RadGraph(**kwargs)
        except Exception as error:
            raise RuntimeError(f"Could not load RadGraph ({type(error).__name__}: {error}). {RADGRAPH_HINT}") from error
    return _RADGRAPH_CACHE[model_type]


def _radgraph_rewards(predictions, references, model_type):
    scorer = _radgraph_scorer(model_type)
    mean_reward, reward_list, _, _ = scorer(hyps=list(predictions), refs=list(references))
    means = dict(zip(RADGRAPH_KEYS, (float(value) for value in mean_reward)))
    per_pair = None
    try:
        array = np.asarray(reward_list, dtype=np.float64)
        if array.shape == (3, len(predictions)):
            per_pair = array.T
        elif array.shape == (len(predictions), 3):
            per_pair = array
    except (TypeError, ValueError):
        pass
    return means, per_pair


def compute_radgraph_f1(
    predictions: Sequence[str], references: Sequence[str], *, model_type: str | None = None
) -> dict[str, float]:
    """RadGraph F1 (Delbrouck et al., 2022) through the `radgraph` package (see `RADGRAPH_HINT`):
    `radgraph_f1_simple` (entities, RG_E), `radgraph_f1_partial` (entities and relations, RG_ER: the one most
    papers report) and `radgraph_f1_complete` (RG_ER-bar). `model_type`: the package's model name
    (e.g. "radgraph", "radgraph-xl", "modern-radgraph-xl"; None: the package's default)."""
    predictions, references = _check_pairs(predictions, references)
    return _radgraph_rewards(predictions, references, model_type)[0]


# -------------------------------------------------------------------------------------------- all


def compute_report_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    labeler: str | Labeler | None = "rule",
    bootstrap_samples: int = 0,
    seed: int = 0,
    *,
    meteor: bool = True,
    uncertain: str = "negative",
    confidence: float = 0.95,
    bootstrap_metrics: Sequence[str] | None = None,
    radgraph: bool = False,
    radgraph_model: str | None = None,
) -> dict[str, Any]:
    """Every metric of generated reports against references, for training evaluation and scoring.

    Returns `compute_nlg_metrics`'s keys (BLEU-1..4, METEOR unless `meteor=False`, ROUGE-L, CIDEr), the CE
    keys of `compute_ce_metrics` and `labeler` (the labeler's name; `labeler=None` leaves CE out), with
    `radgraph=True` the `RADGRAPH_KEYS` (needs `radgraph`), all floats except `labeler`.

    With `bootstrap_samples > 0`: for each metric `<metric>_ci_low` and `<metric>_ci_high`, a percentile
    bootstrap interval at `confidence` over `bootstrap_samples` resamples of the studies (with replacement,
    seeded by `seed`; the same resamples for every metric), plus `bootstrap_samples` and
    `bootstrap_confidence`. `bootstrap_metrics` restricts which metrics get one; by default every metric but
    METEOR (a METEOR interval rescores every resample in Java: name "meteor" explicitly to get one; see
    `r2gen_hf.metrics.bootstrap` for costs and for CIDEr's corpus-dependent idf). CE intervals reuse the
    labels (nothing is relabeled).
    """
    predictions, references = _check_pairs(predictions, references)
    _check_uncertain(uncertain)
    if bootstrap_samples < 0:
        raise ValueError(f"bootstrap_samples must be >= 0, got {bootstrap_samples}.")
    metrics: dict[str, Any] = dict(compute_nlg_metrics(predictions, references, meteor=meteor))
    labels = None
    if labeler is not None:
        labeler = get_labeler(labeler)
        labels = labeler(predictions), labeler(references)
        metrics.update(ce_metrics_from_labels(*labels, uncertain=uncertain))
    radgraph_pairs = None
    if radgraph:
        radgraph_means, radgraph_pairs = _radgraph_rewards(predictions, references, radgraph_model)
        metrics.update(radgraph_means)
    if labeler is not None:
        metrics["labeler"] = labeler.name
    if bootstrap_samples == 0:
        return metrics

    numeric = [key for key, value in metrics.items() if isinstance(value, float)]
    if bootstrap_metrics is None:
        wanted = [key for key in numeric if key != "meteor"]
    else:
        unknown = [key for key in bootstrap_metrics if key not in numeric]
        if unknown:
            raise ValueError(f"bootstrap_metrics {unknown} are not among the computed metrics {numeric}.")
        wanted = list(bootstrap_metrics)
    intervals: dict[str, tuple[float, float]] = {}
    nlg_wanted = [key for key in wanted if key in NLG_METRIC_KEYS]
    if nlg_wanted:
        intervals.update(
            nlg_bootstrap_ci(
                predictions,
                references,
                num_samples=bootstrap_samples,
                seed=seed,
                confidence=confidence,
                metrics=nlg_wanted,
            )
        )
    if labels is not None and any(key in CE_METRIC_KEYS for key in wanted):
        intervals.update(
            ce_bootstrap_ci(
                *labels, num_samples=bootstrap_samples, seed=seed, confidence=confidence, uncertain=uncertain
            )
        )
    radgraph_wanted = [key for key in wanted if key in RADGRAPH_KEYS]
    if radgraph_wanted and radgraph_pairs is not None:
        indices = resample_indices(len(predictions), bootstrap_samples, seed)
        for j, key in enumerate(RADGRAPH_KEYS):
            if key in radgraph_wanted:
                intervals[key] = percentile_interval(radgraph_pairs[indices, j].mean(axis=1), confidence)
    for key in wanted:
        if key in intervals:
            metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = (float(v) for v in intervals[key])
    metrics["bootstrap_samples"] = bootstrap_samples
    metrics["bootstrap_confidence"] = float(confidence)
    return metrics


__all__ = [
    "CE_EVALUATE_MODULE",
    "CE_METRIC_KEYS",
    "CE_OBSERVATION_GROUPS",
    "CHEXBERT_HINT",
    "CHEXBERT_LABELER_NAME",
    "CHEXPERT_5_OBSERVATIONS",
    "CHEXPERT_OBSERVATIONS",
    "CheXbertLabeler",
    "Labeler",
    "RADGRAPH_HINT",
    "RADGRAPH_KEYS",
    "RULE_LABELER_NAME",
    "RuleBasedLabeler",
    "SYNTHETIC_OBSERVATIONS",
    "SYNTHETIC_TO_CHEXPERT",
    "UNCERTAIN_POLICIES",
    "ce_bootstrap_ci",
    "ce_metrics_from_labels",
    "compute_ce_metrics",
    "compute_radgraph_f1",
    "compute_report_metrics",
    "get_labeler",
    "label_reports",
    "labels_from_findings",
    "split_sentences",
]
