"""A synthetic chest X-ray set for the demo and the tests: seeded, procedurally drawn grayscale PA (frontal)
and lateral views with visible findings, R2Gen-style reports written from sentence templates, and
per-study ground-truth labels.

    python -m data_prep.synthetic --output data/synthetic --num_studies 200 --seed 0

Findings (`FINDINGS`, the exact label strings stored in `finding_labels`; a study with none is normal):

* ``cardiomegaly``: the heart shadow is wider than half the thorax (cardiothoracic ratio 0.54-0.68;
  normal studies 0.36-0.46); on the lateral view the heart fills more of the retrocardiac space.
* ``pleural_effusion_left`` / ``pleural_effusion_right``: the costophrenic angle and the lung base on that
  side whited out by fluid with a meniscus that climbs the lateral chest wall; on the lateral view the
  posterior costophrenic sulcus is blunted. **Left and right are the patient's**: the frontal view is a
  standard PA projection displayed as if facing the patient, so the patient's left is on the *image's
  right* (like the heart, which lies mostly on the image's right).
* ``pneumothorax``: on one side, an apical and lateral rim with no lung markings (darker, smooth) beyond a
  thin bright visceral pleural line, and a slightly denser, partly collapsed lung.
* ``nodule``: a small round bright opacity in one lung (a "mass" when 3 cm or more).
* ``consolidation``: a large patchy opacity in one lung zone with darker branching air bronchograms.

Each finding is drawn independently with its own probability (`FINDING_PROBABILITIES`), so about 37% of
studies are normal, combinations occur naturally and no label always comes with another. Every study
also varies in patient size, position, rotation, exposure, contrast and noise, so the findings must be
read from the pixels rather than from a fixed layout. Severity, side and location of each finding (drawn
once per study, `StudySpec`) are shared by both views and by the report ("small left pleural effusion",
"nodule in the right upper lobe").

Reports are written the way radiologists write them (`write_report`): in a reading order (heart, lungs,
pleura, bones; neighbouring sentences sometimes swapped), each statement in its usual phrasing about two
times in three and in rarer variants otherwise. So normal reports recur, as in IU-Xray, and the most
frequent training report is a true mode (the demo's baseline) rather than the first of all-unique ones.

The set is written like every other source, with `data_prep.common.write_prepared_dataset` (IU-Xray style:
two views, PA then LATERAL); the images exist only in memory, so `image_paths` is empty.
"""

from __future__ import annotations

import argparse
import sys
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from data_prep.common import Study, add_common_arguments, configure_logging, finish, write_prepared_dataset


logger = logging.getLogger(__name__)

FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion_left",
    "pleural_effusion_right",
    "pneumothorax",
    "nodule",
    "consolidation",
)
# Independent probabilities: P(normal) = 0.8 * 0.85**4 * 0.88 ~= 0.37.
FINDING_PROBABILITIES: dict[str, float] = {
    "cardiomegaly": 0.20,
    "pleural_effusion_left": 0.15,
    "pleural_effusion_right": 0.15,
    "pneumothorax": 0.12,
    "nodule": 0.15,
    "consolidation": 0.15,
}
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.7, "validation": 0.1, "test": 0.2}
VIEWS: tuple[str, str] = ("PA", "LATERAL")
# Reports follow a reading order (heart, lungs, pleura, bones); each neighbouring pair of sentences is swapped
# with this probability.
SENTENCE_SWAP_PROBABILITY = 0.15
DEFAULT_SYNTHETIC_IMAGE_SIZE = 128
LATERALITY = (
    "left/right are the patient's: in the PA (frontal) view the patient's left is on the image's right; "
    "in the lateral view the patient faces the image's left (anterior left, posterior right)"
)

# Sides as signs along the frontal image's x axis: the patient's left is the image's right.
SIDE_SIGN = {"left": 1.0, "right": -1.0}


# ----------------------------------------------------------------------------------------------- spec


@dataclass
class Lesion:
    """Where one focal lesion is: `side` (patient's), `across` (0 medial .. 1 lateral), `height` (0 apex
    .. 1 base), `depth` (0 anterior .. 1 posterior, for the lateral view) and `radius` (fraction of the
    image width)."""

    side: str
    across: float
    height: float
    depth: float
    radius: float

    @property
    def zone(self) -> str:
        return "upper" if self.height < 0.4 else "mid" if self.height < 0.68 else "lower"


@dataclass
class StudySpec:
    """Everything drawn once per study and shared by both views and the report: the labels, the finding
    details (side, size, location) and the patient's anatomy."""

    labels: list[str]
    ctr: float  # cardiothoracic ratio (heart width / inner thoracic width)
    effusion: dict[str, float] = field(default_factory=dict)  # side -> fluid height (fraction of lung height)
    pneumothorax_side: str = ""
    pneumothorax_size: float = 0.0  # fraction of the lung's width/height taken by air
    nodule: Lesion | None = None
    consolidation: Lesion | None = None
    # anatomy (fractions of the image size)
    center_x: float = 0.5
    half_width: float = 0.34  # lateral lung edge to the midline ~ 0.97 * half_width
    apex_y: float = 0.15
    diaphragm_y: float = 0.72  # left hemidiaphragm dome base; the right sits `right_raise` higher
    right_raise: float = 0.03
    dome_height: float = 0.05
    depth: float = 0.33  # lateral view: half the antero-posterior diameter
    gastric_bubble: bool = True


def sample_findings(rng: np.random.Generator) -> list[str]:
    """The study's positive findings, each drawn independently with `FINDING_PROBABILITIES` (in
    `FINDINGS` order; [] is a normal study)."""
    return [name for name in FINDINGS if rng.random() < FINDING_PROBABILITIES[name]]


def _sample_lesion(rng: np.random.Generator, radius: tuple[float, float]) -> Lesion:
    side = "left" if rng.random() < 0.5 else "right"
    height = float(rng.uniform(0.15, 0.85))
    # Keep lesions off the mediastinum and, low down, off the heart.
    across = float(rng.uniform(0.45 if height > 0.55 else 0.3, 0.85))
    return Lesion(side, across, height, float(rng.uniform(0.25, 0.75)), float(rng.uniform(*radius)))


def sample_spec(rng: np.random.Generator, findings: Sequence[str] | None = None) -> StudySpec:
    """A study: `findings` (sampled with `sample_findings` when None) with their details, and a patient."""
    labels = sample_findings(rng) if findings is None else list(findings)
    unknown = set(labels) - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown findings {sorted(unknown)}; expected some of {FINDINGS}")
    labels = [name for name in FINDINGS if name in labels]
    spec = StudySpec(
        labels=labels,
        ctr=float(rng.uniform(0.54, 0.68) if "cardiomegaly" in labels else rng.uniform(0.36, 0.46)),
        center_x=float(0.5 + rng.normal(0, 0.02)),
        half_width=float(rng.uniform(0.3, 0.37)),
        apex_y=float(rng.uniform(0.11, 0.17)),
        right_raise=float(rng.uniform(0.01, 0.045)),
        dome_height=float(rng.uniform(0.035, 0.06)),
        depth=float(rng.uniform(0.29, 0.35)),
        gastric_bubble=bool(rng.random() < 0.6),
    )
    spec.diaphragm_y = float(spec.apex_y + rng.uniform(0.56, 0.64))
    for side in ("left", "right"):
        if f"pleural_effusion_{side}" in labels:
            spec.effusion[side] = float(rng.uniform(0.16, 0.42))
    if "pneumothorax" in labels:
        spec.pneumothorax_side = "left" if rng.random() < 0.5 else "right"
        spec.pneumothorax_size = float(rng.uniform(0.2, 0.38))
    if "nodule" in labels:
        spec.nodule = _sample_lesion(rng, (0.02, 0.045))
    if "consolidation" in labels:
        spec.consolidation = _sample_lesion(rng, (0.075, 0.115))
    return spec


def _as_spec(findings: StudySpec | Sequence[str], rng: np.random.Generator) -> StudySpec:
    return findings if isinstance(findings, StudySpec) else sample_spec(rng, findings)


# -------------------------------------------------------------------------------------------- drawing


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres as fractions of the image: (y, x), each (size, size) float32."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return axis[:, None].repeat(size, 1), axis[None, :].repeat(size, 0)


def _soft(distance: np.ndarray, size: int, edge: float = 0.8) -> np.ndarray:
    """A mask from a signed distance (positive inside, in image fractions), its edge `edge` pixels wide."""
    return (1.0 / (1.0 + np.exp(-np.clip(distance * size / edge, -30, 30)))).astype(np.float32)


def _ellipse(y, x, cy, cx, ry, rx, angle: float = 0.0) -> np.ndarray:
    """Approximate signed distance to an ellipse (positive inside), in image fractions."""
    if angle:
        cos, sin = math.cos(angle), math.sin(angle)
        dx, dy = x - cx, y - cy
        x, y, cx, cy = dx * cos + dy * sin, -dx * sin + dy * cos, 0.0, 0.0
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (1.0 - r) * min(rx, ry)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise, unit-ish variance: a `cells` x `cells` random field upsampled bicubically."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _line(y, x, y0, x0, y1, x1) -> np.ndarray:
    """Distance from every pixel to the segment (y0, x0)-(y1, x1)."""
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
    return np.sqrt((y - y0 - t * dy) ** 2 + (x - x0 - t * dx) ** 2)


def _bronchograms(rng, y, x, cy, cx, radius, size) -> np.ndarray:
    """Darker branching tubes inside a consolidation (air bronchograms), 0..1."""
    tubes = np.zeros_like(x)
    for _ in range(3):
        angle = rng.uniform(0, 2 * math.pi)
        length = radius * rng.uniform(0.7, 1.1)
        y1, x1 = cy + length * math.sin(angle), cx + length * math.cos(angle)
        tubes = np.maximum(tubes, np.exp(-((_line(y, x, cy, cx, y1, x1) * size / 0.8) ** 2)))
        for _ in range(2):
            t = rng.uniform(0.3, 0.7)
            by, bx = cy + t * (y1 - cy), cx + t * (x1 - cx)
            branch = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
            y2, x2 = by + 0.5 * length * math.sin(branch), bx + 0.5 * length * math.cos(branch)
            tubes = np.maximum(tubes, np.exp(-((_line(y, x, by, bx, y2, x2) * size / 0.7) ** 2)))
    return tubes


def _finish(density: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """Exposure, contrast, noise, blur and a small rotation, then 8-bit grayscale."""
    density = density * rng.uniform(0.85, 1.1) + rng.uniform(0.0, 0.06)
    density = np.clip(density, 0, 1) ** rng.uniform(0.8, 1.25)
    density = density + rng.normal(0, rng.uniform(0.008, 0.025), density.shape) + 0.02 * _noise(rng, size, 6)
    pad = size // 8  # rotate an edge-padded copy so that no blank corners come in
    padded = np.pad(np.clip(density, 0, 1) * 255 + 0.5, pad, mode="edge").astype(np.uint8)
    image = Image.fromarray(padded, mode="L").filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.6) * size / 128))
    image = image.rotate(rng.uniform(-4, 4), resample=Image.Resampling.BILINEAR)
    return image.crop((pad, pad, pad + size, pad + size))


def _frontal_lung(spec: StudySpec, sign: float) -> tuple[float, float, float, float]:
    """The upper half-ellipse of one lung in the PA view: centre x, base y, radius x, radius y."""
    base = spec.diaphragm_y - (spec.right_raise if sign < 0 else 0.0)
    return spec.center_x + sign * 0.52 * spec.half_width, base, 0.45 * spec.half_width, base - spec.apex_y


def _frontal_point(spec: StudySpec, lesion: Lesion) -> tuple[float, float]:
    sign = SIDE_SIGN[lesion.side]
    lx, base, rx, ry = _frontal_lung(spec, sign)
    yy = spec.apex_y + lesion.height * 0.92 * ry
    half = rx * math.sqrt(max(0.0, 1 - ((base - yy) / ry) ** 2))
    medial = max(0.15 * spec.half_width, abs(lx - spec.center_x) - half)
    lateral = abs(lx - spec.center_x) + half - lesion.radius
    return yy, spec.center_x + sign * (medial + lesion.across * max(lateral - medial, 0.0))


def draw_frontal(findings: StudySpec | Sequence[str], rng: np.random.Generator, size: int = DEFAULT_SYNTHETIC_IMAGE_SIZE) -> Image.Image:
    """The PA view (size x size, mode "L"): body, lungs with vascular markings, mediastinum and spine, heart,
    domed hemidiaphragms, ribs and clavicles, and the study's findings. `findings` is a `StudySpec` (both
    views of one study share it) or a list of labels (details and patient then drawn from `rng`)."""
    spec = _as_spec(findings, rng)
    y, x = _grid(size)
    cx, w = spec.center_x, spec.half_width
    across = (x - cx) / w  # 0 at the midline, ~+-1 at the lateral lung edges

    # Body: soft tissue, thicker in the middle, narrowing to the neck above the apices.
    body_half = np.where(y > spec.apex_y - 0.02, w * 1.2, w * 1.2 - (spec.apex_y - 0.02 - y) * 2.5)
    body_half = np.maximum(body_half, 0.11)
    body = _soft(body_half - np.abs(x - cx), size, 1.5)
    density = body * (0.36 + 0.12 * np.sqrt(np.clip(1 - (across / 1.25) ** 2, 0, 1)))

    # Lungs above domed hemidiaphragms; abdomen below.
    lungs = np.zeros_like(x)
    below = np.zeros_like(x)
    lung_masks = {}
    for side, sign in SIDE_SIGN.items():
        lx, base, rx, ry = _frontal_lung(spec, sign)
        dome = base - spec.dome_height * np.clip(1 - ((x - lx) / rx) ** 2, 0, 1)
        upper = np.where(y < base, _ellipse(y, x, base, lx, ry, rx), -1.0)
        mask = _soft(np.minimum(upper, dome - y), size) * _soft(sign * (x - cx) - 0.1 * w, size, 1.5)
        lung_masks[side] = mask
        lungs = np.maximum(lungs, mask)
        half = (x - cx) * sign > 0
        below = np.where(half, _soft(y - dome, size), below)
    below = below * body
    density = density + 0.16 * below

    # Vascular markings: brighter and coarser near the hila, fading to the periphery.
    markings = 0.5 * _noise(rng, size, max(8, size // 6)) + 0.5 * _noise(rng, size, max(16, size // 3))
    hilum_y = spec.apex_y + 0.45 * (spec.diaphragm_y - spec.apex_y)
    hila = np.exp(-(((np.abs(x - cx) - 0.28 * w) / (0.35 * w)) ** 2 + ((y - hilum_y) / 0.18) ** 2))
    lung_density = 0.13 + 0.045 * np.clip(markings, -1.5, 2.5) * (0.4 + hila) + 0.08 * hila
    lung_density = lung_density + 0.05 * np.clip((y - spec.apex_y) / 0.6, 0, 1)  # breast/soft tissue at bases

    # Pneumothorax: the air rim has no markings; the collapsing lung is a little denser.
    if spec.pneumothorax_side:
        sign = SIDE_SIGN[spec.pneumothorax_side]
        lx, base, rx, ry = _frontal_lung(spec, sign)
        k = spec.pneumothorax_size
        inner = _ellipse(y, x, base + 0.25 * ry * k, lx - sign * 0.55 * k * rx, ry * (1 - 0.6 * k), rx * (1 - 0.9 * k))
        collapsed = _soft(inner, size)
        air = lung_masks[spec.pneumothorax_side] * (1 - collapsed)
        pleural_line = np.exp(-((inner * size / 0.7) ** 2)) * lung_masks[spec.pneumothorax_side]
        lung_density = lung_density * (1 - air) + 0.06 * air + 0.03 * collapsed * lung_masks[spec.pneumothorax_side]
        lung_density = lung_density + 0.22 * pleural_line * (1 - collapsed * 0.5)
    density = density * (1 - lungs) + lung_density * lungs

    # Effusions: fluid fills the base, its meniscus climbing the lateral chest wall; it hides the dome and
    # the costophrenic angle.
    for side, amount in spec.effusion.items():
        sign = SIDE_SIGN[side]
        lx, base, rx, ry = _frontal_lung(spec, sign)
        lateral = np.clip(sign * (x - lx) / rx, -1, 1.2)  # -1 medial .. 1 lateral
        level = base - amount * ry - 0.22 * ry * np.clip(lateral + 0.2, 0, None) ** 2
        fluid = _soft(y - level, size, 1.5) * _soft(sign * (x - cx) - 0.1 * w, size) * _soft(1.05 - np.abs(across), size)
        density = np.maximum(density, (0.44 + 0.08 * np.clip((y - level) / 0.08, 0, 1)) * fluid)

    # Ribs (posterior arcs) and clavicles, inside the body only.
    rib_gap = (spec.diaphragm_y - spec.apex_y) / 8.5
    ribs = np.zeros_like(x)
    span = np.abs(across)
    for k in range(10):
        y0 = spec.apex_y - 0.03 + k * rib_gap
        centre = y0 - 0.05 * span + 0.2 * span**2
        ribs = np.maximum(ribs, np.exp(-(((y - centre) / (0.22 * rib_gap)) ** 2)))
    ribs = ribs * _soft(1.15 - span, size, 2) * _soft(span - 0.12, size, 2)
    clavicle_y = spec.apex_y + 0.01 - 0.06 * np.clip(span - 0.2, 0, 1)
    clavicles = np.exp(-(((y - clavicle_y) / 0.013) ** 2)) * _soft(1.05 - span, size, 2) * _soft(span - 0.1, size, 2)
    density = density + (0.07 * ribs + 0.18 * clavicles) * body

    # Mediastinum with the spine faintly through it, the aortic knob on the left, the trachea.
    mediastinum = _soft(0.12 * w + 0.04 * w * (y > hilum_y) - np.abs(x - cx), size, 1.2) * (y > spec.apex_y - 0.1)
    knob = _soft(_ellipse(y, x, hilum_y - 0.06, cx + 0.12 * w, 0.03, 0.045), size, 1.2)
    mediastinum = np.maximum(mediastinum, knob)
    discs = np.cos(y * size * 2 * math.pi / max(4.0, size / 14)) * _soft(0.05 * w - np.abs(x - cx), size)
    density = density * (1 - mediastinum) + (0.5 + 0.025 * discs) * mediastinum
    trachea = _soft(0.022 - np.abs(x - cx + 0.004), size) * _soft(hilum_y - 0.07 - y, size, 2)
    density = density - 0.15 * trachea * body

    # Heart: its width over the inner thoracic width is the cardiothoracic ratio; a third lies right of
    # the midline (image left), two thirds left (image right). It sits on the diaphragm, below which the
    # abdomen hides its lower edge.
    heart_width = spec.ctr * 2 * 0.97 * w
    heart_y = spec.diaphragm_y - 0.065
    heart = _soft(_ellipse(y, x, heart_y, cx + heart_width / 6, 0.3 * heart_width + 0.05, heart_width / 2, angle=-0.3), size, 1.2)
    heart = heart * (1 - below)
    density = density * (1 - heart) + 0.55 * heart

    # Gastric bubble under the patient's left hemidiaphragm.
    if spec.gastric_bubble:
        bubble = _soft(_ellipse(y, x, spec.diaphragm_y + 0.045, cx + 0.55 * w, 0.025, 0.05), size)
        density = density - 0.25 * bubble * below

    # Focal lung lesions.
    if spec.consolidation is not None:
        lesion = spec.consolidation
        ly, lxp = _frontal_point(spec, lesion)
        blob = _soft(_ellipse(y, x, ly, lxp, lesion.radius * 1.15, lesion.radius), size, 3)
        patchy = np.clip(0.75 + 0.6 * _noise(rng, size, max(8, size // 8)), 0.3, 1)
        tubes = _bronchograms(rng, y, x, ly, lxp, lesion.radius, size)
        opacity = blob * patchy * lung_masks[lesion.side] * (1 - heart)
        density = density + opacity * (0.4 - 0.24 * tubes)
    if spec.nodule is not None:
        lesion = spec.nodule
        ly, lxp = _frontal_point(spec, lesion)
        r = np.sqrt((y - ly) ** 2 + (x - lxp) ** 2) / lesion.radius
        density = density + 0.32 * np.sqrt(np.clip(1 - r**2, 0, 1)) + 0.04 * _soft(1 - r, size)

    return _finish(density, rng, size)


def draw_lateral(findings: StudySpec | Sequence[str], rng: np.random.Generator, size: int = DEFAULT_SYNTHETIC_IMAGE_SIZE) -> Image.Image:
    """The lateral view (size x size, mode "L"; anterior on the image's left): chest in profile, lungs,
    heart anteriorly, spine posteriorly, sternum, diaphragm domes with the posterior costophrenic sulcus,
    and the study's findings (effusion blunts the posterior sulcus, cardiomegaly fills the retrocardiac
    space, lesions at their height and depth, a pneumothorax as an apical air rim)."""
    spec = _as_spec(findings, rng)
    y, x = _grid(size)
    cx, d = spec.center_x, spec.depth
    top, base = spec.apex_y, spec.diaphragm_y
    height = base - top

    outline = (np.abs((x - cx) / (d + 0.05)) ** 4 + np.abs((y - 0.58) / 0.62) ** 4) ** 0.25
    body = _soft((1 - outline) * (d + 0.05), size, 1.5)
    density = body * (0.4 + 0.08 * np.clip(1 - ((x - cx) / d) ** 2, 0, 1))

    lung_cx, lung_rx = cx + 0.03, 0.9 * d
    ap = (x - (lung_cx - lung_rx)) / (2 * lung_rx)  # 0 anterior .. 1 posterior lung edge
    dome = base - spec.dome_height * np.clip(1 - ((x - lung_cx) / lung_rx) ** 2, 0, 1) + 0.05 * np.clip(2 * ap - 1, 0, 1) ** 2
    upper = np.where(y < base, _ellipse(y, x, base, lung_cx, height, lung_rx), -1.0)
    sulcus = _ellipse(y, x, base, lung_cx + 0.2 * lung_rx, 0.07, 0.8 * lung_rx)
    lung = _soft(np.maximum(np.minimum(upper, dome - y), np.minimum(sulcus, dome - y)), size)
    diaphragm = _soft(y - dome, size)  # everything below the domes
    below = diaphragm * body
    density = density + 0.15 * below
    markings = 0.5 * _noise(rng, size, max(8, size // 6)) + 0.5 * _noise(rng, size, max(16, size // 3))
    hilum = np.exp(-(((x - lung_cx) / 0.09) ** 2 + ((y - top - 0.42 * height) / 0.12) ** 2))
    lung_density = 0.17 + 0.03 * np.clip(markings, -1.5, 2.5) + 0.1 * hilum
    if spec.pneumothorax_side:
        k = spec.pneumothorax_size
        inner = _ellipse(y, x, base + 0.2 * height * k, lung_cx, height * (1 - 0.5 * k), lung_rx * (1 - 0.25 * k))
        air = lung * (1 - _soft(inner, size))
        lung_density = lung_density * (1 - air) + 0.08 * air + 0.14 * np.exp(-((inner * size / 0.7) ** 2)) * lung
    density = density * (1 - lung) + lung_density * lung

    # Spine (vertebral bodies and discs) posteriorly, sternum anteriorly, faint ribs.
    spine_x = cx + 0.7 * d
    vertebrae = 0.5 + 0.5 * np.cos((y - top) * 2 * math.pi / (height / 7.5))
    spine = _soft(0.045 - np.abs(x - spine_x), size, 1.2) * _soft(y - top + 0.12, size)
    density = density * (1 - spine) + (0.42 + 0.2 * vertebrae) * spine
    sternum = _soft(0.012 - np.abs(x - (cx - d - 0.02) - 0.04 * (y - top)), size) * _soft(y - top, size) * _soft(top + 0.6 * height - y, size)
    density = density + 0.1 * sternum
    ribs = np.exp(-((np.sin((y - top + 0.3 * (x - cx)) * math.pi / (height / 8.5)) / 0.25) ** 2))
    density = density + 0.04 * ribs * lung

    # Heart anteriorly and inferiorly; cardiomegaly widens it backwards over the retrocardiac space.
    scale = spec.ctr / 0.41
    heart_rx, heart_ry = 0.13 * scale, 0.14 * min(scale, 1.3)
    heart_x = lung_cx - lung_rx + 0.02 + heart_rx
    heart = _soft(_ellipse(y, x, base - 0.06, heart_x, heart_ry, heart_rx, angle=0.25), size, 1.2) * (1 - diaphragm)
    density = density * (1 - heart) + 0.5 * heart

    # Effusion: the posterior costophrenic sulcus fills first; both sides together make a higher level.
    amount = sum(spec.effusion.values())
    if amount:
        level = base + 0.02 - 1.3 * amount * height * (0.45 + 0.55 * np.clip(ap, 0, 1) ** 1.5)
        fluid = _soft(y - level, size, 1.5) * _soft(np.minimum(ap - 0.1, 1.05 - ap), size)
        density = np.maximum(density, (0.44 + 0.06 * np.clip((y - level) / 0.08, 0, 1)) * fluid)

    for lesion, strength in ((spec.consolidation, 0.3), (spec.nodule, 0.28)):
        if lesion is None:
            continue
        ly = top + lesion.height * 0.92 * height
        lx = lung_cx - lung_rx + (0.15 + 0.7 * lesion.depth) * 2 * lung_rx
        if lesion is spec.consolidation:
            blob = _soft(_ellipse(y, x, ly, lx, lesion.radius * 1.1, lesion.radius * 1.3), size, 3)
            patchy = np.clip(0.75 + 0.6 * _noise(rng, size, max(8, size // 8)), 0.3, 1)
            density = density + strength * blob * patchy * lung * (1 - 0.6 * _bronchograms(rng, y, x, ly, lx, lesion.radius, size))
        else:
            r = np.sqrt((y - ly) ** 2 + (x - lx) ** 2) / lesion.radius
            density = density + strength * np.sqrt(np.clip(1 - r**2, 0, 1))

    return _finish(density, rng, size)


# -------------------------------------------------------------------------------------------- reports

_CARDIOMEGALY = (
    "The heart is {adverb} enlarged.",
    "{Adjective} cardiomegaly is present.",
    "There is {adjective} cardiomegaly.",
    "{Adjective} enlargement of the cardiac silhouette.",
    "The cardiac silhouette is {adverb} enlarged.",
    "Cardiomegaly is present.",
)
_NORMAL_HEART = (
    "The heart is normal in size.",
    "Heart size is within normal limits.",
    "The cardiac silhouette is normal in size.",
    "Normal heart size.",
    "The cardiomediastinal silhouette is within normal limits.",
    "No cardiomegaly.",
)
_EFFUSION = (
    "There is a {size} {side} pleural effusion.",
    "{Size} {side} pleural effusion.",
    "A {size} {side} pleural effusion is present.",
    "Blunting of the {side} costophrenic angle consistent with a {size} pleural effusion.",
    "{Size} {side} pleural effusion with a meniscus along the lateral chest wall.",
)
_BILATERAL_EFFUSION = (
    "There are bilateral pleural effusions, {sizes}.",
    "Bilateral pleural effusions are present, {sizes}.",
    "Bilateral pleural effusions, {sizes}.",
    "Blunting of both costophrenic angles consistent with bilateral pleural effusions.",
)
_NO_EFFUSION = (
    "No pleural effusion.",
    "There is no pleural effusion.",
    "No pleural effusions are seen.",
    "The costophrenic angles are sharp without pleural effusion.",
)
_NO_EFFUSION_SIDE = (
    "No {side} pleural effusion.",
    "There is no {side} pleural effusion.",
    "The {side} costophrenic angle is sharp.",
)
_PNEUMOTHORAX = (
    "There is a {size} {side} apical pneumothorax.",
    "{Size} {side} pneumothorax.",
    "A {size} {side} pneumothorax is present with a visible pleural line.",
    "{Side} apical pneumothorax, {size} in size.",
)
_NO_PNEUMOTHORAX = (
    "No pneumothorax.",
    "There is no pneumothorax.",
    "No evidence of pneumothorax.",
    "No pneumothorax is seen.",
)
_NODULE = (
    "There is a {cm} cm {kind} in the {where}.",
    "A {cm} cm {kind} is seen in the {where}.",
    "{Kind} in the {where} measuring {cm} cm.",
    "Well circumscribed {cm} cm {kind} in the {where}.",
)
_NO_NODULE = (
    "No suspicious pulmonary nodules.",
    "No focal nodule or mass.",
    "There is no pulmonary nodule or mass.",
)
_CONSOLIDATION = (
    "There is consolidation in the {where}.",
    "Focal consolidation in the {where} with air bronchograms.",
    "Patchy airspace consolidation in the {where}, concerning for pneumonia.",
    "Airspace opacity in the {where} consistent with consolidation.",
)
_NO_CONSOLIDATION = (
    "No focal consolidation.",
    "There is no focal airspace consolidation.",
    "No consolidation is seen.",
)
_CLEAR_LUNGS = ("The lungs are clear.", "Lungs are clear bilaterally.", "The lungs are well expanded and clear.")
_EXTRA = (
    "No acute osseous abnormality.",
    "The osseous structures are intact.",
    "Visualized bony structures are unremarkable.",
    "The trachea is midline.",
)
_LOBES = {
    ("right", "upper"): ("right upper lobe", "right upper lung zone"),
    ("right", "mid"): ("right middle lobe", "right mid lung zone"),
    ("right", "lower"): ("right lower lobe", "right lung base"),
    ("left", "upper"): ("left upper lobe", "left upper lung zone"),
    ("left", "mid"): ("lingula", "left mid lung zone"),
    ("left", "lower"): ("left lower lobe", "left lung base"),
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One of `options`, the earlier ones likelier (weights 1, 1/4, 1/9, ...: the first about two times in
    three): like a radiologist's habits, each statement has a usual phrasing and rarer variants."""
    weights = 1.0 / np.arange(1, len(options) + 1) ** 2
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _reading_order(rng: np.random.Generator, count: int) -> list[int]:
    """The sentences' order: as written (heart, lungs, pleura, bones), each neighbouring pair swapped with
    probability `SENTENCE_SWAP_PROBABILITY` in one pass."""
    order = list(range(count))
    for i in range(count - 1):
        if rng.random() < SENTENCE_SWAP_PROBABILITY:
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def _fill(template: str, **words: str) -> str:
    """Formats lower-case `words` and their capitalised forms ({side} and {Side})."""
    words = {**words, **{key.capitalize(): value.capitalize() for key, value in words.items()}}
    return template.format(**words)


def _effusion_size(amount: float) -> str:
    return "small" if amount < 0.25 else "moderate" if amount < 0.36 else "large"


def write_report(findings: StudySpec | Sequence[str], rng: np.random.Generator) -> str:
    """An R2Gen-style findings text consistent with the labels: one sentence per finding (several
    phrasings each, the usual one likeliest; side, size and location taken from the `StudySpec`), negations
    of absent ones ("No pleural effusion.", "No right pleural effusion." beside a left one), "The lungs are
    clear." only when there is no lung or pleural finding, sometimes a normal bony or tracheal sentence; in
    a radiologist's reading order (heart, lungs, pleura, bones) with neighbours sometimes swapped, so that
    normal reports recur as they do in IU-Xray. Sentence case with periods (cleaned later with
    `clean_report`). A present finding is never negated."""
    spec = _as_spec(findings, rng)
    sentences = []
    if "cardiomegaly" in spec.labels:
        adjective = "mild" if spec.ctr < 0.58 else "moderate" if spec.ctr < 0.63 else "marked"
        sentences.append(_fill(_pick(rng, _CARDIOMEGALY), adjective=adjective, adverb=adjective + "ly"))
    else:
        sentences.append(_pick(rng, _NORMAL_HEART))

    if spec.consolidation is not None:
        where = _pick(rng, _LOBES[(spec.consolidation.side, spec.consolidation.zone)])
        sentences.append(_fill(_pick(rng, _CONSOLIDATION), where=where))
    if spec.nodule is not None:
        lesion = spec.nodule
        cm = max(1, round(lesion.radius * 2 * 35))  # the image is ~35 cm across
        kind = "mass" if cm >= 3 else "nodule"
        where = _pick(rng, _LOBES[(lesion.side, lesion.zone)])
        sentences.append(_fill(_pick(rng, _NODULE), cm=str(cm), kind=kind, where=where))
    if spec.nodule is None and spec.consolidation is None and not spec.effusion and not spec.pneumothorax_side and rng.random() < 0.7:
        sentences.append(_pick(rng, _CLEAR_LUNGS))
    else:
        if spec.consolidation is None and rng.random() < 0.8:
            sentences.append(_pick(rng, _NO_CONSOLIDATION))
        if spec.nodule is None and rng.random() < 0.6:
            sentences.append(_pick(rng, _NO_NODULE))

    sides = sorted(spec.effusion)
    if len(sides) == 2:
        sizes = ", ".join(f"{_effusion_size(spec.effusion[side])} on the {side}" for side in ("right", "left"))
        sentences.append(_fill(_pick(rng, _BILATERAL_EFFUSION), sizes=sizes))
    elif len(sides) == 1:
        side = sides[0]
        sentences.append(_fill(_pick(rng, _EFFUSION), size=_effusion_size(spec.effusion[side]), side=side))
        if rng.random() < 0.5:
            sentences.append(_fill(_pick(rng, _NO_EFFUSION_SIDE), side="right" if side == "left" else "left"))
    else:
        sentences.append(_pick(rng, _NO_EFFUSION))

    if spec.pneumothorax_side:
        size = "small" if spec.pneumothorax_size < 0.3 else "moderate"
        sentences.append(_fill(_pick(rng, _PNEUMOTHORAX), size=size, side=spec.pneumothorax_side))
    else:
        sentences.append(_pick(rng, _NO_PNEUMOTHORAX))

    if rng.random() < 0.5:
        sentences.append(_pick(rng, _EXTRA))
    return " ".join(sentences[i] for i in _reading_order(rng, len(sentences)))


# -------------------------------------------------------------------------------------------- studies


def split_assignment(num_studies: int, seed: int) -> list[str]:
    """Each study's split: 70% train, 10% validation, 20% test by a seeded permutation (validation and
    test get at least one study each once there are three)."""
    num_val = round(SPLIT_FRACTIONS["validation"] * num_studies)
    num_test = round(SPLIT_FRACTIONS["test"] * num_studies)
    if num_studies >= 3:
        num_val, num_test = max(1, num_val), max(1, num_test)
    order = np.random.default_rng([seed, 1]).permutation(num_studies)
    splits = ["train"] * num_studies
    for rank, index in enumerate(order):
        if rank < num_test:
            splits[index] = "test"
        elif rank < num_test + num_val:
            splits[index] = "validation"
    return splits


def generate_study(index: int, seed: int, image_size: int = DEFAULT_SYNTHETIC_IMAGE_SIZE, split: str = "train") -> Study:
    """Study `index` of the set with `seed`: its own random stream (`[seed, 0, index]`), so a study does
    not depend on how many others are generated."""
    rng = np.random.default_rng([seed, 0, index])
    spec = sample_spec(rng)
    images = [draw_frontal(spec, rng, image_size), draw_lateral(spec, rng, image_size)]
    return Study(
        id=f"synthetic_{seed}_{index:06d}",
        report=write_report(spec, rng),
        split=split,
        images=images,
        views=list(VIEWS),
        finding_labels=list(spec.labels),
        source="synthetic",
    )


def generate_studies(num_studies: int, seed: int = 0, image_size: int = DEFAULT_SYNTHETIC_IMAGE_SIZE) -> list[Study]:
    """`num_studies` studies (PA + LATERAL images in memory, report, labels, split), the same for the same
    arguments."""
    if num_studies < 1:
        raise ValueError(f"num_studies must be at least 1, got {num_studies}.")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels for the findings to be drawn, got {image_size}.")
    splits = split_assignment(num_studies, seed)
    return [generate_study(index, seed, image_size, splits[index]) for index in range(num_studies)]


def label_distribution(studies: Sequence[Study]) -> dict[str, dict[str, int]]:
    """Per split and overall: studies, normal studies and each finding's count."""
    result = {}
    for name in ("train", "validation", "test", "all"):
        chosen = [study for study in studies if name == "all" or study.split == name]
        counts = Counter(label for study in chosen for label in study.finding_labels)
        result[name] = {"studies": len(chosen), "normal": sum(not study.finding_labels for study in chosen)}
        result[name].update({finding: counts[finding] for finding in FINDINGS})
    return result


def format_distribution(distribution: dict[str, dict[str, int]]) -> str:
    """The label distribution as a small text table."""
    columns = ["studies", "normal", *FINDINGS]
    width = max(len(column) for column in columns)
    lines = [f"{'label':<{width}} " + " ".join(f"{name:>10}" for name in distribution)]
    for column in columns:
        lines.append(f"{column:<{width}} " + " ".join(f"{distribution[name][column]:>10d}" for name in distribution))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description=(
            "Generate a seeded synthetic chest X-ray set (PA + lateral views with visible findings, "
            "template reports, ground-truth labels) and write it as a prepared dataset: a DatasetDict "
            "(train/validation/test) with annotation.json, skipped.jsonl and prepare_info.json (with the "
            f"label distribution). Findings: {', '.join(FINDINGS)}; {LATERALITY}."
        ),
    )
    # The images are drawn at this size directly (square), so the common option keeps its meaning (the
    # shorter side in pixels) with a smaller default.
    add_common_arguments(
        parser,
        image_size=DEFAULT_SYNTHETIC_IMAGE_SIZE,
        image_size_help=(
            f"Side of the square images in pixels; they are drawn at this size (default "
            f"{DEFAULT_SYNTHETIC_IMAGE_SIZE}; at least 32; the processor then makes the model's input size)."
        ),
    )
    parser.add_argument("--num_studies", type=int, default=200, help="Number of studies to generate (default 200), split 70/10/20 into train/validation/test.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed; the same seed gives the same images, reports and splits (default 0).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.num_studies < 1:
        print(f"--num_studies must be at least 1, got {args.num_studies}.", file=sys.stderr)
        return 2
    if args.image_size < 32:
        print(f"--image_size must be at least 32, got {args.image_size}.", file=sys.stderr)
        return 2
    studies = generate_studies(args.num_studies, args.seed, args.image_size)
    distribution = label_distribution(studies)
    dataset, skipped = write_prepared_dataset(
        studies,
        args.output,
        image_size=args.image_size,
        style="iu_xray",
        num_workers=args.num_workers,
        extra_info={
            "source": "synthetic",
            "num_studies": args.num_studies,
            "seed": args.seed,
            "findings": list(FINDINGS),
            "finding_probabilities": FINDING_PROBABILITIES,
            "label_distribution": distribution,
            "laterality": LATERALITY,
        },
    )
    print(format_distribution(distribution))
    return finish(skipped, dataset, args.output, args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
