"""R2Gen model configuration: a vision encoder, a projector and a Gemma 3 decoder."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import logging


logger = logging.get_logger(__name__)

DEFAULT_PROMPT = "Generate a comprehensive and detailed diagnosis report for this chest xray image."

# Swin-B/224 (`microsoft/swin-base-patch4-window7-224`), R2GenGPT's encoder: 7x7 = 49 tokens of width 1024.
SWIN_BASE_224 = {
    "image_size": 224,
    "patch_size": 4,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
    "window_size": 7,
}

# The text part of `google/gemma-3-4b-it`.
GEMMA3_4B_TEXT = {
    "vocab_size": 262_208,
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "num_hidden_layers": 34,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 1024,
    "max_position_embeddings": 131_072,
    "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    },
}


def swin_tokens_per_image(vision_config: PreTrainedConfig) -> int:
    """Number of output tokens of a transformers `SwinModel`: the patch grid halved at each of the
    `len(depths) - 1` patch-merging stages, squared (7 x 7 = 49 for Swin-B/224)."""
    image_size = vision_config.image_size
    patch_size = vision_config.patch_size
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    patch_size = patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size
    side = image_size // patch_size
    for _ in range(len(vision_config.depths) - 1):
        side = (side + 1) // 2
    return side * side


@strict
class R2GenConfig(PreTrainedConfig):
    r"""
    Configuration of [`R2GenForConditionalGeneration`]: an image encoder (`vision_config`, a transformers
    `swin` config by default or any `timm_wrapper` backbone), a projector that maps visual tokens to the
    language model's width, and a Gemma 3 decoder (`text_config`, `gemma3_text`).

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Vision encoder config. Defaults to Swin-B/224 geometry (49 tokens of width 1024).
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Gemma 3 text config. Defaults to the geometry of the text part of `google/gemma-3-4b-it`.
        projector_type (`str`, *optional*, defaults to `"linear"`):
            `"linear"`: R2GenGPT's `Linear(vision -> text) + LayerNorm`; `"mlp"`: `Linear -> act -> Linear`
            followed by the same LayerNorm.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the `"mlp"` projector.
        view_combination (`str`, *optional*, defaults to `"mean"`):
            How the views of a study (IU-Xray: frontal + lateral) are combined. `"mean"` averages the
            per-view tokens (R2GenGPT; one block of `image_seq_length` tokens per study); `"concat"`
            keeps every view's tokens (`image_seq_length` placeholders per view).
        image_seq_length (`int`, *optional*):
            Visual tokens per view. Derived from a `swin` vision config when not given; required for
            other backbones (e.g. 49 for a 224-pixel timm Swin or ConvNeXt, whose stride is 32).
        image_token_id (`int`, *optional*, defaults to 262144):
            Id of `<image_soft_token>`, the placeholder replaced by visual tokens. It may lie outside the
            language model's vocabulary (text-only Gemma 3 tokenizers lack it): placeholders are never
            looked up in the embedding table.
        boi_token_id (`int`, *optional*, defaults to 255999):
            Id of `<start_of_image>`, which opens the image block in the prompt.
        eoi_token_id (`int`, *optional*, defaults to 256000):
            Id of `<end_of_image>`, which closes it.
        end_of_turn_token_id (`int`, *optional*, defaults to 106):
            Id of `<end_of_turn>`, which closes the report; generation stops on it (and on `<eos>`).
        prompt (`str`, *optional*):
            The instruction after the image block; R2GenGPT's prompt by default.

    Example:

    ```python
    >>> from r2gen_hf import R2GenConfig, R2GenForConditionalGeneration
    >>> config = R2GenConfig(view_combination="concat")
    >>> config.image_seq_length
    49
    ```"""

    model_type = "r2gen"
    attribute_map = {"image_token_index": "image_token_id"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="swin", init_kwargs=SWIN_BASE_224),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gemma3_text", init_kwargs=GEMMA3_4B_TEXT),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_type: Literal["linear", "mlp"] = "linear"
    projector_hidden_act: str = "gelu"
    view_combination: Literal["mean", "concat"] = "mean"
    image_seq_length: int | None = None
    image_token_id: int = 262_144
    boi_token_id: int = 255_999
    eoi_token_id: int = 256_000
    end_of_turn_token_id: int = 106
    prompt: str = DEFAULT_PROMPT
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Gemma 3 ties its LM head to the input embeddings; follow whatever the text config says.
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", True))
        if self.image_seq_length is None:
            if self.vision_config.model_type != "swin":
                raise ValueError(
                    f"Cannot derive `image_seq_length` for a `{self.vision_config.model_type}` vision config. "
                    "Pass `image_seq_length=<visual tokens per view>` (e.g. 49 for a 224-pixel timm Swin or "
                    "ConvNeXt), or use `r2gen_hf.infer_image_seq_length(vision_model, image_size)`."
                )
            self.image_seq_length = swin_tokens_per_image(self.vision_config)

    def validate_architecture(self):
        """Part of `@strict` validation: checks the values that the model cannot run without."""
        if self.image_seq_length is not None and self.image_seq_length < 1:
            raise ValueError(f"`image_seq_length` must be positive, got {self.image_seq_length}.")
        if self.text_config is not None and self.text_config.model_type != "gemma3_text":
            logger.warning(
                "R2Gen is built and tested with a `gemma3_text` decoder; got `%s`.", self.text_config.model_type
            )


__all__ = ["R2GenConfig", "DEFAULT_PROMPT"]
