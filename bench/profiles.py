"""The models the benchmarks run: `tiny`, `demo` and `gemma3-4b`.

* `tiny`: the test suite's tiny Swin + a tiny Gemma 3 decoder (random weights, the real 262k vocabulary), with
  the decoder widened to hidden 64 / 2 x 32 attention / FFN 128 as in tests/test_quantization.py:
  bitsandbytes' CPU 4-bit kernels need in_features divisible by 64. fp32 on CPU.
* `demo`: the model of configs/demo.yaml, built exactly as finetune.py builds it (the small Swin pretrained on
  synthetic findings + the real Gemma 3 270M, with the YAML's alignment and LLM LoRA); bf16 autocast as the
  YAML says.
* `gemma3-4b`: `R2GenConfig()` defaults — Gemma-3-4b-it's text geometry, Swin-B/224 — with random weights
  (shapes decide speed, not values; nothing is downloaded), bf16, CUDA only.

Quantized variants (8-bit, 4-bit NF4) load through `from_pretrained(quantization_config=...)`, the library's
own path: the `demo` one through finetune.py's `--quantization`, the others from the random model saved once
to a temporary folder.
"""

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from r2gen_hf import R2GenConfig, R2GenForConditionalGeneration
from r2gen_hf.adapters import AlignmentConfig, apply_alignment
from r2gen_hf.checkpoints import quantization_config_for


logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("tiny", "demo", "gemma3-4b")
QUANTIZATIONS = ("none", "8bit", "4bit")



def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Profile:
    """A model to benchmark and the step counts that keep its run short."""

    name: str
    device: torch.device
    weight_dtype: torch.dtype
    autocast_dtype: torch.dtype | None  # training runs under torch.autocast in this dtype; generation casts the weights to it
    train_batch_size: int
    report_tokens: int
    views_per_study: int
    warmup_steps: int
    timed_steps: int
    new_tokens: int  # generation: max_new_tokens = min_new_tokens
    generate_runs: int  # timed generate() calls per setting
    qlora: bool  # whether `train` includes 4-bit QLoRA by default
    alignment: AlignmentConfig  # the profile's own training configuration (loss_logits_only is compared on it)
    activation_checkpointing: bool
    mfu_goal: float | None = None  # the goal for the own setting's MFU (None: this profile has none)
    decode_goal: float | None = None  # ... for batch-1 greedy tokens/s as a fraction of the bandwidth bound
    _build_base: Callable[["Profile", str], tuple[torch.nn.Module, Any]] = field(repr=False, default=None)
    _saved_dir: tempfile.TemporaryDirectory | None = field(repr=False, default=None)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast_dtype or self.weight_dtype

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def base_model(self, quantization: str = "none") -> tuple[torch.nn.Module, Any]:
        """The model without alignment applied (eval mode) and its processor (None where no tokenizer)."""
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
        model, processor = self._build_base(self, quantization)
        return model.eval(), processor

    def training_model(self, alignment: AlignmentConfig, quantization: str = "none") -> tuple[torch.nn.Module, Any]:
        """The model with `alignment` applied (a `PeftModel` with any LoRA), in training mode."""
        model, processor = self.base_model(quantization)
        model, _ = apply_alignment(model, alignment)
        return model.train(), processor

    def saved_base_dir(self) -> Path:
        """The unquantized random model, saved once, for `from_pretrained(quantization_config=...)`."""
        if self._saved_dir is None:
            self._saved_dir = tempfile.TemporaryDirectory(prefix=f"r2gen-bench-{self.name}-")
            model, _ = self._build_base(self, "none")
            model.save_pretrained(self._saved_dir.name)
            del model
        return Path(self._saved_dir.name)


def _load_quantized(profile: Profile, quantization: str) -> R2GenForConditionalGeneration:
    return R2GenForConditionalGeneration.from_pretrained(
        profile.saved_base_dir(),
        dtype=profile.weight_dtype,
        quantization_config=quantization_config_for(quantization, profile.compute_dtype),
        device_map=str(profile.device),
    )


def tiny_config() -> R2GenConfig:
    from r2gen_hf.testing import TINY_QUANTIZABLE_GEMMA3_TEXT, tiny_vision_config

    return R2GenConfig(vision_config=tiny_vision_config(), text_config=dict(TINY_QUANTIZABLE_GEMMA3_TEXT))


def _tiny_base(profile: Profile, quantization: str) -> tuple[torch.nn.Module, Any]:
    from r2gen_hf.testing import tiny_processor

    config = tiny_config()
    if quantization != "none":
        return _load_quantized(profile, quantization), tiny_processor(config)
    torch.manual_seed(0)
    return R2GenForConditionalGeneration(config).to(profile.device, profile.weight_dtype), tiny_processor(config)


def _gemma3_4b_base(profile: Profile, quantization: str) -> tuple[torch.nn.Module, Any]:
    if quantization != "none":
        return _load_quantized(profile, quantization), None
    torch.manual_seed(0)
    with torch.device(profile.device):  # initialise on the GPU: 4.3 B parameters take minutes on the CPU
        model = R2GenForConditionalGeneration._from_config(R2GenConfig(), dtype=profile.weight_dtype)
    return model, None


def demo_arguments(config_path: Path | None = None):
    """finetune.py's arguments for configs/demo.yaml: (model_args, data_args, alignment, training_args)."""
    import sys

    sys.path.insert(0, str(ROOT))  # finetune.py lives at the repository root
    import finetune

    return finetune.parse_arguments([str(config_path or ROOT / "configs" / "demo.yaml")])


def _demo_base(profile: Profile, quantization: str) -> tuple[torch.nn.Module, Any]:
    """finetune.py's `build_model_and_processor`, with alignment `shallow` and no LoRA (no peft wrapping):
    the profile's own alignment is applied afterwards by `training_model`, as by finetune.py."""
    from r2gen_hf.training import build_model_and_processor

    model_args, data_args, _, _ = demo_arguments()
    model_args = dataclasses.replace(model_args, quantization=quantization)
    model, processor = build_model_and_processor(
        model_args, AlignmentConfig(alignment="shallow"), max_report_tokens=data_args.max_report_tokens
    )
    return (model.to(profile.device) if quantization == "none" else model), processor


def make_profile(name: str, device: torch.device | None = None) -> Profile:
    """The named profile on `device` (default: CUDA when available)."""
    device = device or default_device()
    if name == "tiny":
        return Profile(
            name="tiny", device=device, weight_dtype=torch.float32, autocast_dtype=None, train_batch_size=2,
            report_tokens=16, views_per_study=2, warmup_steps=1, timed_steps=3, new_tokens=16, generate_runs=2,
            qlora=True, alignment=AlignmentConfig(alignment="deep", llm_lora=True), activation_checkpointing=False,
            _build_base=_tiny_base,
        )
    if name == "demo":
        from r2gen_hf.loading import resolve_dtype

        model_args, data_args, alignment, training_args = demo_arguments()
        return Profile(
            name="demo", device=device, weight_dtype=resolve_dtype(model_args.dtype, device),
            autocast_dtype=torch.bfloat16 if training_args.bf16 else None,
            train_batch_size=training_args.per_device_train_batch_size, report_tokens=data_args.max_report_tokens,
            views_per_study=data_args.max_views or 1, warmup_steps=2, timed_steps=5,
            new_tokens=32 if device.type == "cpu" else 100, generate_runs=1, qlora=False, alignment=alignment,
            activation_checkpointing=training_args.activation_checkpointing, mfu_goal=0.50, decode_goal=0.30,
            _build_base=_demo_base,
        )
    if name == "gemma3-4b":
        if device.type != "cuda":
            raise ValueError(
                "The gemma3-4b profile needs a CUDA GPU: its 4.3 B parameters (8.6 GB in bf16) train and generate far "
                "too slowly on a CPU. Run it on a GPU machine (bench/gpu_check.sh), or use --profile tiny / demo here."
            )
        return Profile(
            name="gemma3-4b", device=device, weight_dtype=torch.bfloat16, autocast_dtype=torch.bfloat16,
            train_batch_size=8, report_tokens=100, views_per_study=1, warmup_steps=2, timed_steps=5, new_tokens=100,
            generate_runs=2, qlora=True, alignment=AlignmentConfig(alignment="shallow", llm_lora=True),
            activation_checkpointing=True, mfu_goal=0.35, decode_goal=0.50, _build_base=_gemma3_4b_base,
        )
    raise ValueError(f"Unknown profile {name!r}; choose one of {PROFILES}.")
