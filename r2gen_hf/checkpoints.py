"""Building a model from its sources, and loading what `finetune.py` saved (merged or base + adapters).

A fine-tuned model is saved either as a full model (`save_pretrained`, loadable with `from_pretrained`) or,
when LoRA was trained, as a peft adapter. The adapter holds the LoRA weights and the fully trained parts
(projector, and the vision encoder in `deep` mode); the frozen rest is the *base*, recorded in
`r2gen_base.json` by its sources (vision checkpoint, Gemma 3 checkpoint, model options), so that a local
directory or a Hub repository with adapters loads by itself. Everything is read and written as
safetensors; nothing needs `trust_remote_code`.
"""

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
from peft import PeftModel
from transformers import BitsAndBytesConfig, GenerationConfig
from transformers.utils import GENERATION_CONFIG_NAME
from transformers.utils.hub import cached_file

from .loading import explain_gated_access, resolve_dtype, with_unquantized_vision
from .modeling_r2gen import R2GenForConditionalGeneration
from .processing_r2gen import R2GenProcessor


logger = logging.getLogger(__name__)

BASE_RECORD = "r2gen_base.json"
ADAPTER_CONFIG = "adapter_config.json"
# Special sources: the tiny random model of `r2gen_hf.testing` (seeded), and Gemma 3 270M from PyPI.
TINY_MODEL = "r2gen_hf:tiny"
PYPI_GEMMA3_270M = "r2gen_hf:gemma-3-270m"
DEMO_SWIN = "r2gen_hf:swin-demo"  # the offline demo's small Swin, pretrained once on synthetic findings (r2gen_hf.demo)
CONFIG_OPTIONS = ("view_combination", "projector_type", "prompt")
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt"]  # never fetched, never loaded


def resolve_model_source(name: str) -> str:
    """Maps the special names to paths (the PyPI Gemma 3 270M is converted once and cached)."""
    if name == PYPI_GEMMA3_270M:
        from .gemma3_270m import gemma3_270m_path

        return str(gemma3_270m_path())
    if name == DEMO_SWIN:
        from .demo import demo_swin_path

        return str(demo_swin_path())
    return name


def compose_model(
    vision_model: str | None = None,
    lm_model: str | None = None,
    model_name_or_path: str | None = None,
    dtype: torch.dtype | str | None = None,
    quantization_config: Any = None,
    **config_options,
) -> tuple[R2GenForConditionalGeneration, R2GenProcessor]:
    """The model and processor from their sources: a saved R2Gen model (`model_name_or_path`, or
    `r2gen_hf:tiny`), or a vision checkpoint + a Gemma 3 checkpoint with a new projector."""
    dtype = resolve_dtype(dtype)
    if model_name_or_path == TINY_MODEL:
        model, processor = _tiny_model_and_processor(**config_options)
        return model.to(dtype), processor
    if model_name_or_path is not None:
        model = R2GenForConditionalGeneration.from_pretrained(model_name_or_path, dtype=dtype, quantization_config=quantization_config)
        return model, R2GenProcessor.from_pretrained(model_name_or_path)
    if vision_model is None or lm_model is None:
        raise ValueError("Give model_name_or_path, or both vision_model and lm_model.")
    vision, text = resolve_model_source(vision_model), resolve_model_source(lm_model)
    model = R2GenForConditionalGeneration.from_vision_text_pretrained(
        vision, text, dtype=dtype, quantization_config=quantization_config, **config_options
    )
    return model, R2GenProcessor.from_vision_text_pretrained(vision, text, config=model.config)


def _tiny_model_and_processor(**config_options) -> tuple[R2GenForConditionalGeneration, R2GenProcessor]:
    from transformers.integrations import is_deepspeed_zero3_enabled

    from .testing import tiny_config, tiny_model_and_processor, tiny_processor

    if not is_deepspeed_zero3_enabled():
        return tiny_model_and_processor(**config_options)
    # Under ZeRO-3, zero.Init partitions the parts that R2Gen builds with AutoModel.from_config, and the
    # composite's own weight initialisation then fails on their empty shards; `_from_config` builds the
    # whole model under zero.Init and initialises it with the shards gathered.
    config = tiny_config(**config_options)
    torch.manual_seed(0)
    return R2GenForConditionalGeneration._from_config(config), tiny_processor(config)


def quantization_config_for(quantization: str, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """`none` | `8bit` | `4bit` (NF4 with double quantization, computing in `dtype`: QLoRA's settings)."""
    if quantization == "none":
        return None
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be none, 8bit or 4bit; got {quantization!r}.")


def write_base_record(
    output_dir: str | os.PathLike,
    vision_model: str | None,
    lm_model: str | None,
    model_name_or_path: str | None,
    config: Any,
    dtype: torch.dtype | str | None = None,
) -> None:
    """Records how to rebuild the frozen base of an adapter checkpoint, and the dtype it was trained in (so
    that the run's own numerics can be reproduced: `load_trained_model(path, dtype=record["dtype"], merge=False)`)."""
    record = {
        "vision_model": vision_model,
        "lm_model": lm_model,
        "model_name_or_path": model_name_or_path,
        "config_options": {name: getattr(config, name) for name in CONFIG_OPTIONS},
    }
    if dtype is not None:
        record["dtype"] = str(dtype).removeprefix("torch.")
    Path(output_dir, BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def keep_trained_modules_in_float32(model: torch.nn.Module, modules_to_save: Sequence[str] | None) -> None:
    """Casts the modules an adapter checkpoint saves whole (the projector, a deep-trained encoder) to float32
    before the adapter loads into them, as they were trained (`upcast_trainable_parameters`): peft copies
    the base module, so in a bf16 base their saved float32 weights would otherwise be rounded to bf16.
    (peft already keeps LoRA weights in float32.)"""
    for name, module in model.named_modules():
        if name and name.split(".")[-1] in (modules_to_save or ()):
            module.float()


def _optional_file(path_or_repo: str, filename: str, **hub_kwargs) -> str | None:
    """The file's local path (a local directory, or the Hub / its offline cache), None if it is absent."""
    local = Path(path_or_repo)
    if local.is_dir():
        return str(local / filename) if (local / filename).exists() else None
    return cached_file(
        path_or_repo, filename, _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False, **hub_kwargs,
    )


def load_trained_model(
    path_or_repo: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    quantization_config: Any = None,
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    merge: bool = True,
    **hub_kwargs,
) -> tuple[torch.nn.Module, R2GenProcessor]:
    """Loads a fine-tuned R2Gen model and its processor from a directory or a Hub repo id (offline from the
    local Hub cache with `HF_HUB_OFFLINE=1`).

    Args:
        path_or_repo: what `finetune.py` saved: a full model, or adapters + `r2gen_base.json`.
        dtype: bf16 on GPUs that support it, fp32 elsewhere by default.
        quantization_config: bitsandbytes 4-bit / 8-bit for the language model's linear layers.
        device_map / offload_folder: e.g. `"auto"` and a folder, to spread a model over a small GPU, the
            CPU and the disk.
        merge: fold LoRA weights into the base (faster generation); ignored for quantized models.
    """
    path_or_repo = str(path_or_repo)
    if not Path(path_or_repo).is_dir():
        # A Hub repo (or its offline cache): fetch the snapshot once and load it as a folder. Loading piece by
        # piece fails offline for adapter repos, whose tokenizer looks for a config.json they do not have.
        with explain_gated_access(path_or_repo):
            try:
                path_or_repo = snapshot_download(path_or_repo, ignore_patterns=PICKLE_PATTERNS, **hub_kwargs)
            except LocalEntryNotFoundError as error:
                raise OSError(
                    f"'{path_or_repo}' is not a local directory and is not in the local Hub cache, and the Hub cannot "
                    "be reached (HF_HUB_OFFLINE=1 or no network). Download it once with `hf download "
                    f"{path_or_repo}` on a connected machine, or pass the path of a local copy."
                ) from error
            except RepositoryNotFoundError as error:
                if isinstance(error, GatedRepoError):
                    raise
                raise OSError(
                    f"'{path_or_repo}' is neither a local directory nor a Hub repository you can see. Check the "
                    "spelling; for a private repository, log in with `hf auth login` or set HF_TOKEN."
                ) from error
        hub_kwargs = {}
    dtype = resolve_dtype(dtype)
    if quantization_config is not None:
        quantization_config = with_unquantized_vision(quantization_config)
    placement = {key: value for key, value in (("device_map", device_map), ("offload_folder", offload_folder)) if value is not None}
    with explain_gated_access(path_or_repo):
        adapter_config = _optional_file(path_or_repo, ADAPTER_CONFIG, **hub_kwargs)
        if adapter_config is None:
            model = R2GenForConditionalGeneration.from_pretrained(
                path_or_repo, dtype=dtype, quantization_config=quantization_config, **placement, **hub_kwargs
            )
            return model.eval(), R2GenProcessor.from_pretrained(path_or_repo, **hub_kwargs)
        base_record = _optional_file(path_or_repo, BASE_RECORD, **hub_kwargs)
        if base_record is None:
            raise ValueError(
                f"{path_or_repo} holds peft adapters but no {BASE_RECORD}, so its base model is unknown. Save with "
                "finetune.py (which writes it), or load the base yourself and use PeftModel.from_pretrained."
            )
        record = json.loads(Path(base_record).read_text())
        base, _ = compose_model(
            vision_model=record.get("vision_model"), lm_model=record.get("lm_model"),
            model_name_or_path=record.get("model_name_or_path"), dtype=dtype,
            quantization_config=quantization_config, **record.get("config_options", {}),
        )
        keep_trained_modules_in_float32(base, json.loads(Path(adapter_config).read_text()).get("modules_to_save"))
        model = PeftModel.from_pretrained(base, path_or_repo, **hub_kwargs)
        processor = R2GenProcessor.from_pretrained(path_or_repo, **hub_kwargs)
        if _optional_file(path_or_repo, GENERATION_CONFIG_NAME, **hub_kwargs) is not None:
            # The checkpoint's generation settings, not the base's defaults.
            base.generation_config = GenerationConfig.from_pretrained(path_or_repo, **hub_kwargs)
    if merge and quantization_config is None:
        model = model.merge_and_unload()
    return model.eval(), processor


__all__ = [
    "BASE_RECORD",
    "PYPI_GEMMA3_270M",
    "TINY_MODEL",
    "compose_model",
    "load_trained_model",
    "quantization_config_for",
    "resolve_model_source",
    "write_base_record",
]
