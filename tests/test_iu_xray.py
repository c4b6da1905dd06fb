"""`data_prep.iu_xray`: raw OpenI XML + PNG (folders and .tgz archives), R2Gen annotation files, splits,
ids, views, resizing, and the report of every bad input."""

import io
import json
import re
import tarfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from data_prep import iu_xray
from data_prep.common import SkipLog
from r2gen_hf.data import clean_report


IMAGE_SIZE = 24  # fixtures are 40 x 52 pixels: the shorter side becomes 24
R2GEN_ID = re.compile(r"^CXR\d+(_\d+)?_IM-\d{4}$")


def openi_xml(uid, image_ids, findings=None, impression="No acute cardiopulmonary disease.", mesh=("normal",)):
    """A report in the shape of OpenI's ecgen-radiology/*.xml (findings=None: no FINDINGS element)."""
    sections = [("COMPARISON", "None."), ("INDICATION", "Chest pain.")]
    if findings is not None:
        sections.append(("FINDINGS", findings))
    sections.append(("IMPRESSION", impression))
    abstract = "".join(
        f'<AbstractText Label="{label}">{escape(text)}</AbstractText>' if text else f'<AbstractText Label="{label}"/>'
        for label, text in sections
    )
    images = "".join(
        f'<parentImage id="{image_id}"><figureId>F{n + 1}</figureId><caption>Xray Chest PA and Lateral</caption>'
        f"<panel type=\"single\"><url>/hadoop/storage/radiology/extract/{image_id}.jpg</url></panel></parentImage>"
        for n, image_id in enumerate(image_ids)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<eCitation><meta type="rr"/>'
        f'<uId id="{uid}"/><pmcId id="{uid[3:]}"/><docSource>CXR</docSource><IUXRId id="{uid[3:]}"/>'
        '<licenseType>open-access</licenseType><MedlineCitation Owner="Indiana University" Status="supplied">'
        '<Article PubModel="Electronic"><Journal><JournalIssue><PubDate><Year>2013</Year></PubDate></JournalIssue>'
        "</Journal><ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>"
        f"<Abstract>{abstract}</Abstract></Article></MedlineCitation>"
        "<MeSH>" + "".join(f"<major>{term}</major>" for term in mesh) + "<automatic>normal</automatic></MeSH>"
        f"{images}</eCitation>"
    )


def write_png(path, rng, size=(40, 52)):
    pixels = (rng.random((size[1], size[0])) * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="PNG")


# uid -> (image ids as listed in the XML, findings, MeSH major terms)
GOOD = {
    "CXR1": (["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], "1. Heart size normal. 2. Lungs are clear.", ["normal"]),
    # listed lateral-first in the XML: kept in id order, so -1001 comes first ("frontal")
    "CXR3030": (["CXR3030_IM-1405-2001", "CXR3030_IM-1405-1001"], "Mild cardiomegaly (stable). No effusion!", ["Cardiomegaly/mild"]),
    **{
        f"CXR{n}": ([f"CXR{n}_IM-{n:04d}-1001", f"CXR{n}_IM-{n:04d}-2001"], f"The XXXX are normal. Finding number {n}.", ["normal"])
        for n in range(100, 108)
    },
    # three images: the first two (id order) are kept
    "CXR200": (["CXR200_IM-0200-3001", "CXR200_IM-0200-1001", "CXR200_IM-0200-2001"], "Three views were obtained. Lungs clear.", ["normal"]),
}
GOOD_IDS = {"CXR1": "CXR1_1_IM-0001", "CXR3030": "CXR3030_IM-1405", "CXR200": "CXR200_IM-0200",
            **{f"CXR{n}": f"CXR{n}_IM-{n:04d}" for n in range(100, 108)}}
TRUNCATED_PNG = "CXR300_IM-0300-2001"
# file name -> (xml text, expected skip reason); the studies and files every run must report
BAD = {
    "400.xml": (openi_xml("CXR400", ["CXR400_IM-0400-1001", "CXR400_IM-0400-2001"], findings=""), "no findings"),
    "401.xml": (openi_xml("CXR401", ["CXR401_IM-0401-1001", "CXR401_IM-0401-2001"], findings="  \n  "), "no findings"),
    "402.xml": (openi_xml("CXR402", ["CXR402_IM-0402-1001", "CXR402_IM-0402-2001"], findings=None), "no findings"),
    "500.xml": (openi_xml("CXR500", ["CXR500_IM-0500-1001"], findings="Single view. Lungs clear."), "fewer than 2 images"),
    "600.xml": (openi_xml("CXR600", ["CXR600_IM-0600-1001", "CXR600_IM-0600-2001"], findings="No image files."), "missing image"),
    "300.xml": (openi_xml("CXR300", ["CXR300_IM-0300-1001", TRUNCATED_PNG], findings="Truncated lateral."), "unreadable image"),
    "999.xml": (openi_xml("CXR999", ["CXR999_IM-0999-1001"], findings="Cut off.")[:180], "malformed XML"),
}
EXPECTED_SKIPS = {"no findings": 3, "fewer than 2 images": 1, "missing image": 1, "unreadable image": 1, "malformed XML": 1}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """OpenI-shaped inputs, as folders and as .tgz archives like NLMCXR_reports.tgz / NLMCXR_png.tgz."""
    root = tmp_path_factory.mktemp("openi")
    reports, images = root / "ecgen-radiology", root / "NLMCXR_png"
    reports.mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    for n, (uid, (image_ids, findings, mesh)) in enumerate(GOOD.items()):
        (reports / f"{n + 1}.xml").write_text(openi_xml(uid, image_ids, findings, mesh=mesh))
        for image_id in image_ids:
            write_png(images / f"{image_id}.png", rng)
    for name, (text, _) in BAD.items():
        (reports / name).write_text(text)
    for image_id in ["CXR400_IM-0400-1001", "CXR400_IM-0400-2001", "CXR401_IM-0401-1001", "CXR401_IM-0401-2001",
                     "CXR402_IM-0402-1001", "CXR402_IM-0402-2001", "CXR500_IM-0500-1001", "CXR300_IM-0300-1001"]:
        write_png(images / f"{image_id}.png", rng)
    buffer = io.BytesIO()
    write_png(buffer, rng)
    (images / f"{TRUNCATED_PNG}.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    with tarfile.open(root / "NLMCXR_reports.tgz", "w:gz") as archive:
        archive.add(reports, arcname="ecgen-radiology")
    with tarfile.open(root / "NLMCXR_png.tgz", "w:gz") as archive:
        for path in sorted(images.iterdir()):
            archive.add(path, arcname=path.name)
    return root


def prepare(output, *args):
    code = iu_xray.main([*map(str, args), "--output", str(output), "--image_size", str(IMAGE_SIZE), "--num_workers", "2"])
    info = json.loads((output / "prepare_info.json").read_text())
    skipped = [json.loads(line) for line in (output / "skipped.jsonl").read_text().splitlines()]
    annotation = json.loads((output / "annotation.json").read_text())
    return code, load_from_disk(str(output)), info, skipped, annotation


@pytest.fixture(scope="module")
def from_folders(raw):
    return prepare(raw / "out_folders", "--reports", raw / "ecgen-radiology", "--images", raw / "NLMCXR_png")


@pytest.fixture(scope="module")
def from_archives(raw):
    return prepare(raw / "out_archives", "--reports", raw / "NLMCXR_reports.tgz", "--images", raw / "NLMCXR_png.tgz", "--strict")


def rows_by_id(dataset):
    return {row["id"]: (split, row) for split in dataset for row in dataset[split]}


# ---------------------------------------------------------------------------------------------------------
# Raw OpenI from folders


def test_counts_and_summary(from_folders, capsys):
    code, dataset, info, skipped, _ = from_folders
    assert code == 0  # without --strict, skips do not fail the run
    assert set(rows_by_id(dataset)) == set(GOOD_IDS.values())
    assert info["skipped"] == EXPECTED_SKIPS
    assert info["summary"].startswith(f"kept {len(GOOD)} studies, skipped {sum(EXPECTED_SKIPS.values())}: ")
    assert len(skipped) == sum(EXPECTED_SKIPS.values())


def test_every_bad_input_is_listed_with_file_and_reason(from_folders, raw):
    _, _, _, skipped, _ = from_folders
    reasons = {(Path(entry["file"]).name, entry["reason"]) for entry in skipped}
    assert ("400.xml", "no findings") in reasons and ("401.xml", "no findings") in reasons and ("402.xml", "no findings") in reasons
    assert ("999.xml", "malformed XML") in reasons
    assert ("500.xml", "fewer than 2 images") in reasons
    assert ("CXR600_IM-0600-1001.png", "missing image") in reasons
    assert (f"{TRUNCATED_PNG}.png", "unreadable image") in reasons
    for entry in skipped:
        assert Path(entry["file"]).is_relative_to(raw), entry  # a real input file, never a temporary copy
    by_reason = {entry["reason"]: entry for entry in skipped}
    assert by_reason["unreadable image"]["study"] == "CXR300_IM-0300"
    assert by_reason["missing image"]["study"] == "CXR600_IM-0600"


def test_ids_follow_r2gen_form(from_folders):
    _, dataset, _, _, _ = from_folders
    ids = set(rows_by_id(dataset))
    assert all(R2GEN_ID.match(study) for study in ids), ids
    assert "CXR1_1_IM-0001" in ids and "CXR3030_IM-1405" in ids


def test_reports_are_cleaned_findings(from_folders):
    _, dataset, _, _, annotation = from_folders
    rows = rows_by_id(dataset)
    for uid, (_, findings, _) in GOOD.items():
        _, row = rows[GOOD_IDS[uid]]
        assert row["raw_report"] == findings
        assert row["report"] == clean_report(findings, style="iu_xray")
    assert rows["CXR1_1_IM-0001"][1]["report"] == "heart size normal . lungs are clear ."
    # annotation.json keeps R2Gen's convention: the report as found
    assert {entry["id"]: entry["report"] for entries in annotation.values() for entry in entries}["CXR3030_IM-1405"] == GOOD["CXR3030"][1]


def test_views_images_in_id_order_and_resized(from_folders):
    _, dataset, info, _, _ = from_folders
    rows = rows_by_id(dataset)
    for _, row in rows.values():
        assert row["views"] == ["frontal", "lateral"]
        assert len(row["images"]) == 2
        for image in row["images"]:
            assert min(image.size) == IMAGE_SIZE and max(image.size) == round(52 * IMAGE_SIZE / 40)
            assert image.mode == "L"
    assert rows["CXR3030_IM-1405"][1]["image_paths"] == ["CXR3030_IM-1405-1001.png", "CXR3030_IM-1405-2001.png"]
    # more than two images: the first two in id order are kept, the rest reported
    assert rows["CXR200_IM-0200"][1]["image_paths"] == ["CXR200_IM-0200-1001.png", "CXR200_IM-0200-2001.png"]
    assert info["images_dropped"] == {"CXR200_IM-0200": ["CXR200_IM-0200-3001"]}
    assert rows["CXR3030_IM-1405"][1]["finding_labels"] == ["Cardiomegaly/mild"]
    assert rows["CXR100_IM-0100"][1]["finding_labels"] == []  # "normal" is no finding


def test_split_is_seeded_7_1_2_and_covers_every_study(from_folders):
    _, dataset, info, _, annotation = from_folders
    # 12 studies passed the checks before loading (11 kept + the one with the truncated PNG)
    assert info["split"] == {"method": "seeded", "seed": iu_xray.DEFAULT_SEED, "ratios": [0.7, 0.1, 0.2], "planned_sizes": [8, 1, 3]}
    candidates = [*GOOD_IDS.values(), "CXR300_IM-0300"]
    expected = iu_xray.assign_splits(candidates, iu_xray.DEFAULT_SEED)
    for split in dataset:
        assert set(dataset[split]["id"]) == {study for study, name in expected.items() if name == split} - {"CXR300_IM-0300"}
    # annotation.json lists exactly the dataset's studies, under R2Gen's split names
    assert {name: sorted(entry["id"] for entry in entries) for name, entries in annotation.items()} == {
        "train": sorted(dataset["train"]["id"]), "val": sorted(dataset["validation"]["id"]), "test": sorted(dataset["test"]["id"])
    }
    assert sum(len(entries) for entries in annotation.values()) == len(GOOD)


def test_assign_splits_is_deterministic_and_order_free():
    ids = [f"CXR{n}_IM-{n:04d}" for n in range(1, 101)]
    first = iu_xray.assign_splits(ids, seed=7)
    assert first == iu_xray.assign_splits(list(reversed(ids)), seed=7)  # file order does not matter
    assert first != iu_xray.assign_splits(ids, seed=8)
    assert set(first) == set(ids)
    assert [list(first.values()).count(split) for split in ("train", "validation", "test")] == [70, 10, 20]
    assert iu_xray.split_sizes(2955) == (2069, 296, 590)  # the papers' IU-Xray split sizes
    assert iu_xray.split_sizes(1) == (1, 0, 0) and iu_xray.split_sizes(0) == (0, 0, 0)


def test_no_temporary_files_left(from_folders, from_archives, raw):
    for output in (raw / "out_folders", raw / "out_archives"):
        assert not [path.name for path in output.iterdir() if path.name.startswith(".")]
        assert {"annotation.json", "skipped.jsonl", "prepare_info.json", "dataset_dict.json"} <= {p.name for p in output.iterdir()}


# ---------------------------------------------------------------------------------------------------------
# Raw OpenI from the .tgz archives


def test_archives_give_the_same_dataset(from_folders, from_archives):
    _, folder_set, folder_info, folder_skips, _ = from_folders
    _, archive_set, archive_info, archive_skips, _ = from_archives
    folders, archives = rows_by_id(folder_set), rows_by_id(archive_set)
    assert set(folders) == set(archives)
    for study, (split, row) in folders.items():
        assert archives[study][0] == split  # same seed, same split, whatever the input format
        assert archives[study][1]["report"] == row["report"]
        assert archives[study][1]["image_paths"] == row["image_paths"]
        assert [np.asarray(image).tolist() for image in archives[study][1]["images"]] == [np.asarray(image).tolist() for image in row["images"]]
    assert archive_info["skipped"] == folder_info["skipped"] == EXPECTED_SKIPS
    assert sorted(entry["reason"] for entry in archive_skips) == sorted(entry["reason"] for entry in folder_skips)


def test_archive_members_are_named_in_the_skip_report(from_archives, raw):
    _, _, _, skipped, _ = from_archives
    files = {entry["reason"]: entry["file"] for entry in skipped if entry["reason"] != "no findings"}
    assert files["malformed XML"] == f"{raw / 'NLMCXR_reports.tgz'}:ecgen-radiology/999.xml"
    assert files["unreadable image"] == f"{raw / 'NLMCXR_png.tgz'}:{TRUNCATED_PNG}.png"
    assert files["missing image"] == f"{raw / 'NLMCXR_png.tgz'}:CXR600_IM-0600-1001.png"


def test_strict_exits_1_with_the_same_report(from_archives, capsys):
    code, dataset, info, skipped, _ = from_archives  # run with --strict
    assert code == 1
    assert sum(len(split) for split in dataset.values()) == len(GOOD)  # the dataset and report are still written
    assert len(skipped) == sum(EXPECTED_SKIPS.values())


def test_archive_extraction_refuses_unsafe_members(tmp_path):
    archive_path = tmp_path / "evil.tgz"
    payload = io.BytesIO()
    write_png(payload, np.random.default_rng(1))
    data = payload.getvalue()
    with tarfile.open(archive_path, "w:gz") as archive:
        for name in ("../CXR1_IM-0001-1001.png", "/tmp/CXR2_IM-0002-1001.png", "sub/CXR3_IM-0003-1001.png"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("CXR4_IM-0004-1001.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    target = tmp_path / "target"
    target.mkdir()
    skipped = SkipLog()
    stems = {"CXR1_IM-0001-1001", "CXR2_IM-0002-1001", "CXR3_IM-0003-1001", "CXR4_IM-0004-1001"}
    found = iu_xray.ArchiveImages(archive_path, target).by_stem(stems, skipped)
    assert found == {"CXR3_IM-0003-1001": "sub/CXR3_IM-0003-1001.png"}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "evil.tgz", "target/sub/CXR3_IM-0003-1001.png"
    ]
    assert [entry["reason"] for entry in skipped.entries] == ["unsafe archive member", "unsafe archive member"]


# ---------------------------------------------------------------------------------------------------------
# --split_from an R2Gen annotation.json


@pytest.fixture(scope="module")
def with_split_from(raw):
    given = {
        "train": ["CXR1_1_IM-0001", "CXR100_IM-0100", "CXR101_IM-0101", "CXR9999_IM-0001"],
        "val": ["CXR102_IM-0102"],
        "test": ["CXR3030_IM-1405", "CXR103_IM-0103"],
    }
    annotation = {name: [{"id": i, "report": "x", "image_path": [f"{i}/0.png", f"{i}/1.png"], "split": name} for i in ids]
                  for name, ids in given.items()}
    annotation["train"].append({"id": "CXR104_IM-0104", "report": "no image_path"})  # malformed row
    path = raw / "r2gen_annotation.json"
    path.write_text(json.dumps(annotation))
    return given, prepare(raw / "out_split_from", "--reports", raw / "ecgen-radiology", "--images", raw / "NLMCXR_png",
                          "--split_from", path, "--strict")


def test_split_from_reproduces_the_given_split(with_split_from):
    given, (code, dataset, info, skipped, annotation) = with_split_from
    assert {split: sorted(dataset[split]["id"]) for split in dataset} == {
        "train": ["CXR100_IM-0100", "CXR101_IM-0101", "CXR1_1_IM-0001"], "validation": ["CXR102_IM-0102"],
        "test": ["CXR103_IM-0103", "CXR3030_IM-1405"],
    }
    assert {name: sorted(entry["id"] for entry in entries) for name, entries in annotation.items()} == {
        name: sorted(set(ids) - {"CXR9999_IM-0001"}) for name, ids in given.items()
    }
    assert info["split"]["method"] == "split_from"


def test_split_from_reports_the_rest(with_split_from):
    _, (code, _, info, skipped, _) = with_split_from
    outside = {entry["study"] for entry in skipped if entry["reason"] == "not in split_from annotation"}
    # the usable studies that the annotation does not list (CXR300's truncated image is never loaded)
    assert outside == {"CXR104_IM-0104", "CXR105_IM-0105", "CXR106_IM-0106", "CXR107_IM-0107", "CXR200_IM-0200", "CXR300_IM-0300"}
    assert info["skipped"]["not in split_from annotation"] == 6
    assert info["skipped"]["malformed entry"] == 1  # the annotation row without image_path
    assert "unreadable image" not in info["skipped"]
    assert info["split_from_not_found"] == ["CXR9999_IM-0001"] and info["split_from_not_found_count"] == 1
    assert code == 1  # --strict


# ---------------------------------------------------------------------------------------------------------
# --annotation: R2Gen's preprocessed files


def test_r2gen_annotation_input(tmp_path):
    rng = np.random.default_rng(2)
    images = tmp_path / "iu_xray" / "images"
    entries = {}
    for name, study in [("train", "CXR2384_IM-0942"), ("train", "CXR10_IM-0002"), ("val", "CXR20_IM-0020"), ("test", "CXR30_IM-0030")]:
        (images / study).mkdir(parents=True)
        for index in range(2):
            write_png(images / study / f"{index}.png", rng)
        entries.setdefault(name, []).append(
            {"id": study, "report": f"Study {study}. Lungs are clear.", "image_path": [f"{study}/0.png", f"{study}/1.png"], "split": name}
        )
    entries["test"].append({"id": "CXR40_IM-0040", "report": "Gone.", "image_path": ["CXR40_IM-0040/0.png", "CXR40_IM-0040/1.png"], "split": "test"})
    entries["val"].append("not an object")
    annotation_path = tmp_path / "iu_xray" / "annotation.json"
    annotation_path.write_text(json.dumps(entries))

    code, dataset, info, skipped, annotation = prepare(tmp_path / "out", "--annotation", annotation_path, "--images", images)
    assert code == 0
    assert {split: dataset[split]["id"] for split in dataset} == {
        "train": ["CXR2384_IM-0942", "CXR10_IM-0002"], "validation": ["CXR20_IM-0020"], "test": ["CXR30_IM-0030"]
    }
    row = dataset["train"][0]
    assert row["raw_report"] == "Study CXR2384_IM-0942. Lungs are clear."
    assert row["report"] == clean_report(row["raw_report"], style="iu_xray") != row["raw_report"]
    assert row["views"] == ["frontal", "lateral"] and row["image_paths"] == ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"]
    assert all(min(image.size) == IMAGE_SIZE for image in row["images"])
    assert {(entry["reason"], Path(entry["file"]).name) for entry in skipped} == {
        ("missing image", "0.png"), ("malformed entry", "annotation.json[val][1]")
    }
    assert annotation["val"][0]["image_path"] == ["CXR20_IM-0020/0.png", "CXR20_IM-0020/1.png"]
    assert info["source"] == "r2gen_annotation"

    # the same images as an archive with a top folder (iu_xray/images/CXR.../0.png), as R2Gen's download
    archive_path = tmp_path / "iu_xray.tgz"
    with tarfile.open(archive_path, "w:gz") as archive:
        archive.add(tmp_path / "iu_xray" / "images", arcname="iu_xray/images")
    code, from_archive, _, archive_skips, _ = prepare(tmp_path / "out_tgz", "--annotation", annotation_path, "--images", archive_path)
    assert code == 0
    assert {split: from_archive[split]["id"] for split in from_archive} == {split: dataset[split]["id"] for split in dataset}
    assert [np.asarray(image).tolist() for image in from_archive["train"][0]["images"]] == [np.asarray(image).tolist() for image in row["images"]]
    assert {(entry["reason"], entry["file"]) for entry in archive_skips} == {
        ("missing image", f"{archive_path}:CXR40_IM-0040/0.png"), ("malformed entry", f"{annotation_path}[val][1]")
    }
    assert not [path for path in (tmp_path / "out_tgz").iterdir() if path.name.startswith(".")]


# ---------------------------------------------------------------------------------------------------------
# Parsing and options, without writing a dataset


def test_parse_report_reads_openi_xml():
    report = iu_xray.parse_report(openi_xml("CXR3030", ["CXR3030_IM-1405-2001", "CXR3030_IM-1405-1001"], "Heart & lungs."), "3030.xml")
    assert report.uid == "CXR3030"
    assert report.sections["FINDINGS"] == "Heart & lungs."
    assert report.sections["IMPRESSION"] == "No acute cardiopulmonary disease."
    assert report.sections["INDICATION"] == "Chest pain."
    assert report.image_ids == ["CXR3030_IM-1405-2001", "CXR3030_IM-1405-1001"]
    assert report.mesh_major == ["normal"] and report.mesh_automatic == ["normal"]
    with pytest.raises(Exception):
        iu_xray.parse_report(BAD["999.xml"][0])


@pytest.mark.parametrize(
    "uid, images, expected",
    [
        ("CXR3030", ["CXR3030_IM-1405-1001", "CXR3030_IM-1405-2001"], "CXR3030_IM-1405"),
        ("CXR1", ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], "CXR1_1_IM-0001"),
        ("CXR5", ["CXR5_IM-2117-1003002"], "CXR5_IM-2117"),
        ("CXR7", ["CXR7_IM-0007-1001", "CXR7_IM-0008-2001"], "CXR7_IM"),  # no common series: longest common prefix
    ],
)
def test_study_id(uid, images, expected):
    assert iu_xray.study_id(uid, images) == expected


def test_sections_and_image_count_options():
    report = iu_xray.parse_report(openi_xml("CXR1", ["CXR1_IM-0001-1001"], "Heart normal", impression="No disease."))
    assert iu_xray.report_text(report, "findings") == "Heart normal"
    assert iu_xray.report_text(report, "findings_impression") == "Heart normal. No disease."
    assert clean_report(iu_xray.report_text(report, "findings_impression")) == "heart normal . no disease ."
    no_findings = iu_xray.parse_report(openi_xml("CXR2", ["CXR2_IM-0002-1001"], None, impression="Normal chest."))
    assert iu_xray.report_text(no_findings, "findings") == ""
    assert iu_xray.report_text(no_findings, "findings_impression") == "Normal chest."

    skipped = SkipLog()
    selected, seen, dropped = iu_xray.select_reports([report], skipped, min_images=1)
    assert [(identifier, ids) for _, identifier, _, ids in selected] == [("CXR1_IM-0001", ["CXR1_IM-0001-1001"])]
    studies = iu_xray.make_studies(selected, {"CXR1_IM-0001-1001": "CXR1_IM-0001-1001.png"}, skipped, images_label="")
    assert studies[0].views == [""]  # a single image: its view is unknown
    assert not skipped
    iu_xray.select_reports([report], skipped)  # default --min_images 2
    assert [entry["reason"] for entry in skipped.entries] == ["fewer than 2 images"]

    three = iu_xray.parse_report(openi_xml("CXR9", ["CXR9_IM-0009-3001", "CXR9_IM-0009-1001", "CXR9_IM-0009-2001"], "Lungs clear."))
    selected, _, dropped = iu_xray.select_reports([three], SkipLog(), max_images=0)
    assert selected[0][3] == ["CXR9_IM-0009-1001", "CXR9_IM-0009-2001", "CXR9_IM-0009-3001"] and not dropped
    assert iu_xray.views_for(3) == ["", "", ""]


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        iu_xray.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = iu_xray.build_parser()
    options = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    assert {"--reports", "--images", "--annotation", "--split_from", "--sections", "--min_images", "--max_images",
            "--image_size", "--strict", "--output", "--seed"} <= set(options)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.help.strip(), action.option_strings
            assert action.option_strings[0] in text


def test_bad_paths_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        iu_xray.main(["--reports", str(tmp_path / "nope.tgz"), "--images", str(tmp_path), "--output", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "no such file" in capsys.readouterr().err
    bad_json = tmp_path / "annotation.json"
    bad_json.write_text("{not json")
    code = iu_xray.main(["--annotation", str(bad_json), "--images", str(tmp_path), "--output", str(tmp_path / "o")])
    assert code == 2 and "cannot read R2Gen annotation JSON" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "o").iterdir()]  # nothing half-written, no temporary folder left
