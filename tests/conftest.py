"""Shared fixtures. Everything runs offline: nothing is fetched from the Hugging Face Hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def random_xray(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A grayscale image with some structure (a bright disc on noise), like a tiny radiograph."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - rng.uniform(0.3, 0.7) * size) ** 2) < (size / 4) ** 2
    pixels = rng.random((size, size)) * 80 + disc * 150
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def make_studies(views_per_study: list[int], seed: int = 0) -> list[list[Image.Image]]:
    rng = np.random.default_rng(seed)
    return [[random_xray(rng) for _ in range(n)] for n in views_per_study]


@pytest.fixture
def studies():
    return make_studies


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
