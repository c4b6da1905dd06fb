"""Speed of the rule-based CheXpert-style labeler (`r2gen_hf.metrics.label_reports(..., labeler="rule")`).

Labels 1,000 distinct reports, half synthetic (`data_prep.synthetic`'s report writer, as in the demo set) and
half built from realistic MIMIC-CXR / IU-Xray-style sentences (findings, negations, uncertainty, devices,
several sentences each), once as raw text and once R2Gen-cleaned, with the labeler's cache emptied first
(every report is really labeled). Target: under 20 s per 1,000 reports (the issue's), i.e. 20 ms a report.

    python bench/labeler_speed.py [--num_reports 1000] [--seed 0] [--output FILE]

Prints one JSON object.
"""

import argparse
import sys
import time

import numpy as np

if __package__:  # python -m bench data / metrics
    from ._report import emit, machine_info
else:  # python bench/<script>.py (bench/ is on sys.path)
    from _report import emit, machine_info
from data_prep.synthetic import sample_spec, write_report
from r2gen_hf.data import clean_report
from r2gen_hf.metrics import label_reports
from r2gen_hf.metrics.clinical import _label_text

REALISTIC_SENTENCES = [
    "PA and lateral views of the chest were obtained.",
    "Comparison is made to the prior study from {n} days earlier.",
    "The heart size is normal.",
    "Heart size is mildly enlarged, unchanged.",
    "Moderate cardiomegaly is stable.",
    "The cardiomediastinal silhouette and hilar contours are within normal limits.",
    "The mediastinum is not widened.",
    "The lungs are clear without focal consolidation, pleural effusion, or pneumothorax.",
    "There is mild pulmonary vascular congestion without overt pulmonary edema.",
    "Moderate interstitial pulmonary edema has worsened since the prior exam.",
    "Small bilateral pleural effusions with adjacent bibasilar atelectasis.",
    "A small left pleural effusion cannot be excluded.",
    "Patchy opacity in the right lower lobe may represent atelectasis, though pneumonia is not excluded.",
    "Left retrocardiac opacity likely reflects atelectasis.",
    "No pneumothorax is seen.",
    "There is a small right apical pneumothorax, decreased in size.",
    "A {n} mm nodule projects over the left upper lobe.",
    "No suspicious pulmonary nodules or masses.",
    "Endotracheal tube terminates {n} cm above the carina.",
    "An enteric tube courses below the diaphragm, out of view.",
    "Right internal jugular central venous catheter tip in the mid SVC.",
    "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
    "Median sternotomy wires are intact.",
    "Old healed right rib fractures.",
    "No acute osseous abnormality.",
    "Degenerative changes of the thoracic spine.",
    "Apical pleural thickening bilaterally.",
    "Calcified granuloma in the right mid lung.",
    "Possible early right lower lobe pneumonia.",
    "Findings are consistent with congestive heart failure.",
    "No acute cardiopulmonary process.",
    "The previously seen left pleural effusion has resolved.",
]


def realistic_report(rng: np.random.Generator) -> str:
    count = int(rng.integers(4, 9))
    sentences = [REALISTIC_SENTENCES[i] for i in rng.choice(len(REALISTIC_SENTENCES), size=count, replace=False)]
    return " ".join(sentence.format(n=int(rng.integers(2, 40))) for sentence in sentences)


def make_reports(num_reports: int, seed: int) -> list[str]:
    """`num_reports` distinct reports: half synthetic, half realistic (regenerated until distinct)."""
    rng = np.random.default_rng(seed)
    reports, seen = [], set()
    while len(reports) < num_reports:
        text = write_report(sample_spec(rng), rng) if len(reports) % 2 == 0 else realistic_report(rng)
        if text not in seen:
            seen.add(text)
            reports.append(text)
    return reports


def time_labeling(texts: list[str]) -> dict[str, float]:
    _label_text.cache_clear()
    per_report = []
    start = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        label_reports([text])
        per_report.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    _label_text.cache_clear()
    batch_start = time.perf_counter()
    label_reports(texts)
    batch = time.perf_counter() - batch_start
    per_report_ms = np.array(per_report) * 1000
    return {
        "seconds_per_1000_reports": round(batch / len(texts) * 1000, 3),
        "reports_per_s": round(len(texts) / batch, 1),
        "ms_per_report": round(batch / len(texts) * 1000, 3),
        "ms_per_report_p50": round(float(np.percentile(per_report_ms, 50)), 3),
        "ms_per_report_p95": round(float(np.percentile(per_report_ms, 95)), 3),
        "ms_per_report_max": round(float(per_report_ms.max()), 3),
        "one_by_one_seconds": round(total, 3),
    }


def run(num_reports: int = 1000, seed: int = 0) -> dict:
    """Labels `num_reports` distinct reports raw and cleaned; seconds per 1,000 and per-report latencies."""
    reports = make_reports(num_reports, seed)
    label_reports(["warm up: the heart is normal in size ."])  # regex compilation happens at import
    raw = time_labeling(reports)
    cleaned = time_labeling([clean_report(text) for text in reports])
    return {
        "benchmark": "labeler_speed",
        "labeler": "rule",
        **machine_info(),
        "num_reports": len(reports),
        "mean_words_per_report": round(float(np.mean([len(text.split()) for text in reports])), 1),
        "raw": raw,
        "cleaned": cleaned,
        "target_seconds_per_1000_reports": 20.0,
        "meets_target": max(raw["seconds_per_1000_reports"], cleaned["seconds_per_1000_reports"]) < 20.0,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_reports", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="Also write the JSON to this file.")
    args = parser.parse_args(argv)
    emit(run(args.num_reports, args.seed), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
