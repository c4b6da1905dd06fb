"""Loading pretrained vision encoders and Gemma 3 language models into an R2Gen model.

The language model can come from a Gemma 3 *multimodal* checkpoint (gemma-3-4b-it, medgemma-4b-it: its
text weights live under `language_model.model.*`, SigLIP is dropped), a text-only one (gemma-3-1b-it,
gemma-3-270m) or a GGUF file. Whatever the source, every language-model weight must be found: DESIGN.md
§3 records how `Gemma3ForCausalLM.from_pretrained(<multimodal checkpoint>)` silently leaves all weights
random, so we check the loading report and fail loudly instead.
"""

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel
from transformers.utils import logging


logger = logging.get_logger(__name__)

# Hub files of Gemma 3 multimodal checkpoints store text weights as `language_model.model.*` (older
# layout) or `model.language_model.*` (transformers 5 `save_pretrained`); map both onto `Gemma3ForCausalLM`.
MULTIMODAL_TEXT_KEY_MAPPING = {
    r"^language_model\.model\.": "model.",
    r"^model\.language_model\.": "model.",
    r"^language_model\.lm_head\.": "lm_head.",
}

# Parts of an R2Gen model that bitsandbytes must leave in full precision: only the LM's linear layers
# are quantized (the vision tower and projector are small and trained in alignment modes). transformers 5
# matches skip entries against full module names as a prefix (or a suffix), not as a substring, so name
# the paths in `R2GenForConditionalGeneration` (`model.vision_tower.*`) and in `R2GenModel` (`vision_tower.*`).
NOT_QUANTIZED_MODULES = [
    "model.vision_tower",
    "model.multi_modal_projector",
    "vision_tower",
    "multi_modal_projector",
    "lm_head",
]

# What transformers sets on a model it loads quantized, and Trainer, peft and `save_pretrained` read.
QUANTIZATION_MARKERS = ("hf_quantizer", "is_quantized", "quantization_method", "is_loaded_in_4bit", "is_loaded_in_8bit")

HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


class GatedModelAccessError(OSError):
    """Raised when a gated Hub repository (every Gemma checkpoint) refuses access."""


def _access_denied_status(error: BaseException | None) -> int | None:
    """The HTTP status (401 or 403) of the Hub refusal behind `error` (transformers wraps it in an `OSError`
    whose `__cause__` is huggingface_hub's `GatedRepoError` / `RepositoryNotFoundError`), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, GatedRepoError):
            return status if status in (401, 403) else 403
        if isinstance(error, HfHubHTTPError) and status in (401, 403):
            return status
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def explain_gated_access(repo_id: str | os.PathLike) -> Iterator[None]:
    """Turns the Hub's 401/403 for a gated repo into one message that says how to get access."""
    try:
        yield
    except OSError as error:
        status = _access_denied_status(error)
        if status is None:
            raise
        # The Hub answers 401 to anonymous requests for gated, private *and* non-existent repos alike.
        reason = (
            "you are not authenticated; it is a gated model (or a private one, or the repo id is misspelled)"
            if status == 401
            else "it is a gated model and this account has not been granted access"
        )
        raise GatedModelAccessError(
            f"Access to '{repo_id}' was refused (HTTP {status}): {reason}. To use it:\n"
            f"  1. open https://huggingface.co/{repo_id}, sign in and accept the licence (Gemma: the Gemma Terms "
            "of Use);\n"
            "  2. authenticate on this machine with `hf auth login`, or set the HF_TOKEN environment variable "
            "to a token with read access."
        ) from error


# Short spellings accepted besides torch's own dtype names ("bfloat16", "float32", ...).
DTYPE_ALIASES = {"bf16": torch.bfloat16, "fp16": torch.float16, "half": torch.float16, "fp32": torch.float32}


def resolve_dtype(dtype: torch.dtype | str | None = None, device: torch.device | str | None = None) -> torch.dtype:
    """bf16 on GPUs that support it, fp32 elsewhere (Gemma 3 is trained in bf16; fp16 overflows).

    Args:
        dtype: a `torch.dtype`, its name (`"bfloat16"`, also `"bf16"`, `"fp16"`, `"fp32"`), or None / `"auto"`
            for the default of `device`.
        device: where the model will run; defaults to CUDA when available.
    Raises:
        ValueError: if `dtype` names no floating-point torch dtype.
    """
    requested = dtype
    if dtype is None or dtype == "auto":
        device = torch.device(device) if device is not None else None
        on_cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
        dtype = torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    elif isinstance(dtype, str):
        dtype = DTYPE_ALIASES.get(dtype, getattr(torch, dtype, None))
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"Got dtype={requested!r}, which is not a floating-point torch dtype. Pass torch.bfloat16 / "
            "torch.float32 (or their names, e.g. 'bfloat16', 'bf16', 'float32'), or 'auto' / None for bf16 on "
            "GPUs that support it and fp32 elsewhere."
        )
    warn_if_float16(dtype)
    return dtype


def warn_if_float16(dtype: torch.dtype | str | None) -> None:
    """Gemma 3 is trained in bf16; its activations overflow in fp16."""
    if dtype in (torch.float16, "float16", "fp16", "half"):
        warnings.warn(
            "float16 was requested, but Gemma 3 activations overflow in fp16 (NaN losses, empty reports). Use "
            "bfloat16 on GPUs that support it (Ampere and newer) or float32.",
            UserWarning,
            stacklevel=3,
        )


def with_unquantized_vision(quantization_config: Any) -> Any:
    """Makes a bitsandbytes config skip the vision tower, projector and LM head unless told otherwise."""
    if isinstance(quantization_config, dict):
        quantization_config = BitsAndBytesConfig(**quantization_config)
    quantization_config = copy.deepcopy(quantization_config)  # never change the caller's object
    if isinstance(quantization_config, BitsAndBytesConfig) and not quantization_config.llm_int8_skip_modules:
        quantization_config.llm_int8_skip_modules = list(NOT_QUANTIZED_MODULES)
    return quantization_config


def copy_quantization_markers(source: nn.Module, target: nn.Module) -> None:
    """Marks `target` as quantized the way transformers marked `source` (nothing if `source` is not)."""
    if getattr(source, "hf_quantizer", None) is None:
        return
    for attr in QUANTIZATION_MARKERS:
        if hasattr(source, attr):
            setattr(target, attr, getattr(source, attr))


def saved_quantization_config(model: nn.Module, quantization_config: Any) -> Any:
    """The quantization config to store with an R2Gen model built around a quantized language model: its
    skip list names, as R2Gen paths, every module left in full precision (vision tower, projector, LM head
    and any plain `nn.Linear` of the LM), so that `from_pretrained` of the saved model quantizes the same
    layers. The language model's own config is not changed."""
    quantization_config = copy.deepcopy(quantization_config)
    kept = [name for name, module in model.named_modules() if "language_model." in name and type(module) is nn.Linear]
    quantization_config.llm_int8_skip_modules = list(NOT_QUANTIZED_MODULES) + kept
    return quantization_config


def _check_loading_info(source: str, info: dict[str, Any], what: str, ignore: tuple[str, ...] = ()) -> None:
    missing = sorted(key for key in info.get("missing_keys", []) if not key.endswith(ignore))
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(
            f"Loading the {what} from '{source}' would leave {len(missing)} weights randomly initialised "
            f"({shown}) and {len(mismatched)} with mismatched shapes. Refusing to train on a silently random "
            f"{what}. Check that '{source}' is the checkpoint you meant (for Gemma 3 use a gemma3 / gemma3_text "
            "checkpoint or a .gguf file) and that its files are complete."
        )


def _split_gguf(source: str | os.PathLike, gguf_file: str | None) -> tuple[str, str | None]:
    path = Path(source)
    if gguf_file is None and path.suffix == ".gguf":
        return str(path.parent), path.name
    return str(source), gguf_file


def load_language_model(
    source: str | os.PathLike, gguf_file: str | None = None, **kwargs
) -> tuple[PreTrainedModel, nn.Linear]:
    """Loads a Gemma 3 decoder (without head) and its LM head from any Gemma 3 source.

    Args:
        source: a Hub repo id or directory (multimodal or text-only checkpoint), or a `.gguf` file path.
        gguf_file: the GGUF file name inside `source`, as transformers' `gguf_file=`.
        kwargs: passed to `from_pretrained` (`dtype`, `quantization_config`, `device_map`, `token`, ...).
    Returns:
        `(language_model, lm_head)`: a `Gemma3TextModel` and the head (tied to its embeddings when the
        config ties them).
    Raises:
        ValueError: if any language-model weight would be left randomly initialised.
        GatedModelAccessError: if the Hub refuses access to a gated repo.
    """
    source, gguf_file = _split_gguf(source, gguf_file)
    hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
    with explain_gated_access(source):
        if gguf_file is not None:
            causal_lm, info = AutoModelForCausalLM.from_pretrained(
                source, gguf_file=gguf_file, output_loading_info=True, **kwargs
            )
            # GGUF weights are dequantized to float on load; what remains is an ordinary model.
            causal_lm.hf_quantizer = None
            causal_lm.is_quantized = False
            if hasattr(causal_lm.config, "quantization_config"):
                del causal_lm.config.quantization_config
        else:
            config = AutoConfig.from_pretrained(source, **hub_kwargs)
            text_config = config.get_text_config(decoder=True)
            key_mapping = MULTIMODAL_TEXT_KEY_MAPPING if text_config is not config else None
            if text_config is not config:
                logger.info(
                    "'%s' is a multimodal %s checkpoint: loading its language model only.", source, config.model_type
                )
            causal_lm, info = AutoModelForCausalLM.from_pretrained(
                source, config=text_config, key_mapping=key_mapping, output_loading_info=True, **kwargs
            )
    tied = causal_lm.config.tie_word_embeddings
    _check_loading_info(str(source), info, "language model", ignore=("lm_head.weight",) if tied else ())
    # transformers marks the Gemma3ForCausalLM as quantized; the decoder we keep must say so too.
    copy_quantization_markers(causal_lm, causal_lm.model)
    return causal_lm.model, causal_lm.lm_head


def load_vision_model(source: str | os.PathLike, **kwargs) -> PreTrainedModel:
    """Loads a vision encoder with `AutoModel` (transformers Swin, or `timm/...` through TimmWrapper)."""
    with explain_gated_access(source):
        model, info = AutoModel.from_pretrained(source, output_loading_info=True, **kwargs)
    _check_loading_info(str(source), info, "vision encoder")
    return model


def split_prefixed_kwargs(kwargs: dict[str, Any], prefixes: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """`{"vision_dtype": x, "text_token": y, "dtype": z}` -> per-prefix dicts (prefix stripped) and the
    shared rest, as `VisionEncoderDecoderModel.from_encoder_decoder_pretrained` does."""
    prefixed = tuple(
        {key[len(prefix) :]: value for key, value in kwargs.items() if key.startswith(prefix)} for prefix in prefixes
    )
    shared = {key: value for key, value in kwargs.items() if not key.startswith(prefixes)}
    return (*prefixed, shared)


__all__ = [
    "GatedModelAccessError",
    "MULTIMODAL_TEXT_KEY_MAPPING",
    "NOT_QUANTIZED_MODULES",
    "QUANTIZATION_MARKERS",
    "copy_quantization_markers",
    "explain_gated_access",
    "load_language_model",
    "load_vision_model",
    "resolve_dtype",
    "saved_quantization_config",
    "warn_if_float16",
    "split_prefixed_kwargs",
    "with_unquantized_vision",
]
