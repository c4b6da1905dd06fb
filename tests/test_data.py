import json
import re

import pytest
from PIL import Image

from data_prep.common import SkipLog, Study, read_r2gen_annotation, write_prepared_dataset
from r2gen_hf.data import FEATURES, R2GenDataCollator, clean_report
from r2gen_hf.testing import tiny_config, tiny_processor


def r2gen_original_iu(report: str) -> str:
    """R2Gen's `clean_report_iu_xray`, verbatim in behaviour (bugs included), as the reference."""
    report_cleaner = lambda t: (  # noqa: E731
        t.replace("..", ".").replace("..", ".").replace("..", ".").replace("1. ", "")
        .replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ").replace(". 5. ", ". ")
        .replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ").replace(" 5. ", ". ")
        .strip().lower().split(". ")
    )
    sent_cleaner = lambda t: re.sub(  # noqa: E731
        "[.,?;*!%^&_+():-\\[\\]{}]", "",
        t.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower(),
    )
    tokens = [sent_cleaner(sent) for sent in report_cleaner(report) if sent_cleaner(sent) != []]
    return " . ".join(tokens) + " ."


ORDINARY_REPORTS = [
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "Heart size and pulmonary vascularity appear within normal limits. No pleural effusion or pneumothorax.",
    "Stable cardiomegaly (moderate). Mild pulmonary edema; small left-sided effusion!",
    "The cardiomediastinal silhouette is normal.. There are no focal consolidations, effusions or pneumothorax.",
]


@pytest.mark.parametrize("report", ORDINARY_REPORTS)
def test_matches_r2gen_where_r2gen_has_no_bug(report):
    assert clean_report(report) == r2gen_original_iu(report)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The heart is normal in size. The lungs are clear.", "the heart is normal in size . the lungs are clear ."),
        # R2Gen's `:-\[` range deleted < = > @; they are kept.
        ("Nodule size < 5 mm. Ratio = 0.5 @ apex.", "nodule size < 5 mm . ratio = 05 @ apex ."),
        ("Opacity > 2 cm.", "opacity > 2 cm ."),
        # Empty sentences are dropped (R2Gen left " .  ." artefacts).
        ("No effusion. . . No pneumothorax..", "no effusion . no pneumothorax ."),
        # Enumerations become sentence breaks, beyond R2Gen's fixed markers 1-5.
        ("1. No acute disease. 2. Stable cardiomegaly. 3. Low lung volumes", "no acute disease . stable cardiomegaly . low lung volumes ."),
        ("6. Degenerative change. 12. Old rib fracture.", "degenerative change . old rib fracture ."),
        # Vertebra names are not list markers.
        ("Compression deformity of T12. No other fracture.", "compression deformity of t12 . no other fracture ."),
        # Hyphens stay, as they did in R2Gen (its range swallowed the "-" it seemed to list).
        ('Quotes "like this", slashes a/b and x-ray.', "quotes like this slashes ab and x-ray ."),
        ("   ", ""),
        ("", ""),
    ],
)
def test_iu_xray_cleaning(text, expected):
    assert clean_report(text, "iu_xray") == expected


def test_r2gen_bugs_are_the_ones_we_fixed():
    assert r2gen_original_iu("Ratio = 0.5 @ apex.") == "ratio  05  apex ."  # = and @ lost
    assert r2gen_original_iu("No effusion. . . No pneumothorax..") == "no effusion .  .  . no pneumothorax ."
    assert clean_report("No effusion. . . No pneumothorax..") == "no effusion . no pneumothorax ."


def test_mimic_cxr_cleaning():
    text = (
        "FINDINGS:\n  PA and lateral views of the chest. ___ catheter tip\n in the ___ vein.  Heart size is\n"
        "normal.. No pleural effusion.\n\n1. No pneumothorax. 2. Stable ___."
    )
    assert clean_report(text, "mimic_cxr") == (
        "findings pa and lateral views of the chest . catheter tip in the vein . heart size is normal . "
        "no pleural effusion . no pneumothorax . stable ."
    )
    with pytest.raises(ValueError, match="style"):
        clean_report("x", "chexpert")


def test_skip_log_summary_and_file(tmp_path):
    log = SkipLog()
    log.add("missing image", study="a", file="x.png", field="image_path")
    log.add("missing image", study="b", file="y.png", field="image_path")
    log.add("empty report", study="c", file="c.xml", field="report")
    assert log.summary(10) == "kept 10 studies, skipped 3: missing image (2), empty report (1)"
    log.write(tmp_path / "skipped.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert [row["file"] for row in rows] == ["x.png", "y.png", "c.xml"]
    assert SkipLog().summary(4) == "kept 4 studies, skipped 0"


def test_r2gen_annotation_reader_reports_malformed_entries(tmp_path):
    annotation = {
        "train": [
            {"id": "s1", "report": "Normal.", "image_path": ["s1/0.png", "s1/1.png"]},
            {"id": "s2", "report": "Normal."},  # no image_path
            "not an object",
        ],
        "val": [{"id": "s3", "report": "Clear.", "image_path": "s3.png", "study_id": 7, "subject_id": 9}],
        "test": [],
    }
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(annotation))
    log = SkipLog()
    studies = read_r2gen_annotation(path, log)
    assert [(s.id, s.split, s.image_paths) for s in studies] == [
        ("s1", "train", ["s1/0.png", "s1/1.png"]),
        ("s3", "validation", ["s3.png"]),
    ]
    assert (studies[1].study_id, studies[1].subject_id) == ("7", "9")
    assert log.counts() == {"malformed entry": 2}
    assert {e["field"] for e in log.entries} == {"image_path", ""}
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        read_r2gen_annotation(tmp_path / "broken.json", SkipLog())


def test_writer_keeps_good_studies_and_reports_every_bad_one(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (400, 300), 128).save(images / "ok.png")
    (images / "truncated.png").write_bytes((images / "ok.png").read_bytes()[:60])
    studies = [
        Study(id="ok", report="Heart normal.", split="train", image_paths=["ok.png"], views=["PA"]),
        Study(id="missing", report="Heart normal.", split="train", image_paths=["nope.png"]),
        Study(id="truncated", report="Heart normal.", split="test", image_paths=["truncated.png"]),
        Study(id="empty", report=" \n ", split="test", image_paths=["ok.png"]),
        Study(id="odd-split", report="Heart normal.", split="dev", image_paths=["ok.png"]),
        Study(id="val", report="Lungs clear.", split="validation", image_paths=["ok.png", "ok.png"]),
    ]
    dataset, skipped = write_prepared_dataset(studies, tmp_path / "out", image_root=images, image_size=64, num_workers=2)
    assert {split: len(dataset[split]) for split in dataset} == {"train": 1, "validation": 1, "test": 0}
    assert skipped.counts() == {"missing image": 1, "unreadable image": 1, "empty report": 1, "unknown split": 1}
    row = dataset["train"][0]
    assert row["report"] == "heart normal ." and row["raw_report"] == "Heart normal."
    assert row["images"][0].size == (85, 64) and row["images"][0].mode == "L"
    assert dataset["train"].features == FEATURES
    annotation = json.loads((tmp_path / "out" / "annotation.json").read_text())
    assert [e["id"] for e in annotation["train"]] == ["ok"] and annotation["val"][0]["image_path"] == ["ok.png", "ok.png"]
    skipped_rows = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert {row["study"]: row["reason"] for row in skipped_rows}["truncated"] == "unreadable image"
    assert any(row["file"].endswith("truncated.png") for row in skipped_rows)
    info = json.loads((tmp_path / "out" / "prepare_info.json").read_text())
    assert info["summary"].startswith("kept 2 studies, skipped 4: ")
    assert info["studies"] == {"train": 1, "validation": 1, "test": 0}


def test_collator_builds_training_and_generation_batches(tmp_path):
    rows = [
        {"images": [Image.new("L", (40, 40), 10), Image.new("L", (40, 40), 200)], "report": "heart normal ."},
        {"images": [Image.new("L", (40, 40), 90)], "report": "lungs clear ."},
    ]
    processor = tiny_processor(tiny_config())
    train = R2GenDataCollator(processor)(rows)
    assert train["pixel_values"].shape[:2] == (2, 2) and "labels" in train
    assert processor.batch_decode(train["input_ids"]) == ["heart normal .", "lungs clear ."]
    generation = R2GenDataCollator(processor, include_reports=False)(rows)
    assert "labels" not in generation and generation["attention_mask"][:, -1].all()
