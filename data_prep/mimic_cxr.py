"""Prepare MIMIC-CXR for report generation: one frontal image and the FINDINGS section per study.

Two inputs, one output format (`data_prep.common.write_prepared_dataset`):

* Raw MIMIC-CXR: MIMIC-CXR-JPG (`files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`), its split CSV
  (`mimic-cxr-2.0.0-split.csv(.gz)`: dicom_id, study_id, subject_id, split) and metadata CSV
  (`mimic-cxr-2.0.0-metadata.csv(.gz)`: dicom_id, subject_id, study_id, ViewPosition, ...), plus the free-text
  reports of MIMIC-CXR (`files/pXX/pNNNNNNNN/sNNNNNNNN.txt`, optionally gzipped)::

      python -m data_prep.mimic_cxr --jpg_root mimic-cxr-jpg/2.0.0 --reports_root mimic-cxr-reports \\
          --output data/mimic_cxr_prepared

* R2Gen's MIMIC-CXR `annotation.json` (reports already extracted, one image per study)::

      python -m data_prep.mimic_cxr --annotation data/mimic_cxr/annotation.json \\
          --images data/mimic_cxr/images --output data/mimic_cxr_prepared

Conventions (raw input):

* Split: the official split CSV; "validate" becomes "validation".
* Images: frontal views only, i.e. metadata `ViewPosition` PA or AP (lateral, LL, AP AXIAL, decubitus,
  unknown ... are never chosen). Per study, PA is preferred over AP, ties are broken by the smallest
  dicom_id, and the first `--max_images_per_study` (default 1, as in R2Gen; 0 = every frontal image) are kept.
* Ids: `id` is the dicom id of the (first) chosen image, as in R2Gen's annotation; `study_id` and
  `subject_id` are MIMIC's.
* Report: the FINDINGS section (`--sections findings`, R2Gen's target) or FINDINGS followed by IMPRESSION
  (`--sections findings_impression`); see `extract_report`. The extracted text is stored as `raw_report`
  (and in annotation.json) and cleaned with `clean_report(style="mimic_cxr")`.
* Bad input is skipped and reported in `skipped.jsonl` with the file and the reason, never dropped
  silently: "malformed csv row" (file:line), "not in split csv", "no frontal image", "missing report",
  "unreadable report", "no findings", and the image / empty-report reasons of `data_prep.common`.
"""

import argparse
import csv
import difflib
import gzip
import logging
import re
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from data_prep.common import (
    SkipLog,
    Study,
    add_common_arguments,
    configure_logging,
    finish,
    read_r2gen_annotation,
    write_prepared_dataset,
)


logger = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "validate": "validation", "test": "test"}  # official split CSV -> ours
FRONTAL_VIEWS = ("PA", "AP")  # in order of preference
SECTION_CHOICES = ("findings", "findings_impression")
SPLIT_CSV_NAME = "mimic-cxr-2.0.0-split.csv"
METADATA_CSV_NAME = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")


# ------------------------------------------------------------------------------------------------ files


def read_text(path: Path) -> str:
    """A text file, gunzipped when it is gzip data (by content, whatever its name)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def _open_csv(path: Path):
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", newline="", encoding="utf-8", errors="replace")
    return open(path, newline="", encoding="utf-8", errors="replace")


def find_csv(path: str | None, root: Path, name: str) -> Path:
    """`path` if given, else `<name>.gz` or `<name>` in `root` (where MIMIC-CXR-JPG ships them) or in its parent
    (when `root` is the `files/` folder)."""
    if path:
        candidate = Path(path)
        if not candidate.is_file():
            raise FileNotFoundError(f"{candidate}: no such file.")
        return candidate
    for candidate in (root / f"{name}.gz", root / name, root.parent / f"{name}.gz", root.parent / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"cannot find {name}(.gz) in {root}; pass its path.")


def read_csv_rows(
    path: Path, columns: tuple[str, ...], skipped: SkipLog, non_empty: tuple[str, ...] | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """`(line number, row)` for each well-formed row of a (gzipped) CSV with a header. Rows with too few or
    too many fields, an empty value in one of `non_empty` (default: `columns`), or that the csv module cannot
    parse are reported as "malformed csv row" with `file` = "path:line". A header without `columns` is an
    error (a wrong file, not a bad row)."""
    non_empty = columns if non_empty is None else non_empty
    with _open_csv(path) as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [column for column in columns if column not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header) or 'none'}).")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                skipped.add("malformed csv row", file=f"{path}:{reader.line_num}", detail=str(error))
                continue
            where = f"{path}:{reader.line_num}"
            if None in row or any(value is None for value in row.values()):
                got = len(header) + len(row.get(None) or []) - sum(value is None for value in row.values())
                skipped.add("malformed csv row", file=where, detail=f"expected {len(header)} fields, got {got}")
                continue
            empty = [column for column in non_empty if not row[column].strip()]
            if empty:
                skipped.add("malformed csv row", file=where, field=",".join(empty), detail="empty value")
                continue
            yield reader.line_num, {key: value.strip() for key, value in row.items()}


def _check_ids(row: dict[str, str]) -> str:
    """What is wrong with the ids of a row ("" if nothing): they build the image and report paths."""
    for column in ("subject_id", "study_id"):
        if not row[column].isdigit() or len(row[column]) < 2:
            return f"{column} {row[column]!r} is not a MIMIC id (digits)"
    if "/" in row["dicom_id"] or "\\" in row["dicom_id"] or row["dicom_id"].startswith("."):
        return f"dicom_id {row['dicom_id']!r} is not a file name"
    return ""


@dataclass(frozen=True)
class ImageRecord:
    dicom_id: str
    subject_id: str
    study_id: str
    split: str  # ours: train / validation / test
    view: str  # metadata ViewPosition, upper case ("" when unknown)


def read_split_csv(path: Path, skipped: SkipLog) -> dict[str, tuple[str, str, str]]:
    """dicom_id -> (subject_id, study_id, split) from the official split CSV ("validate" -> "validation")."""
    images = {}
    for line, row in read_csv_rows(path, SPLIT_COLUMNS, skipped):
        problem = _check_ids(row)
        split = SPLIT_NAMES.get(row["split"].lower())
        if not problem and split is None:
            problem = f"unknown split {row['split']!r} (expected {', '.join(SPLIT_NAMES)})"
        if problem:
            skipped.add("malformed csv row", file=f"{path}:{line}", study=row["study_id"], detail=problem)
            continue
        images[row["dicom_id"]] = (row["subject_id"], row["study_id"], split)
    return images


def read_metadata_csv(path: Path, skipped: SkipLog) -> dict[str, tuple[str, str, str]]:
    """dicom_id -> (subject_id, study_id, ViewPosition) from the metadata CSV. An empty ViewPosition is
    valid (the view is unknown); empty ids are not."""
    views = {}
    for line, row in read_csv_rows(path, METADATA_COLUMNS, skipped, non_empty=METADATA_COLUMNS[:3]):
        problem = _check_ids(row)
        if problem:
            skipped.add("malformed csv row", file=f"{path}:{line}", study=row["study_id"], detail=problem)
            continue
        views[row["dicom_id"]] = (row["subject_id"], row["study_id"], row["ViewPosition"].upper())
    return views


def _files_dir(root: Path) -> Path:
    """Where the `pXX/` folders are: `<root>/files` for a MIMIC download root, else the root itself."""
    return root / "files" if (root / "files").is_dir() else root


def study_dir(subject_id: str, study_id: str) -> str:
    return f"p{subject_id[:2]}/p{subject_id}/s{study_id}"


# ---------------------------------------------------------------------------------------------- reports

# A section header: at the start of a line, words of letters (and ( ) / , & ' -), then a colon. Digits are
# not allowed, so times ("10:18") and list items ("1. Foo: bar") never start a section.
_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z ()/,&'\-]{0,48}?)[ \t]*:", re.MULTILINE)
# Headers that are not findings or impression, kept out of the fuzzy typo matching below.
_OTHER_WORDS = {
    "addendum", "clinical", "comparison", "comparisons", "comment", "date", "exam", "examination", "final",
    "history", "indication", "information", "notification", "read", "reason", "recommendation",
    "recommendations", "report", "technique", "wet",
}
# The only headers recognised when not in upper case ("Impression:"); any other lower-case "words:" is text.
_TITLE_CASE_HEADERS = {"findings", "finding", "impression", "impressions", "conclusion", "findings and impression", "findings/impression"}
# Old-style headers that describe the study ("CHEST, TWO VIEWS:", "PORTABLE AP CHEST:") and head the findings
# in reports that have no FINDINGS header (the MIT-LCP MIMIC-CXR section parser treats them as findings).
_STUDY_DESCRIPTION = re.compile(r"\b(chest|portable|views?|pa and lat|ap and lat|frontal)\b")


def _like(word: str, target: str) -> bool:
    """`word` is `target`, its singular, or a typo of it ("impresson", "findngs": real MIMIC headers)."""
    if word in (target, target[:-1]):
        return True
    return word not in _OTHER_WORDS and len(word) >= 6 and difflib.SequenceMatcher(None, word, target).ratio() >= 0.85


def section_kind(name: str) -> str:
    """"findings", "impression", "findings_impression" (a combined section), "description" (see
    `_STUDY_DESCRIPTION`) or "other" for a section header name."""
    words = re.findall(r"[a-z]+", name.lower())
    findings = any(_like(word, "findings") for word in words)
    impression = any(_like(word, "impression") or word in ("conclusion", "conclusions") for word in words)
    if findings and impression:
        return "findings_impression"
    if findings:
        return "findings"
    if impression:
        return "impression"
    if not set(words) & _OTHER_WORDS and _STUDY_DESCRIPTION.search(" ".join(words)):
        return "description"
    return "other"


def split_sections(text: str) -> list[tuple[str, str, str]]:
    """`(header, kind, text)` for each section of a MIMIC-CXR report, in order; the text before the first
    header is `("", "preamble", ...)`. Headers are upper case ("FINDINGS:", "FINDINGS AND IMPRESSION:",
    "WET READ:") or a title-case findings / impression header ("Impression:"). Section text keeps its
    line breaks (wrapped lines), without the indentation and blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    headers = []
    for match in _HEADER.finditer(text):
        name = " ".join(match.group(1).split())
        kind = section_kind(name)
        if name.isupper() or name.lower() in _TITLE_CASE_HEADERS:
            headers.append((match, name, kind))

    def body(start: int, end: int) -> str:
        return "\n".join(line.strip() for line in text[start:end].split("\n") if line.strip())

    sections = [("", "preamble", body(0, headers[0][0].start() if headers else len(text)))]
    for index, (match, name, kind) in enumerate(headers):
        end = headers[index + 1][0].start() if index + 1 < len(headers) else len(text)
        sections.append((name, kind, body(match.end(), end)))
    return sections


def _last(sections: list[tuple[str, str, str]], kind: str) -> str:
    """The last non-empty section of a kind ("" if none): addenda and re-dictated reports repeat sections,
    and the last one is the final wording (as in MIT-LCP's `create_section_files.py`)."""
    for _, section_kind_, content in reversed(sections):
        if section_kind_ == kind and content:
            return content
    return ""


def _end_sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def extract_report(text: str, sections: str = "findings") -> str:
    """The report text to learn from, "" when the report has none.

    * findings: the FINDINGS section; without one, a combined "FINDINGS AND IMPRESSION" (or
      "FINDINGS/IMPRESSION") section; without either, an old-style study-description section ("CHEST, PA AND
      LATERAL: ...").
    * findings_impression: those findings, a line break, then the IMPRESSION section; whichever of the two
      exists when the other does not. A period is added after findings that do not end a sentence, so that
      their last sentence and the impression's first stay apart after cleaning.
    """
    if sections not in SECTION_CHOICES:
        raise ValueError(f"sections must be one of {SECTION_CHOICES}, got {sections!r}.")
    parsed = split_sections(text)
    findings = _last(parsed, "findings") or _last(parsed, "findings_impression") or _last(parsed, "description")
    if sections == "findings":
        return findings
    impression = _last(parsed, "impression")
    if findings and impression:
        return _end_sentence(findings) + "\n" + impression
    return findings or impression


# ---------------------------------------------------------------------------------------------- studies


def choose_images(images: list[ImageRecord], max_images: int = 1) -> list[ImageRecord]:
    """Frontal images (ViewPosition PA or AP), PA first, then by dicom_id; the first `max_images` (0 = all)."""
    frontal = [image for image in images if image.view in FRONTAL_VIEWS]
    frontal.sort(key=lambda image: (FRONTAL_VIEWS.index(image.view), image.dicom_id))
    return frontal[:max_images] if max_images > 0 else frontal


def mimic_cxr_studies(
    jpg_root: str | Path,
    reports_root: str | Path,
    split_csv: str | Path,
    metadata_csv: str | Path,
    skipped: SkipLog,
    *,
    sections: str = "findings",
    max_images_per_study: int = 1,
    num_workers: int = 4,
) -> list[Study]:
    """Studies of raw MIMIC-CXR(-JPG), sorted by split, subject and study; every study left out is in `skipped`.

    The split CSV lists the images of the dataset; the metadata CSV gives their views. Image paths are
    relative to `jpg_root` (`files/pXX/...` when `jpg_root` holds `files/`).
    """
    jpg_root, reports_root = Path(jpg_root), Path(reports_root)
    split_csv, metadata_csv = Path(split_csv), Path(metadata_csv)
    split_of = read_split_csv(split_csv, skipped)
    metadata = read_metadata_csv(metadata_csv, skipped)

    images_by_study: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for dicom_id, (subject_id, study_id, split) in split_of.items():
        _, _, view = metadata.get(dicom_id, ("", "", ""))
        images_by_study[subject_id, study_id].append(ImageRecord(dicom_id, subject_id, study_id, split, view))

    # Studies with metadata but not one image in the split CSV belong to no split: report them (once each).
    unsplit = sorted({(subject, study) for subject, study, _ in metadata.values()} - set(images_by_study))
    for subject_id, study_id in unsplit:
        skipped.add("not in split csv", study=study_id, file=metadata_csv, field="split",
                    detail=f"subject {subject_id}: no image of this study is in {split_csv}")

    image_files = _files_dir(jpg_root)
    image_prefix = image_files.relative_to(jpg_root)
    report_files = _files_dir(reports_root)

    candidates = []
    for (subject_id, study_id), images in sorted(images_by_study.items(), key=lambda item: (int(item[0][0]), int(item[0][1]))):
        chosen = choose_images(images, max_images_per_study)
        if not chosen:
            views = ", ".join(sorted({image.view or "unknown" for image in images}))
            skipped.add("no frontal image", study=study_id, file=image_files / study_dir(subject_id, study_id),
                        field="ViewPosition", detail=f"views: {views}")
            continue
        splits = {image.split for image in images}
        if len(splits) > 1:
            logger.warning("study %s has images in several splits (%s); using %s", study_id, ", ".join(sorted(splits)), chosen[0].split)
        candidates.append((subject_id, study_id, chosen))

    def load(candidate):
        subject_id, study_id, chosen = candidate
        base = report_files / f"{study_dir(subject_id, study_id)}.txt"
        path = next((p for p in (base, base.with_name(base.name + ".gz")) if p.is_file()), None)
        if path is None:
            return candidate, base, None, "missing report"
        try:
            return candidate, path, read_text(path), ""
        except (OSError, EOFError, zlib.error) as error:  # e.g. a truncated .txt.gz
            return candidate, path, None, f"unreadable report: {error}"

    studies = []
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for (subject_id, study_id, chosen), path, text, problem in pool.map(load, candidates):
            if problem:
                reason, _, detail = problem.partition(": ")
                skipped.add(reason, study=study_id, file=path, field="report", detail=detail)
                continue
            report = extract_report(text, sections)
            if not report:
                names = ", ".join(name for name, kind, content in split_sections(text) if name and content) or "none"
                wanted = "FINDINGS" if sections == "findings" else "FINDINGS or IMPRESSION"
                skipped.add("no findings", study=study_id, file=path, field="report",
                            detail=f"no {wanted} section (sections: {names})")
                continue
            studies.append(
                Study(
                    id=chosen[0].dicom_id,
                    report=report,
                    split=chosen[0].split,
                    image_paths=[(image_prefix / study_dir(subject_id, study_id) / f"{image.dicom_id}.jpg").as_posix() for image in chosen],
                    views=[image.view for image in chosen],
                    subject_id=subject_id,
                    study_id=study_id,
                    source=str(path),
                )
            )
    order = {"train": 0, "validation": 1, "test": 2}
    studies.sort(key=lambda study: order.get(study.split, 3))  # stable: subject / study order within a split
    return studies


# -------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.mimic_cxr",
        description="Prepare MIMIC-CXR (raw MIMIC-CXR-JPG + reports, or R2Gen's annotation.json) as a "
        "datasets.DatasetDict with train / validation / test, annotation.json and skipped.jsonl.",
    )
    source = parser.add_argument_group("input (give --annotation, or --jpg_root with the reports)")
    inputs = source.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--annotation", help="R2Gen's MIMIC-CXR annotation.json (train / val / test entries with id, "
                        "report, image_path, study_id, subject_id); reports are used as they are.")
    inputs.add_argument("--jpg_root", help="MIMIC-CXR-JPG root: the folder holding files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg "
                        "(or the files/ folder itself).")
    source.add_argument("--images", help="With --annotation: the folder that image_path entries are relative to "
                        "(default: images/ beside annotation.json).")
    source.add_argument("--reports_root", help="Raw MIMIC-CXR: the folder holding files/pXX/pNNNNNNNN/sNNNNNNNN.txt(.gz) "
                        "(the unzipped mimic-cxr-reports; default: --jpg_root).")
    source.add_argument("--split_csv", help=f"Raw MIMIC-CXR: the official split CSV, plain or gzipped "
                        f"(default: {SPLIT_CSV_NAME}(.gz) in --jpg_root).")
    source.add_argument("--metadata_csv", help=f"Raw MIMIC-CXR: the metadata CSV with ViewPosition, plain or gzipped "
                        f"(default: {METADATA_CSV_NAME}(.gz) in --jpg_root).")
    source.add_argument("--sections", choices=SECTION_CHOICES, default=None,
                        help="Raw MIMIC-CXR: the report text to learn: the FINDINGS section (R2Gen; default 'findings') "
                        "or FINDINGS followed by IMPRESSION ('findings_impression').")
    source.add_argument("--max_images_per_study", type=int, default=None,
                        help="Raw MIMIC-CXR: frontal (PA/AP) images kept per study, PA first then smallest dicom_id "
                        "(default 1, as R2Gen; 0 keeps every frontal image).")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    skipped = SkipLog()

    # 1. Read the studies.
    if args.annotation:
        ignored = [flag for flag in ("reports_root", "split_csv", "metadata_csv", "sections", "max_images_per_study")
                   if getattr(args, flag) is not None]
        if ignored:
            logger.warning("with --annotation, %s ignored: R2Gen's entries already hold the report and the image.",
                           ", ".join(f"--{flag}" for flag in ignored))
        image_root = Path(args.images) if args.images else Path(args.annotation).parent / "images"
        try:
            studies = read_r2gen_annotation(args.annotation, skipped)
        except ValueError as error:
            parser.error(str(error))
        info = {"source": "r2gen_annotation", "annotation": str(args.annotation)}
    else:
        if args.images:
            parser.error("--images goes with --annotation; for raw MIMIC-CXR-JPG use --jpg_root.")
        if args.max_images_per_study is not None and args.max_images_per_study < 0:
            parser.error("--max_images_per_study must be >= 0.")
        image_root = Path(args.jpg_root)
        reports_root = Path(args.reports_root) if args.reports_root else image_root
        sections = args.sections or "findings"
        max_images = 1 if args.max_images_per_study is None else args.max_images_per_study
        for name, folder in (("--jpg_root", image_root), ("--reports_root", reports_root)):
            if not folder.is_dir():
                parser.error(f"{name} {folder}: no such folder.")
        try:
            split_csv = find_csv(args.split_csv, image_root, SPLIT_CSV_NAME)
            metadata_csv = find_csv(args.metadata_csv, image_root, METADATA_CSV_NAME)
            studies = mimic_cxr_studies(
                image_root, reports_root, split_csv, metadata_csv, skipped,
                sections=sections, max_images_per_study=max_images, num_workers=args.num_workers,
            )
        except (ValueError, OSError, EOFError, zlib.error) as error:
            parser.error(str(error))  # a missing or wrong CSV file: nothing to prepare
        info = {
            "source": "mimic_cxr",
            "sections": sections,
            "max_images_per_study": max_images,
            "view_selection": "ViewPosition PA or AP; PA first, then smallest dicom_id",
            "split_csv": str(split_csv),
            "metadata_csv": str(metadata_csv),
            "reports_root": str(reports_root),
        }

    # 2. Clean, load and resize, write.
    dataset, skipped = write_prepared_dataset(
        studies, args.output, image_root=image_root, image_size=args.image_size, style="mimic_cxr",
        skipped=skipped, num_workers=args.num_workers, extra_info=info,
    )
    # 3. Report.
    return finish(skipped, dataset, args.output, args.strict)


if __name__ == "__main__":
    sys.exit(main())
