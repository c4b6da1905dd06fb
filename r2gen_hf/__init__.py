"""r2gen-hf: radiology report generation (Swin + projector + Gemma 3) on Hugging Face machinery.

Importing the package registers the `"r2gen"` model type with transformers' Auto classes, so that
`AutoConfig`, `AutoModel`, `AutoModelForImageTextToText` and `AutoProcessor` load our checkpoints without
`trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_r2gen import DEFAULT_PROMPT, R2GenConfig
from .modeling_r2gen import (
    infer_image_seq_length,
    R2GenCausalLMOutputWithPast,
    R2GenForConditionalGeneration,
    R2GenModel,
    R2GenModelOutputWithPast,
    R2GenPreTrainedModel,
    default_generation_config,
)
from .loading import GatedModelAccessError
from .processing_r2gen import R2GenProcessor


AutoConfig.register(R2GenConfig.model_type, R2GenConfig, exist_ok=True)
AutoModel.register(R2GenConfig, R2GenModel, exist_ok=True)
AutoModelForImageTextToText.register(R2GenConfig, R2GenForConditionalGeneration, exist_ok=True)
AutoProcessor.register(R2GenConfig, R2GenProcessor, exist_ok=True)

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_PROMPT",
    "GatedModelAccessError",
    "R2GenCausalLMOutputWithPast",
    "R2GenConfig",
    "R2GenForConditionalGeneration",
    "R2GenModel",
    "R2GenModelOutputWithPast",
    "R2GenPreTrainedModel",
    "R2GenProcessor",
    "default_generation_config",
    "infer_image_seq_length",
]
