"""Report cleaning, the prepared-dataset schema, and the collator that feeds prepared studies to the model.

Every `data_prep` script (IU-Xray, MIMIC-CXR, R2Gen annotation files, the synthetic set) writes the same
`datasets.DatasetDict` (train / validation / test) with the columns of `FEATURES`: images are resized once
at preparation time and stored as small lossless PNGs, so training never decodes full-size X-rays.
"""

import re
from dataclasses import dataclass
from typing import Any, Literal

from datasets import Features, Image, Sequence, Value


SPLITS = ("train", "validation", "test")

FEATURES = Features(
    {
        "id": Value("string"),  # R2Gen's study id (IU: "CXR3030_IM-1405"; MIMIC: the dicom id of R2Gen files)
        "subject_id": Value("string"),  # MIMIC patient id ("" when unknown)
        "study_id": Value("string"),  # MIMIC study id ("" when unknown)
        "report": Value("string"),  # cleaned with `clean_report`: the training target and the reference
        "raw_report": Value("string"),  # the report as found, for auditing and other cleaning conventions
        "images": Sequence(Image()),  # the study's views, resized once (grayscale PNG)
        "views": Sequence(Value("string")),  # view name per image (PA, AP, LATERAL, ... or "" when unknown)
        "image_paths": Sequence(Value("string")),  # source paths relative to the image root (annotation.json)
        "finding_labels": Sequence(Value("string")),  # positive findings where known (synthetic set); [] = none
    }
)

# R2Gen's cleaners delete these characters from every sentence. The original pattern
# `[.,?;*!%^&_+():-\[\]{}]` contains the unescaped range `:-\[`, which deletes `< = > @` too (and the
# capitals, already lower-cased) and, being a range, never deleted the hyphen itself: hyphens stay, as
# they did in every published R2Gen-protocol number ("left-sided", "x-ray").
_PUNCTUATION = re.compile(r"[.,?;*!%^&_+():\[\]{}]")
# List markers ("1. ", "2. ") that start a sentence; R2Gen replaced the fixed strings "1. " ... "5. ".
_ENUMERATION = re.compile(r"(?:^|(?<=\s))\d{1,2}\.\s+")


def _sentences(text: str) -> list[str]:
    text = re.sub(r"\.{2,}", ".", text)  # ".." -> "."
    text = _ENUMERATION.sub(". ", text)  # an enumeration marker ends the previous sentence
    return text.strip().lower().split(". ")


def _clean_sentence(sentence: str) -> str:
    for char in ('"', "/", "\\", "'"):
        sentence = sentence.replace(char, "")
    sentence = _PUNCTUATION.sub("", sentence.strip().lower())
    return " ".join(sentence.split())


def clean_report(text: str, style: Literal["iu_xray", "mimic_cxr"] = "iu_xray") -> str:
    """R2Gen's report cleaning (`clean_report_iu_xray` / `clean_report_mimic_cxr`), with its bugs fixed.

    Kept from R2Gen: lower-case; split into sentences at ". "; drop list markers; delete the characters
    `. , ? ; * ! % ^ & _ + ( ) : [ ] { } " / \\ '` inside sentences (hyphens stay, as they did in R2Gen;
    "3.5 cm" becomes "35 cm", as in R2Gen: kept for comparability with published numbers); join the sentences with
    " . " and end with " .". For `mimic_cxr`, newlines become spaces and de-identified spans (`___`)
    disappear (their underscores are deleted).

    Deliberate differences, each a fix:
      * the punctuation class no longer deletes `< = > @` (R2Gen's unescaped range `:-\\[`);
      * empty sentences are dropped (R2Gen's `!= []` filter was always true, leaving " .  ." artefacts);
      * any run of periods collapses to one and any 1-2 digit list marker ("1. " ... "12. ") splits
        sentences, where R2Gen replaced fixed strings for markers 1 to 5 only;
      * whitespace runs inside a sentence collapse to one space;
      * an empty or whitespace-only report gives "" (R2Gen gave " ."), so callers can report it.
    """
    if style not in ("iu_xray", "mimic_cxr"):
        raise ValueError(f"style must be 'iu_xray' or 'mimic_cxr', got {style!r}.")
    if style == "mimic_cxr":
        text = text.replace("\n", " ")
    sentences = [_clean_sentence(sentence) for sentence in _sentences(text)]
    sentences = [sentence for sentence in sentences if sentence]
    return " . ".join(sentences) + " ." if sentences else ""


@dataclass
class R2GenDataCollator:
    """Turns prepared rows (`FEATURES`) into model inputs with an `R2GenProcessor`.

    With `include_reports=True` (training) the cleaned reports become labels; without, the batch holds the
    prompt alone (generation), and the references are kept aside by the caller.
    """

    processor: Any
    include_reports: bool = True
    max_report_tokens: int | None = None
    max_views: int | None = None  # keep the first views of each study (IU-Xray: 2, MIMIC-CXR: 1)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        studies = [row["images"][: self.max_views] for row in rows]
        reports = [row["report"] for row in rows] if self.include_reports else None
        return self.processor(images=studies, text=reports, max_report_tokens=self.max_report_tokens)


__all__ = ["FEATURES", "R2GenDataCollator", "SPLITS", "clean_report"]
