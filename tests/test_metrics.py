"""NLG metrics: equal to pycocoevalcap's scorers on the same strings, as `evaluate` modules offline, and
the input contract (lengths, empty strings, order)."""

import gc
import os
import random
import socket
import stat
import threading

import pytest

from r2gen_hf.metrics import (
    METRIC_MODULES,
    NLG_METRIC_KEYS,
    MeteorScorer,
    bleu_scores,
    cider_score,
    compute_nlg_metrics,
    get_meteor_scorer,
    load_metric,
    meteor_score,
    rouge_l_score,
)


pycocoevalcap_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
pycocoevalcap_cider = pytest.importorskip("pycocoevalcap.cider.cider")
pycocoevalcap_meteor = pytest.importorskip("pycocoevalcap.meteor.meteor")
pycocoevalcap_rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")

# (prediction, reference): cleaned R2Gen-style reports.
PAIRS = [
    # identical
    ("the heart is normal in size . the lungs are clear .", "the heart is normal in size . the lungs are clear ."),
    # paraphrase, partly reordered
    (
        "the heart size is normal . the lungs are clear . there is no pneumothorax .",
        "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear .",
    ),
    # totally different
    (
        "degenerative changes of the thoracic spine .",
        "large right pleural effusion with compressive atelectasis of the right lower lobe .",
    ),
    # empty prediction
    ("", "no acute cardiopulmonary abnormality ."),
    # repeated words
    ("the the the lungs lungs are are clear clear clear .", "the lungs are clear ."),
    # much longer than the reference
    (
        "the cardiomediastinal silhouette is within normal limits . the lungs are clear . there is no "
        "pneumothorax or pleural effusion . no focal airspace disease . the osseous structures are intact .",
        "no acute cardiopulmonary abnormality . the lungs are clear .",
    ),
    # much shorter than the reference (brevity penalty)
    (
        "no acute disease .",
        "heart size is mildly enlarged . there is mild pulmonary vascular congestion . small bilateral "
        "pleural effusions . no pneumothorax . degenerative changes of the thoracic spine .",
    ),
    # numbers and hyphens, as the cleaner leaves them
    (
        "there is a 5 mm nodule in the right upper lobe . post-surgical changes are noted .",
        "a 5 mm right upper lobe nodule is unchanged . post-surgical changes of sternotomy are noted .",
    ),
    # stems and synonyms (METEOR's matchers)
    ("heart size is enlarged . lungs clear .", "cardiomegaly . the lung is clear ."),
    # one word, and one whitespace-only prediction
    ("normal .", "the lungs are clear . no pleural effusion ."),
    ("   ", "stable appearance of the chest ."),
]
PREDICTIONS = [prediction for prediction, _ in PAIRS]
REFERENCES = [reference for _, reference in PAIRS]


def coco_inputs(predictions, references):
    return {i: [r] for i, r in enumerate(references)}, {i: [p] for i, p in enumerate(predictions)}


@pytest.fixture(scope="module")
def pycoco_meteor():
    """pycocoevalcap's own Meteor (its own JVM), started together with our shared one: both load the
    paraphrase table (10-20 s) at the same time."""
    get_meteor_scorer().start()
    meteor = pycocoevalcap_meteor.Meteor()
    yield meteor
    meteor.__del__()  # stops its JVM; its stdout/stderr pipes it leaves open
    meteor.meteor_p.stdout.close()
    meteor.meteor_p.stderr.close()
    del meteor
    gc.collect()


def pycocoevalcap_scores(predictions, references, meteor):
    gts, res = coco_inputs(predictions, references)
    bleu, _ = pycocoevalcap_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu_{k + 1}": bleu[k] for k in range(4)}
    scores["meteor"], _ = meteor.compute_score(gts, res)
    scores["rouge_l"], _ = pycocoevalcap_rouge.Rouge().compute_score(gts, res)
    scores["cider"], _ = pycocoevalcap_cider.Cider().compute_score(gts, res)
    return scores


def assert_equal_scores(ours, theirs, tolerance=1e-6):
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key] == pytest.approx(float(theirs[key]), abs=tolerance), key


@pytest.mark.parametrize(
    "indices",
    [list(range(len(PAIRS))), [1, 2, 3, 4, 5, 6, 7, 8], [0, 4, 9], [2, 5]],
    ids=["all", "without-identical", "three", "two"],
)
def test_equal_to_pycocoevalcap(pycoco_meteor, indices):
    predictions = [PREDICTIONS[i] for i in indices]
    references = [REFERENCES[i] for i in indices]
    ours = compute_nlg_metrics(predictions, references)
    assert list(ours) == list(NLG_METRIC_KEYS)
    assert all(type(value) is float for value in ours.values())
    assert_equal_scores(ours, pycocoevalcap_scores(predictions, references, pycoco_meteor))
    # The single-metric functions give the same numbers.
    assert bleu_scores(predictions, references) == {key: ours[key] for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4")}
    assert rouge_l_score(predictions, references) == ours["rouge_l"]
    assert cider_score(predictions, references) == ours["cider"]
    assert meteor_score(predictions, references) == ours["meteor"]


def test_equal_to_pycocoevalcap_on_a_larger_corpus(pycoco_meteor):
    """200 pairs drawn from report sentences: corpus statistics (BLEU's brevity penalty, CIDEr's idf,
    METEOR's aggregate) over many studies."""
    sentences = [reference.rstrip(" .").split(" . ") for reference in REFERENCES]
    pool = sorted({sentence for report in sentences for sentence in report})
    rng = random.Random(0)

    def report():
        return " . ".join(rng.sample(pool, rng.randint(1, 5))) + " ."

    predictions = [report() for _ in range(200)]
    references = [report() for _ in range(200)]
    assert_equal_scores(
        compute_nlg_metrics(predictions, references), pycocoevalcap_scores(predictions, references, pycoco_meteor)
    )


def test_values_are_fractions_and_perfect_on_identical_reports():
    scores = compute_nlg_metrics(PREDICTIONS, REFERENCES)
    for key in NLG_METRIC_KEYS:
        upper = 10.0 if key == "cider" else 1.0  # pycocoevalcap's CIDEr-D is scaled by 10
        assert 0.0 <= scores[key] <= upper, key
    assert 0.0 < scores["bleu_4"] < 1.0 and 0.0 < scores["cider"] < 10.0

    perfect = compute_nlg_metrics(REFERENCES, REFERENCES)
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l"):
        assert perfect[key] == pytest.approx(1.0, abs=1e-6), key
    assert perfect["cider"] == pytest.approx(10.0, abs=1e-6)


def test_order_invariance():
    order = list(range(len(PAIRS)))
    random.Random(1).shuffle(order)
    shuffled = compute_nlg_metrics([PREDICTIONS[i] for i in order], [REFERENCES[i] for i in order])
    assert_equal_scores(shuffled, compute_nlg_metrics(PREDICTIONS, REFERENCES), tolerance=1e-9)


def test_empty_predictions_count_as_empty_strings():
    # An empty prediction is scored (zero), never dropped: ROUGE-L's mean over studies shrinks accordingly.
    n = len(PAIRS)
    with_empty = compute_nlg_metrics(PREDICTIONS + [""], REFERENCES + ["the lungs are clear ."])
    assert with_empty["rouge_l"] == pytest.approx(rouge_l_score(PREDICTIONS, REFERENCES) * n / (n + 1))
    all_empty = compute_nlg_metrics(["", " "], REFERENCES[:2])
    assert all(value == pytest.approx(0.0, abs=1e-6) for value in all_empty.values()), all_empty


def test_newlines_do_not_desynchronise_meteor():
    reference = "the heart is normal in size . the lungs are clear ."
    prediction = "the heart is normal . the lungs are clear ."
    scorer = get_meteor_scorer()
    expected = scorer.score([prediction, "no effusion ."], [reference, "no pleural effusion ."])
    with_newlines = scorer.score(
        [prediction.replace(" . ", " .\n"), "no effusion .\r\n"],
        [reference.replace(" . ", " .\n"), "no pleural effusion ."],
    )
    assert with_newlines == expected
    assert scorer.score([prediction], [reference])[0] == expected[1][0]  # still in step


def test_meteor_is_thread_safe():
    expected = meteor_score(PREDICTIONS, REFERENCES)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(meteor_score(PREDICTIONS, REFERENCES))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4


def test_input_checks():
    with pytest.raises(ValueError, match="3 predictions and 2 references"):
        compute_nlg_metrics(PREDICTIONS[:3], REFERENCES[:2])
    for function in (bleu_scores, rouge_l_score, cider_score, meteor_score):
        with pytest.raises(ValueError, match="2 predictions and 1 references"):
            function(PREDICTIONS[:2], REFERENCES[:1])
    with pytest.raises(ValueError, match="No .* pairs"):
        compute_nlg_metrics([], [])
    with pytest.raises(ValueError, match="empty reference.*index 1"):
        compute_nlg_metrics(PREDICTIONS[:2], [REFERENCES[0], "  "])
    with pytest.raises(TypeError, match=r"predictions\[1\]"):
        compute_nlg_metrics([PREDICTIONS[0], None], REFERENCES[:2])
    with pytest.raises(TypeError):
        compute_nlg_metrics("a report", "a report")


def test_without_meteor_needs_no_java(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    scores = compute_nlg_metrics(PREDICTIONS, REFERENCES, meteor=False)
    assert list(scores) == [key for key in NLG_METRIC_KEYS if key != "meteor"]
    with pytest.raises(RuntimeError, match="METEOR needs a Java runtime"):
        MeteorScorer().score(PREDICTIONS, REFERENCES)


def test_meteor_failures_are_reported(tmp_path):
    # The JVM cannot start (no jar): its stderr is quoted.
    with pytest.raises(RuntimeError, match="(?s)exited unexpectedly.*Unable to access jarfile"):
        MeteorScorer(jar=tmp_path / "missing.jar").score(PREDICTIONS[:1], REFERENCES[:1])
    # A JVM that never answers: a timeout, not a hang.
    silent = tmp_path / "java"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(silent.stat().st_mode | stat.S_IEXEC)
    scorer = MeteorScorer(java=silent, timeout=0.5)
    with pytest.raises(RuntimeError, match="no answer within 0.5 s"):
        scorer.score(PREDICTIONS[:1], REFERENCES[:1])
    assert not scorer.running


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", sorted(set(METRIC_MODULES) - {"ce"}))  # "ce": tests/test_clinical_metrics.py
def test_evaluate_modules_load_offline(name, no_network, tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    module = load_metric(name, cache_dir=str(tmp_path))
    scores = module.compute(predictions=PREDICTIONS, references=REFERENCES)
    expected = compute_nlg_metrics(PREDICTIONS, REFERENCES)
    keys = {
        "bleu": ["bleu_1", "bleu_2", "bleu_3", "bleu_4"],
        "meteor": ["meteor"],
        "rouge_l": ["rouge_l"],
        "cider": ["cider"],
        "nlg": list(NLG_METRIC_KEYS),
    }[name]
    assert scores == {key: expected[key] for key in keys}
    # evaluate's incremental interface goes through the same path.
    module.add_batch(predictions=PREDICTIONS[:4], references=REFERENCES[:4])
    module.add_batch(predictions=PREDICTIONS[4:], references=REFERENCES[4:])
    assert module.compute() == scores


def test_evaluate_nlg_module_without_meteor(no_network, tmp_path):
    import evaluate

    module = evaluate.load(str(METRIC_MODULES["nlg"]), cache_dir=str(tmp_path))
    scores = module.compute(predictions=PREDICTIONS, references=REFERENCES, meteor=False)
    assert "meteor" not in scores and scores["bleu_4"] == bleu_scores(PREDICTIONS, REFERENCES)["bleu_4"]
    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric("spice")
