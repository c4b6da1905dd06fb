"""Model inputs of a fixed shape for the benchmarks: the R2GenProcessor's layout, random token and pixel values.

Throughput depends on shapes, not values, so every sequence has the full length (prompt + a report of
`report_tokens`, no padding) and the token counts are exact. The prompt is the processor's own
(`<bos>`, chat turn, image block, instruction) when a processor is at hand; without one (the `gemma3-4b`
profile on a machine without the Gemma 3 tokenizer) it has the same length: `PROMPT_TEXT_TOKENS` text
tokens around the image placeholders (counted from R2GenProcessor with the Gemma 3 tokenizer).
"""

import torch

from r2gen_hf import R2GenConfig


PROMPT_TEXT_TOKENS = 24  # len(processor.prompt_ids(views)) minus the placeholders, for the default prompt
FIRST_TEXT_ID = 1_000  # random ids are drawn above the special tokens
LAST_TEXT_ID = 200_000


def num_placeholders(config: R2GenConfig, views: int) -> int:
    return config.image_seq_length * (1 if config.view_combination == "mean" else views)


def prompt_ids(config: R2GenConfig, views: int, processor=None, generator: torch.Generator | None = None) -> list[int]:
    """The processor's prompt ids, or a stand-in of the same length and layout."""
    if processor is not None:
        return list(processor.prompt_ids(views))
    text = torch.randint(FIRST_TEXT_ID, LAST_TEXT_ID, (PROMPT_TEXT_TOKENS - 3,), generator=generator).tolist()
    bos = config.text_config.bos_token_id if config.text_config.bos_token_id is not None else 2
    image_block = [config.boi_token_id, *[config.image_token_id] * num_placeholders(config, views), config.eoi_token_id]
    return [bos, *image_block, *text]


def image_size(config: R2GenConfig) -> int:
    size = config.vision_config.image_size
    return size[0] if isinstance(size, (list, tuple)) else size


def make_batch(
    config: R2GenConfig,
    batch_size: int,
    views: int,
    report_tokens: int | None,
    processor=None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask`, `pixel_values` `(B, views, 3, S, S)` in `dtype`, `view_mask` and, with
    `report_tokens`, `labels` (-100 on the prompt, the report ids on the report) — a training batch;
    without, the prompt alone — a generation batch (pixels in the model's dtype for inference)."""
    generator = torch.Generator().manual_seed(seed)
    prompt = prompt_ids(config, views, processor, generator)
    rows, labels = [], []
    for _ in range(batch_size):
        report = torch.randint(FIRST_TEXT_ID, LAST_TEXT_ID, (report_tokens or 0,), generator=generator).tolist()
        rows.append(prompt + report)
        labels.append([-100] * len(prompt) + report)
    size = image_size(config)
    batch = {
        "input_ids": torch.tensor(rows, dtype=torch.long),  # (B, T)
        "attention_mask": torch.ones(batch_size, len(rows[0]), dtype=torch.long),  # (B, T)
        "pixel_values": torch.randn(batch_size, views, 3, size, size, generator=generator).to(dtype),  # (B, V, 3, S, S)
        "view_mask": torch.ones(batch_size, views, dtype=torch.bool),  # (B, V)
    }
    if report_tokens:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)  # (B, T)
    return {key: value.to(device) for key, value in batch.items()}
