"""Clinical efficacy: the rule-based CheXpert-style labeler on hand-written sentences and on the synthetic set,
CE scores against a hand computation, the optional CheXbert / RadGraph back ends (faked: never installed in the
tests), and the seeded bootstrap intervals (reproducible, exact against recomputation, containing the point
estimate)."""

import functools
import sys
import types

import numpy as np
import pytest

from r2gen_hf.data import clean_report
from r2gen_hf.metrics import (
    CE_METRIC_KEYS,
    CHEXPERT_OBSERVATIONS,
    SYNTHETIC_OBSERVATIONS,
    SYNTHETIC_TO_CHEXPERT,
    bootstrap_ci,
    ce_bootstrap_ci,
    ce_metrics_from_labels,
    compute_ce_metrics,
    compute_nlg_metrics,
    compute_radgraph_f1,
    compute_report_metrics,
    label_reports,
    labels_from_findings,
    nlg_bootstrap_ci,
    resample_indices,
)
from r2gen_hf.metrics import clinical
from r2gen_hf.metrics.bootstrap import iter_resample_chunks, nlg_bootstrap_samples, percentile_interval


def label(text):
    return label_reports([text])[0]


def mentioned(text):
    return {name: value for name, value in label(text).items() if value is not None}


# ------------------------------------------------------------------------------------------- labels


def test_label_format():
    labels = label_reports(["Mild cardiomegaly.", "", "No pneumothorax."])
    assert [list(item) for item in labels] == [list(CHEXPERT_OBSERVATIONS)] * 3
    assert len(CHEXPERT_OBSERVATIONS) == 14
    assert labels[0]["Cardiomegaly"] == 1 and labels[0]["No Finding"] is None
    assert all(value is None for value in labels[1].values())  # empty report: nothing said
    assert labels[2] == {**{name: None for name in CHEXPERT_OBSERVATIONS}, "Pneumothorax": 0, "No Finding": 1}
    with pytest.raises(TypeError):
        label_reports("a single string")
    with pytest.raises(ValueError, match="Unknown labeler"):
        label_reports(["x"], labeler="negbio")


# (sentence, observation, expected label) - plain mentions, one per observation.
MENTIONS = [
    ("The mediastinum is widened.", "Enlarged Cardiomediastinum", 1),
    ("Enlarged cardiomediastinal silhouette.", "Enlarged Cardiomediastinum", 1),
    ("Mild cardiomegaly.", "Cardiomegaly", 1),
    ("The heart is moderately enlarged.", "Cardiomegaly", 1),
    ("Enlargement of the cardiac silhouette.", "Cardiomegaly", 1),
    ("Patchy opacity in the left lower lobe.", "Lung Opacity", 1),
    ("Bilateral interstitial infiltrates.", "Lung Opacity", 1),
    ("There is a 2 cm nodule in the right upper lobe.", "Lung Lesion", 1),
    ("Large mass in the left hilum.", "Lung Lesion", 1),
    ("Moderate pulmonary edema.", "Edema", 1),
    ("Right lower lobe consolidation.", "Consolidation", 1),
    ("Findings consistent with pneumonia.", "Pneumonia", 1),
    ("Bibasilar atelectasis.", "Atelectasis", 1),
    ("Small right apical pneumothorax.", "Pneumothorax", 1),
    ("Small left pleural effusion.", "Pleural Effusion", 1),
    ("Bilateral pleural effusions, small on the right.", "Pleural Effusion", 1),
    ("Right pleural thickening.", "Pleural Other", 1),
    ("Displaced fracture of the left sixth rib.", "Fracture", 1),
    ("Endotracheal tube terminates 4 cm above the carina.", "Support Devices", 1),
    ("Right PICC line tip in the mid SVC.", "Support Devices", 1),
    ("Left chest wall pacemaker with leads in the right ventricle.", "Support Devices", 1),
]
NEGATIONS = [
    ("No pleural effusion.", "Pleural Effusion", 0),
    ("There is no pleural effusion.", "Pleural Effusion", 0),
    ("Without evidence of pneumothorax.", "Pneumothorax", 0),
    ("No evidence of focal consolidation, pleural effusion, or pneumothorax.", "Pneumothorax", 0),
    ("No evidence of focal consolidation, pleural effusion, or pneumothorax.", "Consolidation", 0),
    ("The lungs are clear.", "Lung Opacity", 0),
    ("Lungs are clear bilaterally.", "Lung Opacity", 0),
    ("The costophrenic angles are sharp without pleural effusion.", "Pleural Effusion", 0),
    ("Negative for pneumonia.", "Pneumonia", 0),
    ("The lungs are free of consolidation.", "Consolidation", 0),
    ("Pleural effusions are not seen.", "Pleural Effusion", 0),
    ("Pneumothorax is not identified.", "Pneumothorax", 0),
    ("The previously seen pulmonary edema has resolved.", "Edema", 0),
    ("No suspicious pulmonary nodules.", "Lung Lesion", 0),
    ("No focal nodule or mass.", "Lung Lesion", 0),
    ("No acute fracture.", "Fracture", 0),
    ("Interval removal of the right chest tube.", "Support Devices", 0),
    ("No pneumothorax or pleural effusion is identified.", "Pleural Effusion", 0),
]
UNCERTAIN = [
    ("Possible left lower lobe pneumonia.", "Pneumonia", -1),
    ("Pneumonia cannot be excluded.", "Pneumonia", -1),
    ("Cannot exclude a small left pleural effusion.", "Pleural Effusion", -1),
    ("Opacity at the right base may represent atelectasis.", "Atelectasis", -1),
    ("Findings suspicious for pulmonary edema.", "Edema", -1),
    ("Likely small bilateral pleural effusions.", "Pleural Effusion", -1),
    ("Atelectasis versus consolidation in the left lower lobe.", "Consolidation", -1),
    ("Atelectasis versus consolidation in the left lower lobe.", "Atelectasis", -1),
    ("Question of a small right pneumothorax.", "Pneumothorax", -1),
    ("Patchy airspace consolidation, concerning for pneumonia.", "Pneumonia", -1),
    ("Borderline cardiomegaly.", "Cardiomegaly", -1),
    ("Heart size is top normal.", "Cardiomegaly", -1),
    ("Mild pulmonary vascular congestion.", "Edema", -1),
    ("A nodule is not excluded.", "Lung Lesion", -1),
]
NORMAL_PHRASING = [
    ("Heart size is normal.", "Cardiomegaly", 0),
    ("Heart size is within normal limits.", "Cardiomegaly", 0),
    ("The heart is normal in size.", "Cardiomegaly", 0),
    ("Normal heart size.", "Cardiomegaly", 0),
    ("The cardiac silhouette is normal in size.", "Cardiomegaly", 0),
    ("The heart is not enlarged.", "Cardiomegaly", 0),
    ("The cardiomediastinal silhouette is within normal limits.", "Cardiomegaly", 0),
    ("The cardiomediastinal silhouette is within normal limits.", "Enlarged Cardiomediastinum", 0),
    ("The cardiomediastinal silhouette is unremarkable.", "Enlarged Cardiomediastinum", 0),
    ("Mediastinal contours are normal.", "Enlarged Cardiomediastinum", 0),
    ("Heart size and mediastinal contours are within normal limits.", "Cardiomegaly", 0),
    ("Within normal limits.", "Cardiomegaly", None),
    ("No cardiomegaly.", "Cardiomegaly", 0),
]


@pytest.mark.parametrize("cleaned", [False, True], ids=["raw", "cleaned"])
@pytest.mark.parametrize("sentence, observation, expected", MENTIONS + NEGATIONS + UNCERTAIN + NORMAL_PHRASING)
def test_sentence_labels(sentence, observation, expected, cleaned):
    text = clean_report(sentence) if cleaned else sentence
    assert label(text)[observation] == expected, (text, mentioned(text))


@pytest.mark.parametrize(
    "sentence",
    [
        "Heart size is normal.",
        "Within normal limits.",
        "The heart is normal in size. Lungs are clear.",
        "Normal cardiomediastinal silhouette.",
        "Heart size normal, hila prominent.",
        "The heart is not enlarged.",
        "Heart size is stable and normal.",
    ],
)
def test_normal_phrasing_is_never_cardiomegaly_positive(sentence):
    for text in (sentence, clean_report(sentence)):
        assert label(text)["Cardiomegaly"] != 1
        assert label(text)["Enlarged Cardiomediastinum"] != 1


def test_scope_and_aggregation():
    # A negation does not reach across "but" or into a new clause; a later uncertainty cue takes over.
    assert mentioned("No pneumothorax, but there is a small left effusion.") == {
        "Pneumothorax": 0,
        "Pleural Effusion": 1,
    }
    assert mentioned("No pneumothorax, the heart is enlarged.") == {"Pneumothorax": 0, "Cardiomegaly": 1}
    assert mentioned("No evidence of consolidation, possible small effusion.") == {
        "Consolidation": 0,
        "Pleural Effusion": -1,
    }
    # "no change" is not a negation of the finding.
    assert label("There is no change in the small left pleural effusion.")["Pleural Effusion"] == 1
    # CheXpert's aggregation within a report: positive > uncertain > negative.
    assert label("No right pleural effusion. Small left pleural effusion.")["Pleural Effusion"] == 1
    assert label("No pleural effusion. Possible small pleural effusion on the lateral view.")["Pleural Effusion"] == -1
    # Exclusions: not the observation.
    assert label("Small pericardial effusion.")["Pleural Effusion"] is None
    assert label("A small pneumothorax with a visible pleural line.")["Support Devices"] is None
    assert label("Plate-like atelectasis at the left base.")["Support Devices"] is None
    # CheXpert: heart failure also makes cardiomegaly uncertain.
    assert mentioned("Findings consistent with congestive heart failure.") == {"Edema": 1, "Cardiomegaly": -1}


def test_no_finding():
    assert label("The heart is normal in size. The lungs are clear. No pneumothorax.")["No Finding"] == 1
    assert label("No acute cardiopulmonary process.")["No Finding"] == 1
    # Support devices do not count against No Finding (as in CheXpert); findings and uncertainty do.
    assert label("Endotracheal tube in standard position. Lungs are clear.")["No Finding"] == 1
    assert label("Mild cardiomegaly. Lungs are clear.")["No Finding"] is None
    assert label("Possible small left pleural effusion.")["No Finding"] is None
    # Abnormalities outside the 13 observations count too.
    assert label("Degenerative changes of the thoracic spine.")["No Finding"] is None
    assert label("No emphysema.")["No Finding"] == 1


# ------------------------------------------------------------------------------------- synthetic set


@pytest.fixture(scope="module")
def synthetic_studies():
    synthetic = pytest.importorskip("data_prep.synthetic")
    return synthetic.generate_studies(200, seed=0, image_size=32)


def test_synthetic_mapping():
    synthetic = pytest.importorskip("data_prep.synthetic")
    assert set(SYNTHETIC_TO_CHEXPERT) == set(synthetic.FINDINGS)
    assert set(SYNTHETIC_TO_CHEXPERT.values()) | {"No Finding"} == set(SYNTHETIC_OBSERVATIONS)
    truth = labels_from_findings(["pleural_effusion_left", "nodule"])
    assert truth["Pleural Effusion"] == 1 and truth["Lung Lesion"] == 1 and truth["Cardiomegaly"] == 0
    assert truth["No Finding"] == 0 and truth["Lung Opacity"] is None and truth["Edema"] is None
    assert labels_from_findings([])["No Finding"] == 1
    with pytest.raises(ValueError, match="Unknown synthetic finding"):
        labels_from_findings(["effusion"])


@pytest.mark.parametrize("cleaned", [False, True], ids=["raw", "cleaned"])
@pytest.mark.parametrize("uncertain", ["negative", "positive"])
def test_synthetic_reports_recover_ground_truth(synthetic_studies, cleaned, uncertain):
    texts = [clean_report(study.report) if cleaned else study.report for study in synthetic_studies]
    truth = [labels_from_findings(study.finding_labels) for study in synthetic_studies]
    predicted = label_reports(texts)
    scores = ce_metrics_from_labels(
        predicted, truth, uncertain=uncertain, observation_groups={"": SYNTHETIC_OBSERVATIONS}
    )
    assert scores["ce_micro_f1"] >= 0.95, scores
    assert scores["ce_macro_f1"] >= 0.9, scores


# ----------------------------------------------------------------------------------------- CE scores

CE_REFERENCES = [
    "Mild cardiomegaly. Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Right lower lobe consolidation. Possible pneumonia.",
    "Moderate pulmonary edema. Cardiomegaly.",
]
CE_PREDICTIONS = [
    "Cardiomegaly. No pleural effusion.",
    "The lungs are clear.",
    "Right lower lobe consolidation and atelectasis.",
    "Pulmonary edema.",
]


def test_ce_metrics_hand_computed():
    # Positives (label 1): references {Cardiomegaly, Effusion}, {No Finding}, {Consolidation} (+ Pneumonia -1),
    # {Edema, Cardiomegaly}; predictions {Cardiomegaly}, {No Finding}, {Consolidation, Atelectasis}, {Edema}.
    # Per observation (TP, FP, FN): Cardiomegaly (1, 0, 1), Effusion (0, 0, 1), No Finding (1, 0, 0),
    # Consolidation (1, 0, 0), Atelectasis (0, 1, 0), Edema (1, 0, 0); the other 8 have none (all scores 0).
    scores = compute_ce_metrics(CE_PREDICTIONS, CE_REFERENCES)
    expected = {
        "ce_micro_precision": 4 / 5,
        "ce_micro_recall": 4 / 6,
        "ce_micro_f1": 8 / 11,
        "ce_macro_precision": (1 + 0 + 1 + 1 + 0 + 1) / 14,
        "ce_macro_recall": (0.5 + 0 + 1 + 1 + 0 + 1) / 14,
        "ce_macro_f1": (2 / 3 + 0 + 1 + 1 + 0 + 1) / 14,
        # The 5: Atelectasis (0, 1, 0), Cardiomegaly (1, 0, 1), Consolidation (1, 0, 0), Edema (1, 0, 0),
        # Pleural Effusion (0, 0, 1).
        "ce_micro_precision_5": 3 / 4,
        "ce_micro_recall_5": 3 / 5,
        "ce_micro_f1_5": 6 / 9,
        "ce_macro_precision_5": 3 / 5,
        "ce_macro_recall_5": 2.5 / 5,
        "ce_macro_f1_5": (0 + 2 / 3 + 1 + 1 + 0) / 5,
    }
    assert set(scores) == set(CE_METRIC_KEYS) | {"labeler"}
    assert scores["labeler"] == "rule-based CheXpert-style (r2gen_hf)"
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key
    # Uncertain counted as positive: the reference's "possible pneumonia" becomes a missed positive.
    positive = compute_ce_metrics(CE_PREDICTIONS, CE_REFERENCES, uncertain="positive")
    assert positive["ce_micro_precision"] == pytest.approx(4 / 5)
    assert positive["ce_micro_recall"] == pytest.approx(4 / 7)
    assert positive["ce_micro_f1"] == pytest.approx(8 / 12)
    # Cleaned text gives the same labels here.
    cleaned = compute_ce_metrics([clean_report(t) for t in CE_PREDICTIONS], [clean_report(t) for t in CE_REFERENCES])
    assert cleaned == scores


def test_ce_metrics_edge_cases():
    perfect = compute_ce_metrics(CE_REFERENCES, CE_REFERENCES)
    assert perfect["ce_micro_f1"] == 1.0 and perfect["ce_micro_f1_5"] == 1.0
    # zero_division=0: observations without any positive count as 0 in the macro mean.
    assert perfect["ce_macro_f1"] == pytest.approx(5 / 14)  # 5 observations have a positive
    per = compute_ce_metrics(CE_PREDICTIONS, CE_REFERENCES, per_observation=True)
    assert per["ce_f1_cardiomegaly"] == pytest.approx(2 / 3) and per["ce_recall_pleural_effusion"] == 0.0
    with pytest.raises(ValueError, match="same length"):
        compute_ce_metrics(["a"], ["b", "c"])
    with pytest.raises(ValueError, match="uncertain"):
        compute_ce_metrics(["a"], ["b"], uncertain="ignore")
    with pytest.raises(ValueError, match="empty reference"):
        compute_ce_metrics(["a"], [" "])


def test_ce_evaluate_module_offline(tmp_path):
    import evaluate

    module = evaluate.load(str(clinical.CE_EVALUATE_MODULE), cache_dir=str(tmp_path))
    scores = module.compute(predictions=CE_PREDICTIONS, references=CE_REFERENCES)
    assert scores == compute_ce_metrics(CE_PREDICTIONS, CE_REFERENCES)
    assert module.compute(predictions=CE_PREDICTIONS, references=CE_REFERENCES, uncertain="positive")[
        "ce_micro_recall"
    ] == pytest.approx(4 / 7)


# -------------------------------------------------------------------------------- optional back ends


@pytest.fixture
def fresh_backends(monkeypatch):
    monkeypatch.setattr(clinical, "_LABELER_CACHE", {})
    monkeypatch.setattr(clinical, "_RADGRAPH_CACHE", {})


def test_chexbert_missing_gives_clear_error(monkeypatch, fresh_backends):
    monkeypatch.setitem(sys.modules, "f1chexbert", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install f1chexbert") as info:
        compute_ce_metrics(["mild cardiomegaly ."], ["mild cardiomegaly ."], labeler="chexbert")
    assert "Hub" in str(info.value) and "labeler='rule'" in str(info.value)


def test_chexbert_weights_unavailable_gives_clear_error(monkeypatch, fresh_backends):
    fake = types.ModuleType("f1chexbert")

    class F1CheXbert:
        def __init__(self, **kwargs):
            raise OSError("We couldn't connect to 'https://huggingface.co'")

    fake.F1CheXbert = F1CheXbert
    monkeypatch.setitem(sys.modules, "f1chexbert", fake)
    with pytest.raises(RuntimeError, match="Could not load CheXbert") as info:
        label_reports(["x"], labeler="chexbert")
    assert "download from the Hugging Face Hub on first use" in str(info.value)


def test_chexbert_labels_are_converted(monkeypatch, fresh_backends):
    fake = types.ModuleType("f1chexbert")

    class F1CheXbert:
        def __init__(self, **kwargs):
            pass

        def get_label(self, report, mode="rrg"):
            assert mode == "classification"
            # CheXpert order; '' blank, 1, 0, -1 as f1chexbert's classification mode.
            values = [""] * 14
            if "enlarged" in report:
                values[1] = 1
            else:
                values[13] = 1
            if "effusion" in report:
                values[9] = -1
            return values

    fake.F1CheXbert = F1CheXbert
    monkeypatch.setitem(sys.modules, "f1chexbert", fake)
    labels = label_reports(["heart enlarged, effusion?", "normal"], labeler="chexbert")
    assert labels[0]["Cardiomegaly"] == 1 and labels[0]["Pleural Effusion"] == -1 and labels[0]["Edema"] is None
    assert labels[1]["No Finding"] == 1
    scores = compute_ce_metrics(["heart enlarged", "normal"], ["heart enlarged", "heart enlarged"], labeler="chexbert")
    assert scores["labeler"] == "CheXbert (f1chexbert)"
    assert scores["ce_micro_precision"] == pytest.approx(1 / 2) and scores["ce_micro_recall"] == pytest.approx(1 / 2)


def test_radgraph_missing_gives_clear_error(monkeypatch, fresh_backends):
    monkeypatch.setitem(sys.modules, "radgraph", None)
    with pytest.raises(ImportError, match=r"pip install radgraph"):
        compute_radgraph_f1(["a"], ["b"])
    with pytest.raises(ImportError, match=r"pip install radgraph"):
        compute_report_metrics(["a"], ["b"], meteor=False, radgraph=True)


def test_radgraph_scores_and_interval(monkeypatch, fresh_backends):
    fake = types.ModuleType("radgraph")

    class F1RadGraph:
        def __init__(self, reward_level, **kwargs):
            assert reward_level == "all"

        def __call__(self, hyps, refs):
            rewards = [tuple(0.1 * (i % 5) + 0.01 * k for k in range(3)) for i in range(len(hyps))]
            mean = tuple(float(np.mean([r[k] for r in rewards])) for k in range(3))
            return mean, rewards, None, None

    fake.F1RadGraph = F1RadGraph
    monkeypatch.setitem(sys.modules, "radgraph", fake)
    predictions = [f"report {i} ." for i in range(20)]
    scores = compute_radgraph_f1(predictions, predictions)
    assert scores["radgraph_f1_partial"] == pytest.approx(0.21)
    metrics = compute_report_metrics(
        predictions, predictions, labeler=None, bootstrap_samples=50, meteor=False, radgraph=True
    )
    assert metrics["radgraph_f1_partial_ci_low"] <= 0.21 <= metrics["radgraph_f1_partial_ci_high"]


# ------------------------------------------------------------------------------------------ bootstrap


def test_resamples_are_seeded():
    a, b, c = resample_indices(30, 20, seed=3), resample_indices(30, 20, seed=3), resample_indices(30, 20, seed=4)
    assert a.shape == (20, 30) and (a == b).all() and not (a == c).all()
    weights = np.concatenate(list(iter_resample_chunks(30, 20, seed=3, chunk=7)))
    assert (weights == np.stack([np.bincount(row, minlength=30) for row in a])).all()
    assert percentile_interval([1.0, 2.0, 3.0, np.nan], 0.5) == (1.5, 2.5)


@pytest.fixture(scope="module")
def scored_pairs(synthetic_studies):
    # Predictions: the reports of other studies (some agree, most do not), cleaned as the model's would be.
    references = [clean_report(study.report) for study in synthetic_studies[:60]]
    predictions = [clean_report(study.report) for study in synthetic_studies[60:120]]
    predictions[:15] = references[:15]
    return predictions, references


def test_bootstrap_ci_reproducible_and_contains_point(scored_pairs):
    predictions, references = scored_pairs
    metric_fn = functools.partial(compute_ce_metrics, labeler="rule")
    point = metric_fn(predictions, references)
    first = bootstrap_ci(metric_fn, predictions, references, num_samples=100, seed=7)
    again = bootstrap_ci(metric_fn, predictions, references, num_samples=100, seed=7)
    other = bootstrap_ci(metric_fn, predictions, references, num_samples=100, seed=8)
    assert first == again and first != other
    assert "labeler" not in first and set(first) == set(CE_METRIC_KEYS)
    for key in ("ce_micro_f1", "ce_micro_precision", "ce_micro_recall", "ce_micro_f1_5", "ce_macro_f1"):
        low, high = first[key]
        assert low <= point[key] <= high, (key, low, point[key], high)
        assert low < high
    # Same resamples, labels reused: the fast CE bootstrap gives the same intervals.
    labeled = label_reports(predictions), label_reports(references)
    fast = ce_bootstrap_ci(*labeled, num_samples=100, seed=7)
    for key in first:
        assert fast[key] == pytest.approx(first[key], abs=1e-12)
    narrow = bootstrap_ci(
        metric_fn, predictions, references, num_samples=100, seed=7, confidence=0.5, metrics=["ce_micro_f1"]
    )
    assert (
        list(narrow) == ["ce_micro_f1"]
        and first["ce_micro_f1"][0] <= narrow["ce_micro_f1"][0] <= narrow["ce_micro_f1"][1] <= first["ce_micro_f1"][1]
    )


def test_nlg_bootstrap_equals_recomputation(scored_pairs):
    predictions, references = scored_pairs
    predictions, references = predictions[:25], references[:25]
    samples = nlg_bootstrap_samples(predictions, references, num_samples=6, seed=1)
    for s, indices in enumerate(resample_indices(len(predictions), 6, seed=1)):
        expected = compute_nlg_metrics(
            [predictions[i] for i in indices], [references[i] for i in indices], meteor=False
        )
        for key, values in samples.items():
            assert values[s] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (s, key)
    # ... and so the intervals equal the generic bootstrap's.
    generic = bootstrap_ci(
        functools.partial(compute_nlg_metrics, meteor=False), predictions, references, num_samples=6, seed=1
    )
    fast = nlg_bootstrap_ci(predictions, references, num_samples=6, seed=1)
    assert set(fast) == set(generic)
    for key in fast:
        assert fast[key] == pytest.approx(generic[key], rel=1e-9, abs=1e-12)


def test_compute_report_metrics(scored_pairs):
    predictions, references = scored_pairs
    plain = compute_report_metrics(predictions, references, meteor=False)
    assert plain["labeler"] == "rule-based CheXpert-style (r2gen_hf)"
    assert {"bleu_4", "rouge_l", "cider", "ce_micro_f1", "ce_macro_f1_5"} <= set(plain) and "meteor" not in plain
    assert not any(key.endswith("_ci_low") for key in plain)
    assert plain["ce_micro_f1"] == compute_ce_metrics(predictions, references)["ce_micro_f1"]
    assert plain["bleu_4"] == compute_nlg_metrics(predictions, references, meteor=False)["bleu_4"]

    metrics = compute_report_metrics(predictions, references, bootstrap_samples=200, seed=0, meteor=False)
    again = compute_report_metrics(predictions, references, bootstrap_samples=200, seed=0, meteor=False)
    assert metrics == again
    assert metrics["bootstrap_samples"] == 200 and metrics["bootstrap_confidence"] == 0.95
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider", *CE_METRIC_KEYS):
        assert metrics[key] == plain[key]
        assert f"{key}_ci_low" in metrics and f"{key}_ci_high" in metrics
    for key in ("bleu_1", "bleu_4", "rouge_l", "ce_micro_f1", "ce_micro_f1_5"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    only = compute_report_metrics(
        predictions, references, bootstrap_samples=20, meteor=False, bootstrap_metrics=["ce_micro_f1"]
    )
    assert [key for key in only if key.endswith("_ci_low")] == ["ce_micro_f1_ci_low"]
    with pytest.raises(ValueError, match="bootstrap_metrics"):
        compute_report_metrics(predictions, references, bootstrap_samples=5, meteor=False, bootstrap_metrics=["meteor"])
    no_ce = compute_report_metrics(predictions, references, labeler=None, meteor=False)
    assert "labeler" not in no_ce and "ce_micro_f1" not in no_ce
