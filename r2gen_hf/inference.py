"""Batch report generation: study inputs from any source, resumable JSONL output, a progress bar.

`generate.py` is the command-line entry point; the functions here are what it calls:

* study readers: a prepared dataset split (with references), image files for one study, a folder / CSV /
  JSON listing studies, or the ReXrank leaderboard's input JSON;
* `generate_reports`: batched generation with the checkpoint's `GenerationConfig`, writing one JSON line
  per study as soon as it is done, skipping studies already in the output (so a re-run resumes), and
  reporting bad studies without stopping the rest.
"""

import csv
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm
from transformers import GenerationConfig


logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class StudyInput:
    """One study to write a report for: its id, where its images are (or the images), and what is known."""

    id: str
    image_paths: list[str] = field(default_factory=list)
    images: list[Image.Image] | None = None  # already loaded (prepared datasets)
    reference: str | None = None
    context: str | None = None  # e.g. the indication, from ReXrank inputs


class BadStudy(ValueError):
    """A study that cannot be processed (no images, unreadable image); reported and skipped."""


# -- readers -----------------------------------------------------------------------------------------


def studies_from_dataset(dataset_dir: str | os.PathLike, split: str = "test", limit: int | None = None) -> list[StudyInput]:
    """A split of a prepared dataset (`data_prep`), with the cleaned reports as references."""
    from datasets import load_from_disk

    path = Path(dataset_dir)
    if not (path / "dataset_dict.json").exists():
        raise ValueError(f"{path} is not a prepared dataset (no dataset_dict.json); create it with data_prep.")
    dataset = load_from_disk(str(path))
    if split not in dataset:
        raise ValueError(f"{path} has no split {split!r}; it has {sorted(dataset)}.")
    rows = dataset[split]
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return [
        StudyInput(id=row["id"], image_paths=list(row["image_paths"]), images=list(row["images"]), reference=row["report"])
        for row in rows
    ]


def studies_from_images(paths: list[str], study_id: str | None = None) -> list[StudyInput]:
    """One study from image files given on the command line (its views, in order)."""
    if not paths:
        raise ValueError("--images needs at least one image file.")
    return [StudyInput(id=study_id or Path(paths[0]).stem, image_paths=list(paths))]


def studies_from_folder(folder: str | os.PathLike) -> list[StudyInput]:
    """A folder with one sub-folder of images per study (`<folder>/<study id>/*.png`), or image files
    directly in it (one single-view study each)."""
    folder = Path(folder)
    studies = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            views = sorted(str(p) for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            studies.append(StudyInput(id=entry.name, image_paths=views))  # empty -> reported as a bad study
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            studies.append(StudyInput(id=entry.stem, image_paths=[str(entry)]))
    if not studies:
        raise ValueError(f"{folder} holds no images and no study sub-folders with images.")
    return studies


def _split_paths(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [part for part in str(value or "").replace(";", "|").split("|") if part]


def studies_from_listing(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[StudyInput]:
    """A CSV (`id,images[,reference]`, several images separated by `|` or `;`) or a JSON list of objects
    (`{"id": ..., "images": [...], "reference": ...}`). Relative image paths are resolved against
    `image_root` (default: the listing's folder)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle))
    else:
        records = json.loads(path.read_text())
        if isinstance(records, dict):  # {"id": [paths]} or {"id": {...}}
            records = [{"id": key, **(value if isinstance(value, dict) else {"images": value})} for key, value in records.items()]
    studies = []
    for index, record in enumerate(records):
        if "id" not in record or not ("images" in record or "image_path" in record):
            raise ValueError(f"{path}, entry {index}: needs 'id' and 'images' (got keys {sorted(record)}).")
        images = _split_paths(record.get("images", record.get("image_path")))
        studies.append(
            StudyInput(
                id=str(record["id"]),
                image_paths=[str(root / image) if not Path(image).is_absolute() else image for image in images],
                reference=record.get("reference") or record.get("report") or None,
            )
        )
    return studies


def studies_from_rexrank(path: str | os.PathLike, image_root: str | os.PathLike) -> tuple[list[StudyInput], dict]:
    """ReXrank's input: a JSON object keyed by study id, each value with `image_path` (list, relative to the
    image root), `key_image_path`, optional `context`, and for scoring `report` / `section_findings`.
    Returns the studies and the original object (the output adds `model_prediction` to each study)."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: ReXrank input must be a JSON object keyed by study id, got {type(data).__name__}.")
    studies = []
    for study_id, value in data.items():
        images = value.get("image_path") or ([value["key_image_path"]] if value.get("key_image_path") else [])
        images = images if isinstance(images, list) else [images]
        reference = value.get("section_findings") or value.get("report") or None
        studies.append(
            StudyInput(
                id=str(study_id),
                image_paths=[str(Path(image_root) / image) for image in images],
                reference=reference,
                context=value.get("context"),
            )
        )
    return studies, data


# -- output --------------------------------------------------------------------------------------------


def finished_ids(output: str | os.PathLike) -> set[str]:
    """Ids already written to `output` (a re-run resumes after them). A last line cut short by a crash is
    ignored, and rewritten when its study is generated again."""
    path = Path(output)
    if not path.exists():
        return set()
    done = set()
    lines = path.read_text().splitlines()
    for line in lines:
        try:
            done.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    _drop_partial_last_line(path)
    return done


def _drop_partial_last_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def load_study_images(study: StudyInput) -> list[Image.Image]:
    """The study's images, or `BadStudy` naming the file and the reason."""
    if study.images is not None:
        return study.images
    if not study.image_paths:
        raise BadStudy(f"study {study.id}: no images; give each study at least one image file.")
    images = []
    for path in study.image_paths:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.convert("L"))
        except FileNotFoundError:
            raise BadStudy(f"study {study.id}: image {path} does not exist.") from None
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise BadStudy(f"study {study.id}: cannot read image {path} ({error}); is it a complete PNG/JPEG?") from None
    return images


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class GenerationSummary:
    studies: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    new_tokens: int = 0
    seconds: float = 0.0
    resumed: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    @property
    def studies_per_second(self) -> float:
        return self.studies / self.seconds if self.seconds else 0.0


@torch.no_grad()
def generate_reports(
    model,
    processor,
    studies: list[StudyInput],
    output: str | os.PathLike,
    generation_config: GenerationConfig | None = None,
    batch_size: int = 8,
    max_views: int | None = None,
) -> GenerationSummary:
    """Writes one JSON line per study (`id`, `images`, `report`, and `reference` when known) to `output`
    as each batch finishes. Studies already in `output` are skipped (resume); a bad study is reported and
    skipped while the rest of its batch still runs."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = finished_ids(output)
    todo = [study for study in studies if study.id not in done]
    summary = GenerationSummary(resumed=len(studies) - len(todo))
    if summary.resumed:
        logger.info("%s already holds %d of %d studies; generating the other %d.", output, summary.resumed, len(studies), len(todo))
    generation_config = generation_config or model.generation_config
    device = next(model.parameters()).device
    start = time.perf_counter()
    with open(output, "a") as handle, tqdm(total=len(todo), desc="generating", unit="study") as progress:
        for batch in batched(todo, batch_size):
            ready, views = [], []
            for study in batch:
                try:
                    views.append(load_study_images(study)[:max_views])
                    ready.append(study)
                except BadStudy as error:
                    logger.warning("%s", error)
                    summary.skipped.append({"id": study.id, "reason": str(error)})
            if ready:
                inputs = processor(images=views).to(device)
                sequences = model.generate(**inputs, generation_config=generation_config)
                new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
                summary.new_tokens += int((new_tokens != generation_config.pad_token_id).sum())
                for study, report in zip(ready, processor.batch_decode(new_tokens)):
                    record = {"id": study.id, "images": study.image_paths, "report": report}
                    if study.reference is not None:
                        record["reference"] = study.reference
                    handle.write(json.dumps(record) + "\n")
                handle.flush()
                summary.studies += len(ready)
            progress.update(len(batch))
            progress.set_postfix(studies_per_s=f"{summary.studies / max(time.perf_counter() - start, 1e-9):.2f}")
    summary.seconds = time.perf_counter() - start
    return summary


def compile_lm_head(model: torch.nn.Module) -> None:
    """Compiles the LM head's forward for decoding on a CPU (inference only).

    At batch 1 a decoding step reads every LM weight once, and with Gemma 3's 262,144 x hidden output matrix
    the head is most of them; eager PyTorch runs that bf16 matrix-vector product at ~15 GB/s on a CPU that
    reads memory at ~33 GB/s. Inductor's max-autotune picks a micro-GEMM that gets close to the read
    bandwidth, but only with `freezing` (the weight folded into the compiled code as a constant), which is
    why this is for inference alone: with gradients enabled the head runs eagerly, so training never sees a
    stale weight. Measured on the demo LM (Gemma 3 270M, bf16, 2 cores, batch 1 greedy): 42 ms per token vs
    52-63 ms eager, the same tokens, after a ~4 s compile per batch shape. GPUs do not need it (cuBLAS runs
    this product near bandwidth); there, a static cache compiles the whole decoding step.
    """
    import torch._inductor.config as inductor_config

    head = model.get_output_embeddings()
    device = head.weight.device
    if device.type != "cpu":
        raise ValueError(
            f"compile_lm_head is for CPU decoding; the LM head is on {device}. On a GPU use a static KV cache "
            "(--cache_implementation static), with which transformers compiles the whole decoding step."
        )
    eager = head.forward
    compiled = torch.compile(eager, mode="max-autotune", dynamic=False)

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return eager(hidden_states)
        with inductor_config.patch(freezing=True):  # scoped: freezing is a global inductor setting
            return compiled(hidden_states)

    head.forward = forward


def read_results(output: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(output).read_text().splitlines() if line.strip()]


__all__ = [
    "BadStudy",
    "GenerationSummary",
    "StudyInput",
    "compile_lm_head",
    "finished_ids",
    "generate_reports",
    "load_study_images",
    "read_results",
    "studies_from_dataset",
    "studies_from_folder",
    "studies_from_images",
    "studies_from_listing",
    "studies_from_rexrank",
]
