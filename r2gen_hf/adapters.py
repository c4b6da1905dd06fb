"""What trains: R2GenGPT's alignment modes for the vision side, and optional LoRA on the language model.

- `shallow`: the projector only (vision encoder and LM frozen);
- `delta`: + LoRA (r16, alpha16, dropout 0.1) on the Swin attention's query/value projections;
- `deep`: + the whole vision encoder;
- independently, `llm_lora`: LoRA (seed guide §4.2: r16, alpha16, dropout 0.1) on the LM's
  q, k, v, o, gate, up and down projections.

With any LoRA the model is wrapped by peft: LoRA weights plus the fully trained parts (projector, and the
vision encoder in `deep` mode, as `modules_to_save`) then save and load as one peft adapter, and
`merge_and_unload()` gives a plain R2Gen model again.
"""

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers.utils import logging


logger = logging.get_logger(__name__)

ALIGNMENT_MODES = ("shallow", "delta", "deep")
LLM_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# R2GenGPT's delta LoRA targets the query and value projections of Swin attention. transformers 5 names
# them q_proj / v_proj (Hub checkpoints' `attention.self.query` keys are renamed on load); timm fuses qkv.
VISION_LORA_TARGETS = {"swin": ["q_proj", "v_proj"], "timm_wrapper": ["qkv"]}


@dataclass
class AlignmentConfig:
    """Which parts of an R2Gen model train. Used as a command-line argument group by `finetune.py`."""

    alignment: Literal["shallow", "delta", "deep"] = field(
        default="shallow",
        metadata={"help": "shallow: projector only; delta: + LoRA on Swin query/value; deep: + the whole Swin."},
    )
    vision_lora_r: int = field(default=16, metadata={"help": "LoRA rank on the vision encoder (delta mode)."})
    vision_lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha on the vision encoder (delta mode)."})
    vision_lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Vision modules for delta LoRA; default q_proj/v_proj (Swin) or qkv (timm)."},
    )
    llm_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters on the Gemma 3 decoder."})
    llm_lora_r: int = field(default=16, metadata={"help": "LoRA rank on the language model."})
    llm_lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha on the language model."})
    llm_lora_target_modules: list[str] = field(
        default_factory=lambda: list(LLM_LORA_TARGETS),
        metadata={"help": "Language-model modules that get LoRA adapters."},
    )
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on every LoRA adapter's input."})

    def __post_init__(self):
        if self.alignment not in ALIGNMENT_MODES:
            raise ValueError(f"alignment must be one of {ALIGNMENT_MODES}, got {self.alignment!r}.")

    @property
    def uses_lora(self) -> bool:
        return self.alignment == "delta" or self.llm_lora

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainableParameters:
    """Parameter counts after `apply_alignment`, per part of the model."""

    trainable: int
    total: int
    by_part: dict[str, tuple[int, int]]  # part -> (trainable, total)

    def __str__(self) -> str:
        parts = ", ".join(f"{part} {trainable:,}/{total:,}" for part, (trainable, total) in self.by_part.items())
        share = 100 * self.trainable / max(self.total, 1)
        return f"trainable parameters: {self.trainable:,} of {self.total:,} ({share:.2f}%); {parts}"


def _part_of(name: str) -> str:
    for part in ("vision_tower", "multi_modal_projector", "language_model", "lm_head"):
        if f"{part}." in name or name.startswith(part):
            return part
    return "other"


def count_trainable_parameters(model: nn.Module) -> TrainableParameters:
    """Counts trainable and total parameters, split into vision tower / projector / LM / LM head."""
    by_part: dict[str, list[int]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # tied weights count once
            continue
        seen.add(id(param))
        counts = by_part.setdefault(_part_of(name), [0, 0])
        counts[1] += param.numel()
        if param.requires_grad:
            counts[0] += param.numel()
    return TrainableParameters(
        trainable=sum(c[0] for c in by_part.values()),
        total=sum(c[1] for c in by_part.values()),
        by_part={part: (c[0], c[1]) for part, c in by_part.items()},
    )


def _any_of(names: list[str]) -> str:
    return "(" + "|".join(re.escape(name) for name in names) + ")"


def lora_config_for(model: nn.Module, config: AlignmentConfig) -> LoraConfig | None:
    """The single peft `LoraConfig` that realises `config` on an R2Gen model, or None without LoRA."""
    if not config.uses_lora:
        return None
    patterns, rank_pattern, alpha_pattern = [], {}, {}
    if config.alignment == "delta":
        vision_type = model.config.vision_config.model_type
        targets = config.vision_lora_target_modules or VISION_LORA_TARGETS.get(vision_type)
        if not targets:
            raise ValueError(
                f"No default LoRA targets for a `{vision_type}` vision encoder; set vision_lora_target_modules "
                "to the names of its attention projections."
            )
        patterns.append(rf"model\.vision_tower\..*\.{_any_of(targets)}")
        rank_pattern[r"vision_tower\..*"] = config.vision_lora_r
        alpha_pattern[r"vision_tower\..*"] = config.vision_lora_alpha
    if config.llm_lora:
        patterns.append(rf"model\.language_model\..*\.{_any_of(config.llm_lora_target_modules)}")
        rank_pattern[r"language_model\..*"] = config.llm_lora_r
        alpha_pattern[r"language_model\..*"] = config.llm_lora_alpha
    modules_to_save = ["multi_modal_projector"] + (["vision_tower"] if config.alignment == "deep" else [])
    return LoraConfig(
        r=config.llm_lora_r if config.llm_lora else config.vision_lora_r,
        lora_alpha=config.llm_lora_alpha if config.llm_lora else config.vision_lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="|".join(patterns),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        modules_to_save=modules_to_save,
        bias="none",
    )


def apply_alignment(model: nn.Module, config: AlignmentConfig | None = None, **kwargs) -> tuple[nn.Module, TrainableParameters]:
    """Freezes and adapts an R2Gen model for training.

    Args:
        model: an `R2GenForConditionalGeneration`.
        config: the alignment mode and LoRA settings; or pass its fields as keyword arguments.
    Returns:
        `(model, counts)`: the model (a `PeftModel` when any LoRA is used) and its trainable parameter counts.
    """
    config = config if config is not None else AlignmentConfig(**kwargs)
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    if config.alignment == "deep":
        model.model.vision_tower.requires_grad_(True)

    lora_config = lora_config_for(model, config)
    if lora_config is not None:
        model = get_peft_model(model, lora_config)
    upcast_trainable_parameters(model)
    counts = count_trainable_parameters(model)
    logger.info("alignment=%s llm_lora=%s: %s", config.alignment, config.llm_lora, counts)
    return model, counts


def upcast_trainable_parameters(model: nn.Module) -> nn.Module:
    """Keeps every trainable parameter in float32, whatever the dtype of the frozen weights.

    Frozen weights may be bf16 (the default on GPUs, and `--dtype bfloat16` on CPUs: no per-step cast under
    autocast), but AdamW updating bf16 weights loses every update smaller than the weight's last bit
    (~0.4% of its value), so the trained parts (projector, vision tower, LoRA) hold fp32 master weights.
    DeepSpeed keeps its own fp32 copies and casts the module itself.
    """
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def merge_adapters(model: nn.Module) -> nn.Module:
    """Folds LoRA weights (and the trained copies of `modules_to_save`) into a plain R2Gen model."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model


__all__ = [
    "ALIGNMENT_MODES",
    "AlignmentConfig",
    "LLM_LORA_TARGETS",
    "TrainableParameters",
    "VISION_LORA_TARGETS",
    "apply_alignment",
    "count_trainable_parameters",
    "lora_config_for",
    "merge_adapters",
    "upcast_trainable_parameters",
]
