"""R2GenProcessor: chest X-ray studies and reports -> model inputs; generated ids -> report text."""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.utils import logging

from .configuration_r2gen import DEFAULT_PROMPT, R2GenConfig
from .loading import explain_gated_access


logger = logging.get_logger(__name__)

IMAGE_TOKEN = "<image_soft_token>"
BOI_TOKEN = "<start_of_image>"
EOI_TOKEN = "<end_of_image>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

ImageLike = Image.Image | np.ndarray
Study = ImageLike | Sequence[ImageLike]


def _as_rgb(image: ImageLike, where: str) -> Image.Image:
    """X-rays are usually single-channel; vision encoders expect three channels."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"{where}: expected a PIL image or a numpy array, got {type(image).__name__}.")
    return image if image.mode == "RGB" else image.convert("RGB")


class R2GenProcessor(ProcessorMixin):
    r"""
    Turns chest X-ray studies (1..k views each) and optional reports into [`R2GenForConditionalGeneration`]
    inputs, using Gemma 3's chat format with the image block of Gemma 3's pre-training:

    `<bos><start_of_turn>user\n<start_of_image>{N x <image_soft_token>}<end_of_image>{prompt}<end_of_turn>\n<start_of_turn>model\n{report}<end_of_turn>`

    The loss falls on `{report}<end_of_turn>` only.

    Args:
        image_processor: Resizes and normalises each view (e.g. the Swin checkpoint's `ViTImageProcessor`).
        tokenizer: A Gemma 3 tokenizer. `<image_soft_token>` is added when missing (text-only Gemma 3
            tokenizers lack it); the model never looks it up in its embedding table.
        image_seq_length (`int`, defaults to 49): visual tokens per view; must equal the model config's.
        view_combination (`str`, defaults to `"mean"`): as in the model config: `"mean"` writes one block of
            placeholders per study, `"concat"` one per view.
        prompt (`str`): the instruction after the image block (R2GenGPT's by default).
        max_report_tokens (`int`, *optional*): truncate `report + <end_of_turn>` to this many tokens for
            training (as R2GenGPT does; a truncated report loses its end marker). `None` keeps everything.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        image_seq_length: int = 49,
        view_combination: str = "mean",
        prompt: str = DEFAULT_PROMPT,
        max_report_tokens: int | None = None,
        chat_template: str | None = None,
        **kwargs,
    ):
        if view_combination not in ("mean", "concat"):
            raise ValueError(f"view_combination must be 'mean' or 'concat', got {view_combination!r}.")
        self.image_seq_length = image_seq_length
        self.view_combination = view_combination
        self.prompt = prompt
        self.max_report_tokens = max_report_tokens
        if tokenizer is not None and tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self._prompt_ids_cache: dict[int, list[int]] = {}

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str | os.PathLike,
        text_model_name_or_path: str | os.PathLike,
        config: R2GenConfig | None = None,
        **kwargs,
    ) -> "R2GenProcessor":
        """The processor for a model built by `R2GenForConditionalGeneration.from_vision_text_pretrained`:
        the vision checkpoint's image processor, the Gemma 3 tokenizer (a `.gguf` path works too), and the
        model config's `image_seq_length`, `view_combination` and `prompt`. `kwargs` go to `__init__`
        (e.g. `max_report_tokens`)."""
        image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path)
        text_path = Path(text_model_name_or_path)
        with explain_gated_access(text_model_name_or_path):
            if text_path.suffix == ".gguf":
                tokenizer = AutoTokenizer.from_pretrained(str(text_path.parent), gguf_file=text_path.name)
            else:
                tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path)
        if config is not None:
            for name in ("image_seq_length", "view_combination", "prompt"):
                kwargs.setdefault(name, getattr(config, name))
        return cls(image_processor=image_processor, tokenizer=tokenizer, **kwargs)

    # -- token ids -------------------------------------------------------------------------------

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {token!r} token; R2GenProcessor needs a Gemma 3 tokenizer.")
        return token_id

    @property
    def image_token_id(self) -> int:
        return self._token_id(IMAGE_TOKEN)

    @property
    def end_of_turn_token_id(self) -> int:
        return self._token_id(END_OF_TURN)

    def num_placeholders(self, num_views: int) -> int:
        """`<image_soft_token>` count for a study with `num_views` views."""
        blocks = num_views if self.view_combination == "concat" else 1
        return blocks * self.image_seq_length

    def prompt_text(self, num_views: int) -> str:
        """The prompt (without `<bos>`) up to and including the model turn's opening."""
        image_block = BOI_TOKEN + IMAGE_TOKEN * self.num_placeholders(num_views) + EOI_TOKEN
        return f"{START_OF_TURN}user\n{image_block}{self.prompt}{END_OF_TURN}\n{START_OF_TURN}model\n"

    def prompt_ids(self, num_views: int) -> list[int]:
        """`<bos>` + the prompt's ids. `<bos>` is added explicitly: Gemma degrades badly without it."""
        if num_views not in self._prompt_ids_cache:
            ids = self.tokenizer(self.prompt_text(num_views), add_special_tokens=False)["input_ids"]
            self._prompt_ids_cache[num_views] = [self.tokenizer.bos_token_id, *ids]
        return self._prompt_ids_cache[num_views]

    def report_ids(self, report: str, max_report_tokens: int | None = None) -> list[int]:
        """The report's ids followed by `<end_of_turn>`, truncated to `max_report_tokens` if given."""
        ids = [*self.tokenizer(report, add_special_tokens=False)["input_ids"], self.end_of_turn_token_id]
        return ids[:max_report_tokens] if max_report_tokens is not None else ids

    # -- images ----------------------------------------------------------------------------------

    def _normalize_studies(self, images: Sequence[Study] | Study) -> list[list[Image.Image]]:
        if isinstance(images, (Image.Image, np.ndarray)):
            images = [images]
        studies = []
        for index, study in enumerate(images):
            views = [study] if isinstance(study, (Image.Image, np.ndarray)) else list(study)
            if not views:
                raise ValueError(f"Study {index} has no images; every study needs at least one view.")
            studies.append([_as_rgb(view, f"study {index}, view {v}") for v, view in enumerate(views)])
        return studies

    def _pixel_values(self, studies: list[list[Image.Image]], **image_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        flat = [view for study in studies for view in study]
        views = self.image_processor(flat, return_tensors="pt", **image_kwargs)["pixel_values"]  # (N, C, H, W)
        max_views = max(len(study) for study in studies)
        pixel_values = views.new_zeros(len(studies), max_views, *views.shape[1:])  # (B, V, C, H, W)
        view_mask = torch.zeros(len(studies), max_views, dtype=torch.bool)  # (B, V)
        start = 0
        for index, study in enumerate(studies):
            pixel_values[index, : len(study)] = views[start : start + len(study)]
            view_mask[index, : len(study)] = True
            start += len(study)
        return pixel_values, view_mask

    # -- main entry ------------------------------------------------------------------------------

    def __call__(
        self,
        images: Sequence[Study] | Study | None = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        max_report_tokens: int | None = None,
        padding_side: str | None = None,
        **image_kwargs,
    ) -> BatchFeature:
        """
        Args:
            images: a list of studies, each a list of 1..k views (PIL images or arrays; grayscale is fine).
            text: the reports, one per study (training and scoring). Without them, the prompt alone is
                returned, for generation.
            max_report_tokens: overrides the processor's `max_report_tokens` for this call.
            padding_side: `"left"` or `"right"`. Defaults to left for prompts (generation appends on the
                right) and right when reports are given.

        Returns:
            `BatchFeature` with `pixel_values` `(B, max_views, 3, H, W)`, `view_mask` `(B, max_views)`,
            `input_ids` and `attention_mask` `(B, T)`, and, with reports, `labels` `(B, T)` that are -100
            everywhere except on the report and its closing `<end_of_turn>`.
        """
        if images is None:
            raise ValueError("R2GenProcessor needs `images`: a list of studies, each a list of views.")
        studies = self._normalize_studies(images)
        if isinstance(text, str):
            text = [text]
        if text is not None and len(text) != len(studies):
            raise ValueError(f"Got {len(studies)} studies but {len(text)} reports; pass one report per study.")
        if return_tensors not in ("pt", None):
            raise ValueError(f"R2GenProcessor returns PyTorch tensors only; got return_tensors={return_tensors!r}.")

        pixel_values, view_mask = self._pixel_values(studies, **image_kwargs)
        max_report_tokens = max_report_tokens if max_report_tokens is not None else self.max_report_tokens
        sequences, label_sequences = [], []
        for index, study in enumerate(studies):
            prompt = self.prompt_ids(len(study))
            if text is None:
                sequences.append(prompt)
                continue
            if not isinstance(text[index], str) or not text[index].strip():
                raise ValueError(f"Report {index} is empty; every training study needs a non-empty report.")
            report = self.report_ids(text[index], max_report_tokens)
            sequences.append(prompt + report)
            label_sequences.append([-100] * len(prompt) + report)

        padding_side = padding_side or ("left" if text is None else "right")
        data = {"pixel_values": pixel_values, "view_mask": view_mask}
        data.update(self.pad(sequences, label_sequences or None, padding_side))
        return BatchFeature(data=data)

    def pad(
        self, sequences: list[list[int]], label_sequences: list[list[int]] | None = None, padding_side: str = "right"
    ) -> dict[str, torch.Tensor]:
        """Pads id lists to one length with `<pad>`; labels are padded with -100."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        length = max(len(ids) for ids in sequences)
        pad_id = self.tokenizer.pad_token_id

        def padded(ids: list[int], value: int) -> list[int]:
            filler = [value] * (length - len(ids))
            return filler + ids if padding_side == "left" else ids + filler

        out = {
            "input_ids": torch.tensor([padded(ids, pad_id) for ids in sequences], dtype=torch.long),
            "attention_mask": torch.tensor([padded([1] * len(ids), 0) for ids in sequences], dtype=torch.long),
        }
        if label_sequences is not None:
            out["labels"] = torch.tensor([padded(ids, -100) for ids in label_sequences], dtype=torch.long)
        return out

    # -- decoding --------------------------------------------------------------------------------

    def report_token_ids(self, sequence: Sequence[int] | torch.Tensor) -> list[int]:
        """The report part of a generated sequence: after the last `<start_of_turn>model\\n` if the prompt is
        included, up to (not including) the first `<end_of_turn>` or `<eos>`."""
        ids = sequence.tolist() if isinstance(sequence, torch.Tensor) else list(sequence)
        start_of_turn = self._token_id(START_OF_TURN)
        if start_of_turn in ids:
            start = len(ids) - ids[::-1].index(start_of_turn)
            role = self.tokenizer("model\n", add_special_tokens=False)["input_ids"]
            if ids[start : start + len(role)] == role:
                start += len(role)
            ids = ids[start:]
        stops = {self.end_of_turn_token_id, self.tokenizer.eos_token_id}
        for position, token in enumerate(ids):
            if token in stops:
                return ids[:position]
        return ids

    def batch_decode(self, sequences: Sequence[Sequence[int]] | torch.Tensor, **kwargs) -> list[str]:
        """Clean report text for each sequence (prompt included or not): no special tokens and nothing after
        `<end_of_turn>`. Words such as "model" or "user" inside a report are kept."""
        kwargs.setdefault("skip_special_tokens", True)
        reports = [self.report_token_ids(sequence) for sequence in sequences]
        return [text.strip() for text in self.tokenizer.batch_decode(reports, **kwargs)]

    def decode(self, sequence: Sequence[int] | torch.Tensor, **kwargs) -> str:
        return self.batch_decode([sequence], **kwargs)[0]

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "view_mask", "input_ids", "attention_mask"]


__all__ = ["R2GenProcessor"]
