"""MIMIC-CXR preparation on a small fixture tree built in tmp: MIMIC-CXR-JPG layout, split / metadata CSVs
(plain and gzipped), reports with real section layouts, and the bad inputs that must be reported."""

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from data_prep import mimic_cxr
from data_prep.common import SkipLog
from r2gen_hf.data import clean_report


IMAGE_SIZE = 64
WIDTH, HEIGHT = 300, 360  # stored as (64, 77): shorter side IMAGE_SIZE, aspect kept
PIXEL = {"PA": 200, "AP": 120, "LATERAL": 40}  # uniform grey per view, so the chosen view shows in the pixels

REPORT_A = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough  // ? pneumonia
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 The lungs are clear without focal consolidation.  No pleural effusion or
 pneumothorax is seen. Heart size is normal, unchanged since ___.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""
REPORT_C = """                                 FINAL REPORT
 PORTABLE CHEST:  ___
 
 FINDINGS AND IMPRESSION:  Endotracheal tube tip terminates 4 cm above the
 carina.  Mild pulmonary edema
"""
REPORT_D = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  ___-year-old woman with dyspnea
 
 IMPRESSION:  
 
 1. Small right pleural effusion.
 2. No pneumothorax.
"""
REPORT_E = """ FINAL REPORT
 Findings:
 Cardiomediastinal silhouette is within normal limits.  Lungs are clear.
 Impression:
 Normal chest radiograph.
"""
REPORT_H = """ WET READ: ___ ___ ___ 10:18 PM
   PICC in SVC.
 
                                 FINAL REPORT
 INDICATION:  ___ with new PICC.
 
 FINDINGS:  Right PICC line ends in the mid SVC.
 
 IMPRESSION:  No pneumothorax.
 
 NOTIFICATION:  Dr. ___ was paged at 10:20 am.
"""

# (subject, study, official split, [(dicom_id, view)], report or None, report gzipped)
STUDIES = [
    # PA preferred over a smaller-id AP; the lateral has the smallest id of all.
    ("10000001", "50000001", "train", [("0a1b", "LATERAL"), ("1b2c", "AP"), ("2c3d", "PA")], REPORT_A, False),
    ("10000001", "50000002", "train", [("3d4e", "LATERAL")], REPORT_A, False),  # no frontal image
    ("10000002", "50000003", "train", [("5e6f", "AP"), ("4f5a", "AP")], REPORT_C, False),  # AP only: smallest id
    ("10000002", "50000004", "train", [("6a7b", "PA")], REPORT_D, False),  # IMPRESSION only
    ("11000003", "50000005", "validate", [("7b8c", "PA")], REPORT_E, True),  # gzipped report, title case
    ("11000003", "50000006", "test", [("8c9d", "PA")], REPORT_A, False),  # truncated JPEG
    ("11000003", "50000007", "test", [("9d0e", "PA")], None, False),  # no report file
    ("12000004", "50000008", "test", [("ad01", "PA"), ("ac02", "PA"), ("aa03", "LATERAL")], REPORT_H, False),
    ("12000004", "50000009", "test", [("be04", "PA")], REPORT_A, False),  # its split row is malformed
]
TRUNCATED = "8c9d"
MALFORMED_SPLIT = "be04"  # its split CSV row has too few fields
MALFORMED_METADATA_ROW = ["cf05", "12000004", "50000008", "", "AP", "2500", "3000", "extra"]  # a field too many

EXPECTED_FINDINGS = {
    "2c3d": "the lungs are clear without focal consolidation . no pleural effusion or pneumothorax is seen . "
    "heart size is normal unchanged since .",
    "4f5a": "endotracheal tube tip terminates 4 cm above the carina . mild pulmonary edema .",
    "7b8c": "cardiomediastinal silhouette is within normal limits . lungs are clear .",
    "ac02": "right picc line ends in the mid svc .",
}
EXPECTED_FINDINGS_IMPRESSION = {
    "2c3d": EXPECTED_FINDINGS["2c3d"] + " no acute cardiopulmonary process .",
    "4f5a": EXPECTED_FINDINGS["4f5a"],  # a combined section and nothing else
    "6a7b": "small right pleural effusion . no pneumothorax .",  # IMPRESSION alone
    "7b8c": EXPECTED_FINDINGS["7b8c"] + " normal chest radiograph .",
    "ac02": EXPECTED_FINDINGS["ac02"] + " no pneumothorax .",
}


# ---------------------------------------------------------------------------------------------- fixture


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write(path: Path, text: str, gzipped: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if gzipped else text.encode())


def build_mimic_tree(root: Path) -> dict:
    jpg_root, reports_root, csv_dir = root / "mimic-cxr-jpg", root / "mimic-cxr-reports", root / "csv"
    split_rows, metadata_rows = [], []
    for subject, study, split, images, report, report_gz in STUDIES:
        folder = f"files/p{subject[:2]}/p{subject}/s{study}"
        for dicom_id, view in images:
            path = jpg_root / folder / f"{dicom_id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (WIDTH, HEIGHT), PIXEL[view]).save(path, quality=95)
            if dicom_id == TRUNCATED:
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            split_rows.append([dicom_id, study, subject] + ([] if dicom_id == MALFORMED_SPLIT else [split]))
            metadata_rows.append([dicom_id, subject, study, "CHEST (PA AND LAT)", view, str(HEIGHT), str(WIDTH)])
        if report is not None:
            _write(reports_root / f"{folder}.txt{'.gz' if report_gz else ''}", report, report_gz)
    metadata_rows.append(MALFORMED_METADATA_ROW)
    split_text = _csv_text(["dicom_id", "study_id", "subject_id", "split"], split_rows)
    metadata_text = _csv_text(
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"],
        metadata_rows,
    )
    # Explicit paths: gzipped split, plain metadata. In the JPG root, where they are found by default: the other way.
    _write(csv_dir / "split.csv.gz", split_text, True)
    _write(csv_dir / "metadata.csv", metadata_text, False)
    _write(jpg_root / "mimic-cxr-2.0.0-split.csv", split_text, False)
    _write(jpg_root / "mimic-cxr-2.0.0-metadata.csv.gz", metadata_text, True)
    return {
        "jpg_root": jpg_root,
        "reports_root": reports_root,
        "split_csv": csv_dir / "split.csv.gz",
        "metadata_csv": csv_dir / "metadata.csv",
        "split_line": {row[0]: index + 2 for index, row in enumerate(split_rows)},  # header is line 1
        "metadata_line": len(metadata_rows) + 1,
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_mimic_tree(tmp_path_factory.mktemp("mimic"))


@pytest.fixture(scope="module")
def findings_run(tree, tmp_path_factory):
    """The default conversion (FINDINGS, one image per study) under --strict: fails, with the report written."""
    output = tmp_path_factory.mktemp("out") / "findings"
    code = mimic_cxr.main([
        "--jpg_root", str(tree["jpg_root"]), "--reports_root", str(tree["reports_root"]),
        "--split_csv", str(tree["split_csv"]), "--metadata_csv", str(tree["metadata_csv"]),
        "--output", str(output), "--image_size", str(IMAGE_SIZE), "--num_workers", "2", "--strict",
    ])
    skipped = [json.loads(line) for line in (output / "skipped.jsonl").read_text().splitlines()]
    return {"code": code, "output": output, "dataset": load_from_disk(str(output)), "skipped": skipped}


@pytest.fixture(scope="module")
def findings_impression_run(tree, tmp_path_factory):
    """FINDINGS + IMPRESSION, two images per study, CSVs found in the JPG root (plain split, gzipped metadata)."""
    output = tmp_path_factory.mktemp("out") / "findings_impression"
    code = mimic_cxr.main([
        "--jpg_root", str(tree["jpg_root"]), "--reports_root", str(tree["reports_root"]),
        "--output", str(output), "--image_size", str(IMAGE_SIZE), "--num_workers", "2",
        "--sections", "findings_impression", "--max_images_per_study", "2",
    ])
    return {"code": code, "output": output, "dataset": load_from_disk(str(output))}


def _rows(dataset, split):
    return {row["id"]: row for row in dataset[split]}


# ---------------------------------------------------------------------------------------- section parser


@pytest.mark.parametrize(
    "text, sections, expected",
    [
        (REPORT_A, "findings", "The lungs are clear without focal consolidation.  No pleural effusion or\n"
         "pneumothorax is seen. Heart size is normal, unchanged since ___."),
        (REPORT_D, "findings", ""),  # IMPRESSION only
        (REPORT_D, "findings_impression", "1. Small right pleural effusion.\n2. No pneumothorax."),
        (REPORT_C, "findings", "Endotracheal tube tip terminates 4 cm above the\ncarina.  Mild pulmonary edema"),
        # a period closes the findings before the impression
        (" FINDINGS: Lungs clear\n IMPRESSION: Normal.", "findings_impression", "Lungs clear.\nNormal."),
        (" FINDINGS/IMPRESSION:  No change.\n", "findings", "No change."),
        (" FINDNGS:  Typo header.\n IMPRESSON:  Typo too.\n", "findings_impression", "Typo header.\nTypo too."),
        (" CHEST, TWO VIEWS:  Old style, no FINDINGS header.\n", "findings", "Old style, no FINDINGS header."),
        # repeated sections (addenda, re-dictation): the last non-empty one wins
        (" FINDINGS:  First.\n FINDINGS:  Second.\n FINDINGS:\n\n IMPRESSION: x.", "findings", "Second."),
        (" INDICATION:  ___ with findings of cough.\n COMPARISON:  ___\n", "findings", ""),
        (" WET READ: ___ 10:18 PM\n  Findings: no pneumonia\n", "findings", "no pneumonia"),
        # times, list items and lower-case "words:" inside a section do not start sections
        (" FINDINGS:  1. Tube: in place.\n Paged at 10:18: ok.\n Heart: normal.\n IMPRESSION: x", "findings",
         "1. Tube: in place.\nPaged at 10:18: ok.\nHeart: normal."),
    ],
)
def test_extract_report(text, sections, expected):
    assert mimic_cxr.extract_report(text, sections) == expected


def test_section_kinds():
    kinds = {header: kind for header, kind, _ in mimic_cxr.split_sections(REPORT_H)}
    assert kinds == {"": "preamble", "WET READ": "other", "INDICATION": "other", "FINDINGS": "findings",
                     "IMPRESSION": "impression", "NOTIFICATION": "other"}
    assert mimic_cxr.section_kind("FINDINGS AND IMPRESSION") == "findings_impression"
    assert mimic_cxr.section_kind("CONCLUSION") == "impression"
    assert mimic_cxr.section_kind("INDICATION") == "other"  # not a typo of "impression"
    assert mimic_cxr.section_kind("COMPARISON") == "other"
    assert mimic_cxr.section_kind("EXAMINATION") == "other"


def test_choose_images():
    Record = mimic_cxr.ImageRecord
    images = [Record("a", "1", "2", "train", "LATERAL"), Record("b", "1", "2", "train", "AP"),
              Record("d", "1", "2", "train", "PA"), Record("c", "1", "2", "train", "PA"),
              Record("0", "1", "2", "train", ""), Record("1", "1", "2", "train", "AP AXIAL")]
    assert [image.dicom_id for image in mimic_cxr.choose_images(images)] == ["c"]
    assert [image.dicom_id for image in mimic_cxr.choose_images(images, 2)] == ["c", "d"]
    assert [image.dicom_id for image in mimic_cxr.choose_images(images, 0)] == ["c", "d", "b"]
    assert mimic_cxr.choose_images([images[0], images[4], images[5]]) == []


def test_read_csv_rows_reports_malformed_rows(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text('dicom_id,study_id,subject_id,split\na,50000001,10000001,train\nb,50000001\n'
                    'c,50000001,10000001,train,extra\nd,,10000001,train\ne,5000x,10000001,test\n'
                    'f,50000002,10000001,holdout\n"g,50000003,10000001,train\n')
    skipped = SkipLog()
    images = mimic_cxr.read_split_csv(path, skipped)
    assert images == {"a": ("10000001", "50000001", "train")}
    assert [entry["reason"] for entry in skipped.entries] == ["malformed csv row"] * 6
    assert [entry["file"] for entry in skipped.entries][:5] == [f"{path}:{line}" for line in (3, 4, 5, 6, 7)]
    assert "expected 4 fields, got 2" in skipped.entries[0]["detail"]
    assert "holdout" in skipped.entries[4]["detail"]


# ------------------------------------------------------------------------------------------ raw MIMIC-CXR


def test_official_split_and_counts(findings_run):
    dataset = findings_run["dataset"]
    assert {split: sorted(dataset[split]["id"]) for split in dataset} == {
        "train": ["2c3d", "4f5a"], "validation": ["7b8c"], "test": ["ac02"],
    }
    info = json.loads((findings_run["output"] / "prepare_info.json").read_text())
    assert info["studies"] == {"train": 2, "validation": 1, "test": 1}
    assert info["sections"] == "findings" and info["max_images_per_study"] == 1
    annotation = json.loads((findings_run["output"] / "annotation.json").read_text())
    assert [entry["id"] for entry in annotation["val"]] == ["7b8c"]
    assert annotation["val"][0]["image_path"] == ["files/p11/p11000003/s50000005/7b8c.jpg"]
    assert (annotation["val"][0]["study_id"], annotation["val"][0]["subject_id"]) == ("50000005", "11000003")


def test_view_selection(findings_run):
    rows = {**_rows(findings_run["dataset"], "train"), **_rows(findings_run["dataset"], "test")}
    assert rows["2c3d"]["views"] == ["PA"]  # PA over a smaller-id AP and lateral
    assert rows["4f5a"]["views"] == ["AP"]  # AP only: the smaller of two dicom ids
    assert rows["ac02"]["views"] == ["PA"]  # two PAs: the smaller dicom id
    assert rows["ac02"]["image_paths"] == ["files/p12/p12000004/s50000008/ac02.jpg"]
    for row in rows.values():
        assert len(row["images"]) == 1
        assert abs(np.asarray(row["images"][0]).mean() - PIXEL[row["views"][0]]) < 5  # the pixels are that view's
    every_view = [view for split in findings_run["dataset"].values() for views in split["views"] for view in views]
    assert "LATERAL" not in every_view


def test_study_ids(findings_run):
    row = _rows(findings_run["dataset"], "train")["2c3d"]
    assert (row["id"], row["study_id"], row["subject_id"]) == ("2c3d", "50000001", "10000001")


def test_findings_text(findings_run):
    for split in findings_run["dataset"].values():
        for row in split:
            assert row["report"] == EXPECTED_FINDINGS[row["id"]]
            assert row["report"] == clean_report(row["raw_report"], "mimic_cxr")
            assert "_" not in row["report"] and "impression" not in row["report"]
    raw = _rows(findings_run["dataset"], "train")["2c3d"]["raw_report"]
    assert "___" in raw and "INDICATION" not in raw and "No acute" not in raw  # the FINDINGS section only


def test_image_size(findings_run):
    image = findings_run["dataset"]["train"][0]["images"][0]
    assert image.size == (IMAGE_SIZE, round(HEIGHT * IMAGE_SIZE / WIDTH)) and image.mode == "L"


def test_skip_report(findings_run, tree, capsys):
    assert findings_run["code"] == 1  # --strict with skipped studies
    by_reason = {}
    for entry in findings_run["skipped"]:
        by_reason.setdefault(entry["reason"], []).append(entry)
    assert {reason: len(entries) for reason, entries in by_reason.items()} == {
        "malformed csv row": 2, "not in split csv": 1, "no frontal image": 1, "no findings": 1,
        "missing report": 1, "unreadable image": 1,
    }
    assert by_reason["no frontal image"][0]["file"].endswith("files/p10/p10000001/s50000002")
    assert by_reason["no frontal image"][0]["detail"] == "views: LATERAL"
    assert by_reason["no findings"][0]["file"].endswith("files/p10/p10000002/s50000004.txt")
    assert by_reason["missing report"][0]["file"].endswith("files/p11/p11000003/s50000007.txt")
    assert by_reason["unreadable image"][0]["file"].endswith(f"s50000006/{TRUNCATED}.jpg")
    assert by_reason["not in split csv"][0]["study"] == "50000009"
    assert sorted(entry["file"] for entry in by_reason["malformed csv row"]) == sorted([
        f"{tree['split_csv']}:{tree['split_line'][MALFORMED_SPLIT]}", f"{tree['metadata_csv']}:{tree['metadata_line']}",
    ])
    info = json.loads((findings_run["output"] / "prepare_info.json").read_text())
    assert info["summary"].startswith("kept 4 studies, skipped 7:")
    assert info["skipped"]["no frontal image"] == 1


def test_findings_impression_and_two_images(findings_impression_run):
    assert findings_impression_run["code"] == 0  # skips do not fail without --strict
    dataset = findings_impression_run["dataset"]
    assert {split: sorted(dataset[split]["id"]) for split in dataset} == {
        "train": ["2c3d", "4f5a", "6a7b"], "validation": ["7b8c"], "test": ["ac02"],  # IMPRESSION-only kept
    }
    for split in dataset.values():
        for row in split:
            assert row["report"] == EXPECTED_FINDINGS_IMPRESSION[row["id"]]
            assert row["report"] == clean_report(row["raw_report"], "mimic_cxr")
    test_row = dataset["test"][0]
    assert test_row["views"] == ["PA", "PA"]
    assert [Path(path).name for path in test_row["image_paths"]] == ["ac02.jpg", "ad01.jpg"]
    assert _rows(dataset, "train")["2c3d"]["views"] == ["PA", "AP"]  # frontal only, PA first
    info = json.loads((findings_impression_run["output"] / "prepare_info.json").read_text())
    assert info["split_csv"].endswith("mimic-cxr-2.0.0-split.csv")  # found in the JPG root
    assert info["metadata_csv"].endswith("mimic-cxr-2.0.0-metadata.csv.gz")
    assert info["skipped"] == {"malformed csv row": 2, "not in split csv": 1, "no frontal image": 1,
                               "missing report": 1, "unreadable image": 1}


def test_studies_from_files_folder_and_unreadable_report(tmp_path):
    """`--jpg_root` may be the files/ folder itself (CSVs then found beside it); a corrupt .txt.gz report is
    reported, not raised."""
    tree = build_mimic_tree(tmp_path)
    report = tree["reports_root"] / "files/p12/p12000004/s50000008.txt"
    report.unlink()
    report.with_name(report.name + ".gz").write_bytes(b"\x1f\x8b" + b"not gzip data" * 3)
    files = tree["jpg_root"] / "files"
    skipped = SkipLog()
    studies = mimic_cxr.mimic_cxr_studies(
        files, tree["reports_root"], mimic_cxr.find_csv(None, files, mimic_cxr.SPLIT_CSV_NAME),
        mimic_cxr.find_csv(None, files, mimic_cxr.METADATA_CSV_NAME), skipped, num_workers=2,
    )
    assert [(study.id, study.split) for study in studies] == [
        ("2c3d", "train"), ("4f5a", "train"), ("7b8c", "validation"), ("8c9d", "test"),
    ]
    assert studies[0].image_paths == ["p10/p10000001/s50000001/2c3d.jpg"]  # relative to files/
    assert (files / studies[0].image_paths[0]).is_file()
    assert studies[0].source.endswith("s50000001.txt") and studies[0].views == ["PA"]
    unreadable = [entry for entry in skipped.entries if entry["reason"] == "unreadable report"]
    assert len(unreadable) == 1 and unreadable[0]["file"].endswith("s50000008.txt.gz")


def test_wrong_csv_is_a_usage_error(tree, tmp_path, capsys):
    bad = tmp_path / "split.csv"
    bad.write_text("dicom,study,subject\n1,2,3\n")
    with pytest.raises(SystemExit) as raised:
        mimic_cxr.main(["--jpg_root", str(tree["jpg_root"]), "--reports_root", str(tree["reports_root"]),
                        "--split_csv", str(bad), "--output", str(tmp_path / "out")])
    assert raised.value.code == 2
    assert "missing column(s) dicom_id" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ R2Gen annotation.json


def test_r2gen_annotation(tmp_path, capsys):
    images = tmp_path / "mimic_images"
    entries = {
        "train": [("d1", "10000001", "50000001", "There is no focal consolidation.\n No effusion ___."),
                  ("d2", "10000001", "50000002", "Heart size is normal.")],
        "val": [("d3", "11000002", "50000003", "Lungs are clear.")],
        "test": [("d4", "12000003", "50000004", "Small left effusion."),
                 ("d5", "12000003", "50000005", "Missing image.")],
    }
    annotation = {}
    for split, items in entries.items():
        annotation[split] = []
        for dicom_id, subject, study, report in items:
            relative = f"p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
            if dicom_id != "d5":
                (images / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (WIDTH, HEIGHT), 128).save(images / relative)
            annotation[split].append({"id": dicom_id, "study_id": int(study), "subject_id": int(subject),
                                      "report": report, "image_path": [relative], "split": split})
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(annotation))
    output = tmp_path / "out"
    code = mimic_cxr.main(["--annotation", str(path), "--images", str(images), "--output", str(output),
                           "--image_size", str(IMAGE_SIZE), "--num_workers", "1", "--strict"])
    assert code == 1
    assert "skipped 1: missing image (1)" in capsys.readouterr().out
    dataset = load_from_disk(str(output))
    assert {split: dataset[split]["id"] for split in dataset} == {"train": ["d1", "d2"], "validation": ["d3"], "test": ["d4"]}
    row = dataset["train"][0]
    assert row["report"] == "there is no focal consolidation . no effusion ." == clean_report(row["raw_report"], "mimic_cxr")
    assert (row["study_id"], row["subject_id"]) == ("50000001", "10000001")
    assert row["images"][0].size == (IMAGE_SIZE, round(HEIGHT * IMAGE_SIZE / WIDTH))
    skipped = [json.loads(line) for line in (output / "skipped.jsonl").read_text().splitlines()]
    assert [(entry["study"], entry["reason"]) for entry in skipped] == [("d5", "missing image")]
    assert skipped[0]["file"].endswith("p12/p12000003/s50000005/d5.jpg")


# ---------------------------------------------------------------------------------------------------- CLI


def test_help_documents_every_option(capsys):
    parser = mimic_cxr.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    with pytest.raises(SystemExit) as raised:
        mimic_cxr.main(["--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    for option in ("--annotation", "--images", "--jpg_root", "--reports_root", "--split_csv", "--metadata_csv",
                   "--sections", "--max_images_per_study", "--image_size", "--strict", "--output", "--num_workers"):
        assert option in text
    assert "findings_impression" in text


def test_annotation_and_raw_are_exclusive(tmp_path):
    with pytest.raises(SystemExit) as raised:
        mimic_cxr.main(["--annotation", "a.json", "--jpg_root", str(tmp_path), "--output", str(tmp_path / "o")])
    assert raised.value.code == 2
