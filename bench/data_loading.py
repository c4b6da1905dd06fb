"""Data-loading throughput: our prepared dataset through the processor vs. R2GenGPT's per-step JPEG decode.

(a) `prepared`: rows of a prepared dataset (images resized once by `data_prep`, stored as small PNGs) read
    with `datasets.load_from_disk` and turned into model inputs by `R2GenDataCollator` + `R2GenProcessor`
    (image resize/normalise and the Gemma 3 prompt + report tokenization), in batches.
(b) `r2gengpt`: what R2GenGPT's dataset does for every sample on every step: open the full-size JPEG,
    decode it whole, convert to RGB and run the Swin image processor.

Both use the same image processor (224 px, ImageNet statistics) and the same machine, in one run. The
source images are synthetic 2500x3000 JPEGs with smooth, X-ray-like content (MIMIC-CXR-JPG's size).

    python bench/data_loading.py [--num_images 32] [--batch_size 8] [--output bench/results/data_loading.json]

Prints one JSON object.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from PIL import Image

if __package__:  # python -m bench data / metrics
    from ._report import emit, machine_info
else:  # python bench/<script>.py (bench/ is on sys.path)
    from _report import emit, machine_info
from data_prep.common import Study, write_prepared_dataset
from r2gen_hf.data import R2GenDataCollator
from r2gen_hf.testing import tiny_image_processor, tiny_processor

SOURCE_SIZE = (2500, 3000)  # width, height of a typical MIMIC-CXR-JPG image
MODEL_INPUT = 224


def synthetic_radiograph(rng: np.random.Generator, size: tuple[int, int] = SOURCE_SIZE) -> Image.Image:
    """A smooth grayscale image (body, two lung fields, film-grain noise) that compresses like an X-ray."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 140 + 40 * np.cos(xx / width * np.pi - 0.5)
    for centre in (0.3, 0.7):
        lung = ((xx - centre * width) / (0.17 * width)) ** 2 + ((yy - 0.45 * height) / (0.3 * height)) ** 2 < 1
        image[lung] -= 90
    image += rng.normal(0, 6, size=image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L")


def write_sources(directory: Path, num_images: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for index in range(num_images):
        name = f"{index:04d}.jpg"
        synthetic_radiograph(rng).save(directory / name, quality=95)
        names.append(name)
    return names


def time_r2gengpt(paths: list[Path], image_processor) -> float:
    """Images/s for R2GenGPT's per-sample loading: full decode, RGB, image processor."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as pil:
            array = np.array(pil.convert("RGB"), dtype=np.uint8)
        image_processor(array, return_tensors="pt")["pixel_values"][0]
    return len(paths) / (time.perf_counter() - start)


def time_prepared(dataset_dir: Path, processor, batch_size: int) -> float:
    """Images/s for prepared rows through the collator (PNG decode, processor, tokenization)."""
    collator = R2GenDataCollator(processor)
    start = time.perf_counter()
    dataset = load_from_disk(str(dataset_dir))["train"]
    images = 0
    for begin in range(0, len(dataset), batch_size):
        rows = dataset.select(range(begin, min(begin + batch_size, len(dataset))))
        batch = collator(list(rows))
        images += int(batch["view_mask"].sum())
    return images / (time.perf_counter() - start)


def run(num_images: int = 32, batch_size: int = 8, image_size: int = 256) -> dict:
    """Both loading paths on the same synthetic full-size JPEGs; images/s of each and their ratio."""
    with tempfile.TemporaryDirectory(prefix="r2gen-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "jpg").mkdir()
        names = write_sources(tmp / "jpg", num_images)
        studies = [Study(id=name, report="The heart is normal. The lungs are clear.", split="train", image_paths=[name], views=["PA"]) for name in names]
        prepare_start = time.perf_counter()
        write_prepared_dataset(studies, tmp / "prepared", image_root=tmp / "jpg", image_size=image_size)
        prepare_seconds = time.perf_counter() - prepare_start

        processor = tiny_processor()
        processor.image_processor = tiny_image_processor(MODEL_INPUT)
        r2gengpt = time_r2gengpt([tmp / "jpg" / name for name in names], processor.image_processor)
        prepared = time_prepared(tmp / "prepared", processor, batch_size)

    return {
        "benchmark": "data_loading",
        **machine_info(),
        "num_images": num_images,
        "source_image_size": list(SOURCE_SIZE),
        "prepared_image_size": image_size,
        "model_input_size": MODEL_INPUT,
        "prepared_images_per_s": round(prepared, 1),
        "r2gengpt_images_per_s": round(r2gengpt, 1),
        "ratio": round(prepared / r2gengpt, 1),
        "one_off_prepare_images_per_s": round(num_images / prepare_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=32, help="Source JPEGs (one per study).")
    parser.add_argument("--batch_size", type=int, default=8, help="Batch size of the prepared path.")
    parser.add_argument("--image_size", type=int, default=256, help="Shorter side stored by data_prep.")
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    args = parser.parse_args(argv)
    emit(run(args.num_images, args.batch_size, args.image_size), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
