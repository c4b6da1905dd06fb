"""Prepare IU-Xray (Indiana University chest X-rays, distributed by OpenI) as an r2gen-hf dataset.

Two inputs are accepted:

* the raw OpenI release: `NLMCXR_reports.tgz` (one XML report per study under `ecgen-radiology/`) and
  `NLMCXR_png.tgz` (one PNG per image), as archives or as extracted folders::

      python -m data_prep.iu_xray --reports NLMCXR_reports.tgz --images NLMCXR_png.tgz --output data/iu_xray
      python -m data_prep.iu_xray --reports ecgen-radiology/ --images NLMCXR_png/ --output data/iu_xray \\
          --split_from r2gen/iu_xray/annotation.json        # the split R2Gen / R2GenGPT report on

* R2Gen's preprocessed files (`annotation.json` + `images/<id>/{0,1}.png`)::

      python -m data_prep.iu_xray --annotation iu_xray/annotation.json --images iu_xray/images --output data/iu_xray

Both end in `common.write_prepared_dataset`: a `DatasetDict` (train / validation / test) with the columns of
`r2gen_hf.data.FEATURES`, `annotation.json` in R2Gen's format (image paths relative to `--images`),
`skipped.jsonl` (every study or file left out, with the file and the reason) and `prepare_info.json`.

Decisions on points the data leaves open (each also recorded in `prepare_info.json`):

* Report text. R2Gen's IU annotation holds the FINDINGS section, so that is the default (`--sections
  findings`); `findings_impression` appends the IMPRESSION (as the MIMIC-CXR script can). The section as
  found is `raw_report`; `report` is `clean_report(raw_report, "iu_xray")`. A report without findings text
  (missing, empty or whitespace) is skipped as "no findings" (in `findings_impression` mode: "no findings
  or impression", when both are empty).
* Study id. R2Gen's ids are the image names without their last "-NNNN" part, i.e. the XML's uId plus the
  images' common prefix: uId "CXR3030" with images CXR3030_IM-1405-1001 / -2001 gives "CXR3030_IM-1405",
  and uId "CXR1" with CXR1_1_IM-0001-3001 / -4001 gives "CXR1_1_IM-0001". If the kept images disagree on
  that prefix (not seen in OpenI) the longest common prefix ending at "-" or "_" is used, else the first
  image's, and a warning names the study.
* Images per study. R2Gen's IU set has exactly two images per study (frontal + lateral). A study with fewer
  than `--min_images` (default 2) is skipped as "fewer than 2 images" (R2Gen excluded them; `--min_images 1`
  keeps them); a study with more than `--max_images` (default 2) keeps its first two images in id order, as
  R2Gen did, and the images left out are listed in `prepare_info.json` ("images_dropped").
* Views. The OpenI XML has no view metadata; R2Gen treats the two images, in id order, as [frontal, lateral]
  (ids ending -1001 are usually frontal, -2001 lateral, but nothing guarantees it). A two-image study gets
  views ["frontal", "lateral"] under that same assumption; any other count gets "" (unknown) per image.
* MeSH. The report's `<MeSH><major>` terms (OpenI's manual indexing) are kept as `finding_labels`, with
  "normal" dropped so that [] means "no finding", as elsewhere in the dataset.
* Split. Without `--split_from`: R2Gen-style 7:1:2 random split of the usable studies (those whose report,
  images and files passed the checks above), deterministic for `--seed`: ids sorted, shuffled with
  `random.Random(seed)`, then train = floor(0.7 n + 0.5), validation = floor(0.1 n + 0.5), test = the rest
  (for n = 2955 that gives the papers' 2069 / 296 / 590 sizes, though not their membership: no seed
  reproduces that, use `--split_from`). An image found unreadable while loading removes its study from the
  split it was drawn into (reported in skipped.jsonl). With `--split_from annotation.json` the split of
  every study is R2Gen's; studies not in that file are skipped as "not in split_from annotation", and ids
  of that file not found in the reports are logged and listed in `prepare_info.json`
  ("split_from_not_found"); under `--strict` they make the run fail too.
* Archives. `.tgz` inputs are read member by member (the XML never touches the disk); the needed PNGs are
  written into a temporary folder inside `--output` that is removed at the end, success or not. Only
  regular-file members are read, and each is written to a checked path below that folder (absolute paths,
  ".." and links are refused), so an archive cannot write elsewhere. In the skip report, files inside an
  archive are named "<archive>:<member>".
"""

import argparse
import logging
import random
import re
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

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

SECTIONS = ("findings", "findings_impression")
VIEWS = ("frontal", "lateral")  # R2Gen's order of the two IU images (an assumption, see the module docstring)
SPLIT_RATIOS = (0.7, 0.1, 0.2)  # train / validation / test, as R2Gen
DEFAULT_SEED = 42
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SERIES_SUFFIX = re.compile(r"-\d+$")  # the per-image part of an OpenI image name: CXR10_IM-0002 "-1001"


# ----------------------------------------------------------------------------------------------------------
# Reports


@dataclass
class OpenIReport:
    """What one OpenI XML report holds that matters here."""

    source: str  # the file (or "<archive>:<member>") it came from
    uid: str  # <uId id="CXR10"/>
    sections: dict[str, str]  # AbstractText Label (upper-case) -> text, e.g. "FINDINGS"
    image_ids: list[str]  # <parentImage id="CXR10_IM-0002-1001">, in document order
    mesh_major: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)


def parse_report(data: bytes | str, source: str = "") -> OpenIReport:
    """Parses one OpenI XML report (`<eCitation>`); raises `xml.etree.ElementTree.ParseError` if it is not XML."""
    root = ET.fromstring(data)
    sections: dict[str, str] = {}
    for element in root.iter("AbstractText"):
        label = (element.get("Label") or "").strip().upper()
        if label and label not in sections:
            sections[label] = "".join(element.itertext()).strip()
    image_ids: list[str] = []
    for element in root.iter("parentImage"):
        image_id = (element.get("id") or "").strip()
        if image_id and image_id not in image_ids:
            image_ids.append(image_id)
    uid_element = root.find(".//uId")
    uid = (uid_element.get("id") or "").strip() if uid_element is not None else ""
    if not uid and image_ids:  # no <uId>: the image names start with it ("CXR10_IM-...")
        uid = image_ids[0].split("_", 1)[0]

    def terms(tag: str) -> list[str]:
        return [text for element in root.iter(tag) if (text := "".join(element.itertext()).strip())]

    return OpenIReport(
        source=source, uid=uid, sections=sections, image_ids=image_ids,
        mesh_major=terms("major"), mesh_automatic=terms("automatic"),
    )


def report_text(report: OpenIReport, sections: str = "findings") -> str:
    """The report text to train on: FINDINGS, or FINDINGS then IMPRESSION ("" when there is none)."""
    if sections not in SECTIONS:
        raise ValueError(f"sections must be one of {SECTIONS}, got {sections!r}.")
    findings = report.sections.get("FINDINGS", "").strip()
    if sections == "findings":
        return findings
    impression = report.sections.get("IMPRESSION", "").strip()
    if findings and impression and not findings.endswith("."):
        findings += "."  # keep the two sections apart as sentences for `clean_report`
    return " ".join(part for part in (findings, impression) if part)


def iter_report_files(reports: Path, skipped: SkipLog) -> Iterator[tuple[str, bytes]]:
    """`(name, bytes)` of every `*.xml` under a folder or inside a `.tgz` / `.tar` archive, in name order."""
    if reports.is_dir():
        for path in sorted(reports.rglob("*.xml")):
            try:
                yield str(path), path.read_bytes()
            except OSError as error:
                skipped.add("unreadable file", file=path, detail=str(error))
        return
    if reports.suffix.lower() == ".xml":  # a single report
        try:
            yield str(reports), reports.read_bytes()
        except OSError as error:
            skipped.add("unreadable file", file=reports, detail=str(error))
        return
    try:
        with tarfile.open(reports) as archive:
            for member in archive:
                if not (member.isfile() and member.name.lower().endswith(".xml")):
                    continue
                name = f"{reports}:{member.name}"
                handle = archive.extractfile(member)
                if handle is None:
                    skipped.add("unreadable file", file=name)
                    continue
                with handle:
                    yield name, handle.read()
    except (tarfile.TarError, OSError, EOFError) as error:  # a truncated or corrupt archive: report, go on
        skipped.add("unreadable archive", file=reports, detail=f"{type(error).__name__}: {error}")


def read_reports(reports: Path, skipped: SkipLog) -> list[OpenIReport]:
    """Every parseable report; malformed XML is reported in `skipped` with its file."""
    parsed = []
    for name, data in iter_report_files(reports, skipped):
        try:
            parsed.append(parse_report(data, source=name))
        except ET.ParseError as error:
            skipped.add("malformed XML", file=name, detail=str(error))
    logger.info("%d XML reports parsed from %s", len(parsed), reports)
    return parsed


# ----------------------------------------------------------------------------------------------------------
# Study ids, views and splits


def study_id(uid: str, image_ids: list[str]) -> str:
    """R2Gen's IU study id: the uId plus the images' common prefix, i.e. the image names without their last
    "-NNNN" part ("CXR3030" + CXR3030_IM-1405-1001, -2001 -> "CXR3030_IM-1405")."""
    if not image_ids:
        return uid
    stems = []
    for image_id in image_ids:
        rest = image_id[len(uid) + 1 :] if uid and image_id.startswith(uid + "_") else image_id
        stems.append(_SERIES_SUFFIX.sub("", rest))
    common = stems[0]
    if any(stem != common for stem in stems):
        prefix = ""
        for position, chars in enumerate(zip(*stems)):
            if len(set(chars)) > 1:
                break
            if chars[0] in "-_":
                prefix = stems[0][:position]
        common = prefix or stems[0]
        logger.warning("%s: images %s do not share a series prefix; study id uses %r", uid, image_ids, common)
    if uid and not any(image_id.startswith(uid + "_") for image_id in image_ids):
        return common  # images named independently of the uId: their own prefix is the id
    return f"{uid}_{common}" if uid else common


def views_for(count: int) -> list[str]:
    """["frontal", "lateral"] for R2Gen's two-image studies (image order = view order); "" (unknown) otherwise."""
    return list(VIEWS) if count == len(VIEWS) else [""] * count


def split_sizes(count: int, ratios: tuple[float, float, float] = SPLIT_RATIOS) -> tuple[int, int, int]:
    """Train / validation / test sizes: halves round up (2955 -> 2069 / 296 / 590, the papers' IU split)."""
    train = min(count, int(count * ratios[0] + 0.5))
    validation = min(count - train, int(count * ratios[1] + 0.5))
    return train, validation, count - train - validation


def assign_splits(ids: Iterable[str], seed: int = DEFAULT_SEED, ratios: tuple[float, float, float] = SPLIT_RATIOS) -> dict[str, str]:
    """Seeded R2Gen-style random split: id -> "train" / "validation" / "test". Depends only on the set of ids
    and the seed (not on file order)."""
    ordered = sorted(set(ids))
    random.Random(seed).shuffle(ordered)
    train, validation, _ = split_sizes(len(ordered), ratios)
    return {
        study: "train" if index < train else "validation" if index < train + validation else "test"
        for index, study in enumerate(ordered)
    }


# ----------------------------------------------------------------------------------------------------------
# Images (folders or archives)


def safe_relative_path(name: str) -> PurePosixPath | None:
    """`name` as a relative path that stays inside its root, or None (absolute, "..", empty, drive letters)."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts or path.is_absolute() or ".." in parts or ":" in parts[0]:
        return None
    return PurePosixPath(*parts)


def index_image_folder(root: Path) -> dict[str, str]:
    """Image name without suffix -> path relative to `root` (posix), for every image under `root`."""
    index: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path.relative_to(root).as_posix())
    return index


class ArchiveImages:
    """Copies the needed images out of a `.tgz` into `target` (a temporary folder), reading only regular-file
    members and writing only to checked paths below `target`; `names` maps each written file back to
    "<archive>:<member>" for the skip report."""

    def __init__(self, archive: Path, target: Path) -> None:
        self.archive = archive
        self.target = target
        self.names: dict[str, str] = {}

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, relative: PurePosixPath) -> None:
        destination = self.target.joinpath(*relative.parts)
        if self.target.resolve() not in destination.resolve().parents:
            raise ValueError(f"{member.name}: refusing to write outside {self.target}")
        handle = tar.extractfile(member)
        if handle is None:
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        with handle, open(destination, "wb") as out:
            while chunk := handle.read(1 << 20):
                out.write(chunk)
        self.names[str(destination)] = f"{self.archive}:{member.name}"

    def extract(self, wanted, skipped: SkipLog) -> dict[str, str]:
        """One pass over the archive; `wanted(member_path) -> relative destination or None`. Returns the
        written files as {key: relative path}, the key being what `wanted` matched."""
        found: dict[str, str] = {}
        try:
            with tarfile.open(self.archive) as tar:
                for member in tar:
                    if not member.isfile():
                        continue  # links, devices, folders: never followed or created
                    relative = safe_relative_path(member.name)
                    if relative is None:
                        skipped.add("unsafe archive member", file=f"{self.archive}:{member.name}", detail="absolute path or '..'")
                        continue
                    match = wanted(relative)
                    if match is None or match[0] in found:
                        continue
                    key, destination = match
                    self._write(tar, member, destination)
                    found[key] = destination.as_posix()
        except (tarfile.TarError, OSError, EOFError, ValueError) as error:
            skipped.add("unreadable archive", file=self.archive, detail=f"{type(error).__name__}: {error}")
        return found

    def by_stem(self, stems: set[str], skipped: SkipLog) -> dict[str, str]:
        """OpenI layout: the images named `<id>.png` anywhere in the archive; stem -> relative path."""

        def wanted(relative: PurePosixPath):
            if relative.suffix.lower() in IMAGE_SUFFIXES and relative.stem in stems:
                return relative.stem, relative
            return None

        return self.extract(wanted, skipped)

    def by_path(self, paths: set[str], skipped: SkipLog) -> dict[str, str]:
        """R2Gen layout: the annotation's relative paths, also below a top folder of the archive
        (`iu_xray/images/CXR.../0.png` for `CXR.../0.png`); written at the annotation's path."""

        def wanted(relative: PurePosixPath):
            for start in range(len(relative.parts)):
                candidate = PurePosixPath(*relative.parts[start:]).as_posix()
                if candidate in paths:
                    return candidate, PurePosixPath(candidate)
            return None

        return self.extract(wanted, skipped)


class NamingSkipLog(SkipLog):
    """A `SkipLog` that names files extracted from an archive as "<archive>:<member>", not by the temporary
    copy that is deleted at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, str] = {}

    def add(self, reason: str, *, file="", **fields: str) -> None:
        file = str(file)
        super().add(reason, file=self.names.get(file, file), **fields)


def is_archive(path: Path) -> bool:
    return path.is_file() and (path.name.lower().endswith((".tgz", ".tar.gz", ".tar")) or tarfile.is_tarfile(path))


# ----------------------------------------------------------------------------------------------------------
# Studies


def select_reports(
    reports: list[OpenIReport], skipped: SkipLog, *, sections: str = "findings", min_images: int = 2, max_images: int = 2
) -> tuple[list[tuple[OpenIReport, str, str, list[str]]], set[str], dict[str, list[str]]]:
    """The reports that make studies: `(report, id, text, kept image ids)`; the rest are reported."""
    selected, seen, dropped = [], set(), {}
    first_source: dict[str, str] = {}
    for report in reports:
        image_ids = sorted(report.image_ids)  # id order = R2Gen's [frontal, lateral] order
        kept = image_ids[:max_images] if max_images > 0 else image_ids
        identifier = study_id(report.uid, kept) if kept else report.uid
        if identifier in first_source:
            skipped.add("duplicate study id", study=identifier, file=report.source, detail=f"first in {first_source[identifier]}")
            continue
        first_source[identifier] = report.source
        seen.add(identifier)
        text = report_text(report, sections)
        if not text:
            reason = "no findings" if sections == "findings" else "no findings or impression"
            skipped.add(reason, study=identifier, file=report.source, field="FINDINGS")
            continue
        if not image_ids:
            skipped.add("no images", study=identifier, file=report.source, field="parentImage")
            continue
        if len(image_ids) < min_images:
            skipped.add(
                f"fewer than {min_images} images", study=identifier, file=report.source, field="parentImage",
                detail=", ".join(image_ids),
            )
            continue
        if len(kept) < len(image_ids):
            dropped[identifier] = image_ids[len(kept):]
            logger.info("%s: %d images, keeping %s", identifier, len(image_ids), kept)
        selected.append((report, identifier, text, kept))
    return selected, seen, dropped


def make_studies(
    selected: list[tuple[OpenIReport, str, str, list[str]]], image_index: dict[str, str], skipped: SkipLog, *, images_label: str
) -> list[Study]:
    """Studies whose images all exist; a missing image is reported with the file that was expected."""
    studies = []
    for report, identifier, text, image_ids in selected:
        missing = [image_id for image_id in image_ids if image_id not in image_index]
        if missing:
            skipped.add(
                "missing image", study=identifier, file=f"{images_label}{missing[0]}.png", field="image_path",
                detail=f"referenced by {report.source}" + (f"; also missing: {', '.join(missing[1:])}" if missing[1:] else ""),
            )
            continue
        studies.append(
            Study(
                id=identifier,
                report=text,
                split="",
                image_paths=[image_index[image_id] for image_id in image_ids],
                views=views_for(len(image_ids)),
                finding_labels=[term for term in report.mesh_major if term.lower() != "normal"],
                source=report.source,
            )
        )
    return studies


def apply_split_from(studies: list[Study], annotation: Path, skipped: SkipLog, seen_ids: set[str]) -> tuple[list[Study], list[str]]:
    """Takes each study's split from R2Gen's annotation.json; returns the studies in it and the annotation's
    ids that the reports do not have."""
    given: dict[str, str] = {}
    for entry in read_r2gen_annotation(annotation, skipped):
        if entry.id in given:
            logger.warning("%s: id %s listed twice; keeping its first split (%s)", annotation, entry.id, given[entry.id])
            continue
        given[entry.id] = entry.split
    kept = []
    for study in studies:
        if study.id in given:
            study.split = given[study.id]
            kept.append(study)
        else:
            skipped.add("not in split_from annotation", study=study.id, file=study.source, detail=str(annotation))
    not_found = sorted(set(given) - seen_ids)
    if not_found:
        logger.warning(
            "%d ids of %s were not found in the reports: %s%s", len(not_found), annotation,
            ", ".join(not_found[:10]), " ..." if len(not_found) > 10 else "",
        )
    return kept, not_found


# ----------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.iu_xray",
        description=(
            "Prepare IU-Xray (OpenI) for r2gen-hf: from the raw release (--reports + --images) or from R2Gen's "
            "annotation.json (--annotation + --images). Writes a DatasetDict (train/validation/test), "
            "annotation.json (R2Gen format), skipped.jsonl and prepare_info.json into --output. See the module "
            "docstring (data_prep/iu_xray.py) for the choices made on ids, views, image counts and splits."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--reports", type=Path,
        help="OpenI reports: NLMCXR_reports.tgz or its extracted folder (ecgen-radiology/*.xml, searched recursively).",
    )
    source.add_argument(
        "--annotation", type=Path,
        help="R2Gen's annotation.json instead of raw reports; its image paths are relative to --images.",
    )
    parser.add_argument(
        "--images", type=Path, required=True,
        help="Images: NLMCXR_png.tgz or its extracted folder (<image id>.png, searched recursively); with "
        "--annotation, the folder (or .tgz) the annotation's image paths are relative to.",
    )
    parser.add_argument(
        "--split_from", type=Path,
        help="Take the train/val/test split from this R2Gen annotation.json (reproduces the papers' 2069/296/590 "
        "split); studies not in it are skipped and reported. Only with --reports.",
    )
    parser.add_argument(
        "--sections", choices=SECTIONS, default="findings",
        help="Report text: the FINDINGS section (default; as R2Gen's IU annotation), or FINDINGS followed by IMPRESSION.",
    )
    parser.add_argument(
        "--min_images", type=int, default=2,
        help="Skip studies with fewer images (default 2, as R2Gen's IU set: frontal + lateral; 1 keeps single-image studies).",
    )
    parser.add_argument(
        "--max_images", type=int, default=2,
        help="Keep at most this many images per study, the first in id order, as R2Gen did (default 2; 0: keep all).",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"Seed of the 7:1:2 random split (default {DEFAULT_SEED}; without --split_from).")
    add_common_arguments(parser)
    return parser


def _check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for option in ("reports", "annotation", "images", "split_from"):
        path = getattr(args, option)
        if path is not None and not path.exists():
            parser.error(f"--{option} {path}: no such file or folder")
    if args.split_from is not None and args.annotation is not None:
        parser.error("--split_from is for raw OpenI reports (--reports); an --annotation file brings its own split.")
    if args.min_images < 1 or args.max_images < 0 or (args.max_images and args.max_images < args.min_images):
        parser.error("need --min_images >= 1 and --max_images 0 (all) or >= --min_images.")
    if args.image_size < 1:
        parser.error("--image_size must be positive.")


def _from_openi(args, skipped: NamingSkipLog, temporary: Path) -> tuple[list[Study], Path, dict[str, Any]]:
    reports = read_reports(args.reports, skipped)
    selected, seen_ids, dropped = select_reports(
        reports, skipped, sections=args.sections, min_images=args.min_images, max_images=args.max_images
    )
    if is_archive(args.images):
        archive = ArchiveImages(args.images, temporary)
        index = archive.by_stem({image_id for *_, image_ids in selected for image_id in image_ids}, skipped)
        skipped.names.update(archive.names)
        image_root, images_label = temporary, f"{args.images}:"
    else:
        index = index_image_folder(args.images)
        image_root, images_label = args.images, f"{args.images}/"
    studies = make_studies(selected, index, skipped, images_label=images_label)
    info: dict[str, Any] = {
        "images_dropped": dropped,
        "studies_with_more_than_max_images": len(dropped),
    }
    if args.split_from is not None:
        studies, not_found = apply_split_from(studies, args.split_from, skipped, seen_ids)
        info.update(split={"method": "split_from", "split_from": str(args.split_from)},
                    split_from_not_found=not_found, split_from_not_found_count=len(not_found))
    else:
        splits = assign_splits([study.id for study in studies], args.seed)
        for study in studies:
            study.split = splits[study.id]
        info.update(split={"method": "seeded", "seed": args.seed, "ratios": list(SPLIT_RATIOS), "planned_sizes": list(split_sizes(len(studies)))})
    return studies, image_root, info


def _from_annotation(args, skipped: NamingSkipLog, temporary: Path) -> tuple[list[Study], Path, dict[str, Any]]:
    studies = read_r2gen_annotation(args.annotation, skipped)
    for study in studies:
        study.views = views_for(len(study.image_paths))
    if not is_archive(args.images):
        return studies, args.images, {"split": {"method": "annotation", "annotation": str(args.annotation)}}
    wanted = {path for study in studies for path in study.image_paths if safe_relative_path(path) is not None}
    archive = ArchiveImages(args.images, temporary)
    archive.by_path(wanted, skipped)
    skipped.names.update(archive.names)
    for study in studies:  # a missing file is reported under the archive, not the temporary folder
        for path in study.image_paths:
            skipped.names.setdefault(str(temporary / path), f"{args.images}:{path}")
    return studies, temporary, {"split": {"method": "annotation", "annotation": str(args.annotation)}}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_inputs(parser, args)
    configure_logging(args.log_level)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    skipped = NamingSkipLog()
    with ExitStack() as stack:  # the temporary image folder goes, whatever happens
        temporary = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".iu-xray-images-", dir=output)))
        try:
            if args.annotation is not None:
                studies, image_root, info = _from_annotation(args, skipped, temporary)
            else:
                studies, image_root, info = _from_openi(args, skipped, temporary)
        except ValueError as error:  # an unreadable annotation / split_from file
            print(f"error: {error}", file=sys.stderr)
            return 2
        info = {
            "source": "r2gen_annotation" if args.annotation is not None else "openi",
            "reports": str(args.reports or args.annotation),
            "images": str(args.images),
            "sections": args.sections,
            "min_images": args.min_images,
            "max_images": args.max_images,
            "views": "two-image studies: ['frontal', 'lateral'] in image id order (R2Gen's assumption; OpenI "
            "has no view metadata); other counts: '' (unknown)",
            **info,
        }
        dataset, skipped = write_prepared_dataset(
            studies, output, image_root=image_root, image_size=args.image_size, style="iu_xray",
            skipped=skipped, num_workers=args.num_workers, extra_info=info,
        )
    code = finish(skipped, dataset, output, args.strict)
    not_found = info.get("split_from_not_found") or []
    if not_found:
        print(f"{len(not_found)} ids of {args.split_from} not found in the reports (listed in {output / 'prepare_info.json'})")
        if args.strict:
            print("--strict: failing because split_from ids were not found.", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
