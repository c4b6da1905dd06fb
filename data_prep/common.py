"""What every `data_prep` script shares: the study record, the skip report, image resizing, R2Gen
annotation files, and writing the prepared dataset (`datasets.load_from_disk(<dir>)` gives a `DatasetDict`
with train / validation / test, beside `annotation.json` in R2Gen's format and `skipped.jsonl`)."""

import argparse
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, DatasetDict
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from r2gen_hf.cli_logging import configure_logging  # noqa: F401  (the data_prep scripts' logging set-up)
from r2gen_hf.data import FEATURES, SPLITS, clean_report


logger = logging.getLogger(__name__)

# R2Gen's annotation.json calls the validation split "val".
ANNOTATION_SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}
DEFAULT_IMAGE_SIZE = 256


@dataclass
class Study:
    """One study before preparation: its report as found, and where its images are (or the images)."""

    id: str
    report: str
    split: str
    image_paths: list[str] = field(default_factory=list)  # relative to the image root
    views: list[str] = field(default_factory=list)
    subject_id: str = ""
    study_id: str = ""
    finding_labels: list[str] = field(default_factory=list)
    images: list[Image.Image] | None = None  # already in memory (synthetic set); else read from image_paths
    source: str = ""  # the file the study came from, for the skip report


class SkipLog:
    """Every study or file left out, with where it came from and why: written to `skipped.jsonl` and
    summarised, never dropped silently."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []

    def add(self, reason: str, *, file: str | os.PathLike = "", study: str = "", field: str = "", detail: str = "") -> None:
        entry = {"study": study, "file": str(file), "field": field, "reason": reason, "detail": detail}
        self.entries.append(entry)
        logger.debug("skipped %s", entry)

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> Counter:
        return Counter(entry["reason"] for entry in self.entries)

    def summary(self, kept: int) -> str:
        """E.g. "kept 2955 studies, skipped 1000: missing image (600), empty report (400)"."""
        if not self.entries:
            return f"kept {kept} studies, skipped 0"
        reasons = ", ".join(f"{reason} ({count})" for reason, count in self.counts().most_common())
        return f"kept {kept} studies, skipped {len(self.entries)}: {reasons}"

    def write(self, path: str | os.PathLike) -> None:
        with open(path, "w") as handle:
            for entry in self.entries:
                handle.write(json.dumps(entry) + "\n")


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Grayscale, shorter side `size`, aspect kept (the processor makes the final square crop/resize)."""
    image = image.convert("L")
    width, height = image.size
    scale = size / min(width, height)
    if scale < 1:
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
    return image


def load_image(path: Path, size: int) -> Image.Image:
    """Reads and resizes one image; raises OSError / ValueError for missing, unreadable or truncated files."""
    with Image.open(path) as image:
        image.draft("L", (size, size))  # JPEG: decode at a reduced scale when that is still >= size
        image.load()  # reads the whole file now, so truncated files fail here
        return resize_shorter_side(image, size)


def _load_study_images(study: Study, image_root: Path | None, size: int) -> tuple[list[Image.Image] | None, dict]:
    """The study's images, or None and a skip entry naming the file and the reason."""
    if study.images is not None:
        return [resize_shorter_side(image, size) for image in study.images], {}
    if not study.image_paths:
        return None, {"reason": "no images", "file": study.source, "field": "image_path"}
    images = []
    for relative in study.image_paths:
        path = Path(image_root or ".") / relative
        if not path.is_file():
            return None, {"reason": "missing image", "file": path, "field": "image_path"}
        try:
            images.append(load_image(path, size))
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            return None, {"reason": "unreadable image", "file": path, "field": "image_path", "detail": str(error)}
    return images, {}


def prepared_rows(
    studies: Iterable[Study],
    skipped: SkipLog,
    *,
    image_root: str | os.PathLike | None,
    image_size: int,
    style: Literal["iu_xray", "mimic_cxr"],
    num_workers: int = 4,
    total: int | None = None,
) -> Iterator[tuple[Study, dict[str, Any]]]:
    """Cleans reports and loads images (in `num_workers` threads), yielding `(study, row)` for the studies
    that survive and logging the rest in `skipped`."""
    root = Path(image_root) if image_root is not None else None

    def load(study: Study) -> tuple[Study, str, list[Image.Image] | None, dict]:
        cleaned = clean_report(study.report or "", style=style)
        if not cleaned:
            return study, cleaned, None, {"reason": "empty report", "file": study.source, "field": "report"}
        try:
            images, problem = _load_study_images(study, root, image_size)
        except Exception as error:  # one bad study must not end a long run
            return study, cleaned, None, {"reason": "error", "file": study.source, "detail": repr(error)}
        return study, cleaned, images, problem

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        progress = tqdm(pool.map(load, studies), total=total, desc="preparing studies", unit="study")
        for study, cleaned, images, problem in progress:
            if images is None:
                skipped.add(problem.pop("reason"), study=study.id, **problem)
                continue
            yield study, {
                "id": study.id,
                "subject_id": study.subject_id,
                "study_id": study.study_id,
                "report": cleaned,
                "raw_report": study.report,
                "images": images,
                "views": list(study.views) or [""] * len(images),
                "image_paths": list(study.image_paths),
                "finding_labels": list(study.finding_labels),
            }


def annotation_entry(study: Study) -> dict[str, Any]:
    """One entry of R2Gen's annotation.json."""
    entry = {"id": study.id, "report": study.report, "image_path": list(study.image_paths), "split": ANNOTATION_SPLIT_NAMES[study.split]}
    if study.subject_id or study.study_id:
        entry.update(subject_id=study.subject_id, study_id=study.study_id)
    return entry


def write_prepared_dataset(
    studies: Iterable[Study],
    output_dir: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    style: Literal["iu_xray", "mimic_cxr"] = "iu_xray",
    skipped: SkipLog | None = None,
    num_workers: int = 4,
    extra_info: dict[str, Any] | None = None,
) -> tuple[DatasetDict, SkipLog]:
    """Prepares `studies` and writes `output_dir`: the DatasetDict, `annotation.json`, `skipped.jsonl` and
    `prepare_info.json` (counts, label distribution, options).

    Studies whose split is not train/validation/test are skipped and reported like any other bad input.
    """
    output_dir = Path(output_dir)
    skipped = skipped if skipped is not None else SkipLog()
    studies = list(studies)
    by_split: dict[str, list[Study]] = {split: [] for split in SPLITS}
    for study in studies:
        if study.split in by_split:
            by_split[study.split].append(study)
        else:
            skipped.add("unknown split", study=study.id, file=study.source, field="split", detail=study.split)

    output_dir.mkdir(parents=True, exist_ok=True)
    annotation: dict[str, list] = {name: [] for name in ANNOTATION_SPLIT_NAMES.values()}
    splits = {}
    with tempfile.TemporaryDirectory(prefix=".r2gen-prepare-", dir=output_dir) as cache_dir:
        for split, split_studies in by_split.items():
            kept: list[dict[str, Any]] = []

            def rows(split_studies=split_studies, kept=kept):
                for study, row in prepared_rows(
                    split_studies, skipped, image_root=image_root, image_size=image_size, style=style,
                    num_workers=num_workers, total=len(split_studies),
                ):
                    kept.append(annotation_entry(study))
                    yield row

            logger.info("%s: %d studies", split, len(split_studies))
            split_rows = rows()
            first = next(split_rows, None)
            if first is None:  # no study (left) in this split
                splits[split] = Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
            else:
                # A fresh fingerprint: hashing the generator would pickle every study (and its images).
                splits[split] = Dataset.from_generator(
                    lambda first=first, split_rows=split_rows: itertools.chain([first], split_rows),
                    features=FEATURES, cache_dir=cache_dir, fingerprint=uuid.uuid4().hex,
                )
            annotation[ANNOTATION_SPLIT_NAMES[split]] = kept
        dataset = DatasetDict(splits)
        # An empty split must be written as one (empty) shard: datasets writes none and then cannot load it.
        dataset.save_to_disk(str(output_dir), num_shards={name: 1 if len(split) == 0 else None for name, split in dataset.items()})
    dataset = DatasetDict.load_from_disk(str(output_dir))

    with open(output_dir / "annotation.json", "w") as handle:
        json.dump(annotation, handle)
    skipped.write(output_dir / "skipped.jsonl")
    kept_total = sum(len(split) for split in dataset.values())
    label_counts = Counter(label for split in dataset.values() for labels in split["finding_labels"] for label in labels)
    info = {
        "summary": skipped.summary(kept_total),
        "studies": {split: len(dataset[split]) for split in dataset},
        "skipped": dict(skipped.counts()),
        "finding_labels": dict(label_counts.most_common()),
        "image_size": image_size,
        "report_style": style,
        **(extra_info or {}),
    }
    with open(output_dir / "prepare_info.json", "w") as handle:
        json.dump(info, handle, indent=2)
    logger.info(info["summary"])
    return dataset, skipped


def read_r2gen_annotation(path: str | os.PathLike, skipped: SkipLog) -> list[Study]:
    """Studies from R2Gen's `annotation.json` (`{"train": [...], "val": [...], "test": [...]}`, entries with
    `id`, `report`, `image_path`, and for MIMIC-CXR `study_id`, `subject_id`). Malformed entries are
    reported in `skipped`, not dropped silently."""
    path = Path(path)
    try:
        annotation = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read R2Gen annotation JSON ({error}). Pass the annotation.json of R2Gen.") from error
    if not isinstance(annotation, dict) or not any(key in annotation for key in ANNOTATION_SPLIT_NAMES.values()):
        raise ValueError(f"{path}: expected an object with 'train', 'val' and 'test' lists (R2Gen's annotation.json).")
    studies = []
    for split, name in ANNOTATION_SPLIT_NAMES.items():
        for index, entry in enumerate(annotation.get(name, [])):
            where = f"{path}[{name}][{index}]"
            if not isinstance(entry, dict):
                skipped.add("malformed entry", file=where, detail=f"expected an object, got {type(entry).__name__}")
                continue
            missing = [key for key in ("id", "report", "image_path") if key not in entry]
            if missing:
                skipped.add("malformed entry", study=str(entry.get("id", "")), file=where, field=",".join(missing), detail="missing field")
                continue
            image_paths = entry["image_path"] if isinstance(entry["image_path"], list) else [entry["image_path"]]
            studies.append(
                Study(
                    id=str(entry["id"]),
                    report=str(entry["report"] or ""),
                    split=split,
                    image_paths=[str(p) for p in image_paths],
                    subject_id=str(entry.get("subject_id", "")),
                    study_id=str(entry.get("study_id", "")),
                    source=where,
                )
            )
    return studies


def add_common_arguments(
    parser: argparse.ArgumentParser, image_size: int = DEFAULT_IMAGE_SIZE, image_size_help: str | None = None
) -> None:
    """The options every data_prep script shares; a source may set its own image-size default and help."""
    parser.add_argument("--output", required=True, help="Directory to write the prepared dataset into.")
    parser.add_argument(
        "--image_size", type=int, default=image_size,
        help=image_size_help
        or f"Resize every image once so that its shorter side is this many pixels (default {image_size}; "
        "the processor then makes the model's input size, e.g. 224 for Swin-B).",
    )
    parser.add_argument("--strict", action="store_true", help="Exit non-zero if anything was skipped (the report is still written).")
    parser.add_argument(
        "--num_workers", type=int, default=min(8, os.cpu_count() or 1),
        help="Threads that decode and resize images (default: the number of CPUs, at most 8).",
    )
    parser.add_argument("--log_level", default="INFO", help="Logging level (DEBUG lists every skip as it happens).")


def finish(skipped: SkipLog, dataset: DatasetDict, output_dir: str | os.PathLike, strict: bool) -> int:
    """Prints the summary; the exit code is 1 under `--strict` when anything was skipped."""
    kept = sum(len(split) for split in dataset.values())
    print(skipped.summary(kept))
    if skipped:
        print(f"details: {Path(output_dir) / 'skipped.jsonl'}")
    if strict and skipped:
        print("--strict: failing because studies were skipped.", file=sys.stderr)
        return 1
    return 0


def remove_if_exists(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
