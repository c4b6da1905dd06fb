"""Training throughput: samples/s, tokens/s, peak memory, model FLOPs and MFU for each training setting.

A step is what the Trainer does for R2GenTrainer: forward under autocast (when the profile trains in bf16)
with `loss_logits_only` as the Trainer passes it, backward, AdamW step, zero grad. Warm-up steps are run
first and not timed; the step time is the median of the timed steps (a shared machine's hiccups move a mean).
MFU = model FLOPs per step (`bench.flops`) / step time / the matmul peak measured in
the same run in the profile's compute dtype.
"""

import ctypes
import gc
import logging
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch
from tqdm.auto import tqdm

from r2gen_hf.adapters import ALIGNMENT_MODES, AlignmentConfig

from .batches import make_batch
from .flops import StepShape, training_flops
from .hardware import PeakMemory, synchronize
from .profiles import Profile


logger = logging.getLogger(__name__)

LOSS_LOGITS_ONLY_GOAL = 0.25  # the goal: >= 25% lower step time on the demo profile


@dataclass(frozen=True)
class TrainSetting:
    alignment: str
    llm_lora: bool
    quantization: str = "none"
    activation_checkpointing: bool = False
    loss_logits_only: bool = True

    @property
    def name(self) -> str:
        parts = [self.alignment, "llm_lora" if self.llm_lora else "no_lora"]
        if self.quantization != "none":
            parts.append(f"qlora_{self.quantization}")
        parts.append("ckpt" if self.activation_checkpointing else "no_ckpt")
        parts.append("head_at_labels" if self.loss_logits_only else "full_logits")
        return "/".join(parts)

    def alignment_config(self, base: AlignmentConfig) -> AlignmentConfig:
        """The profile's LoRA ranks and targets, with this setting's mode and LLM LoRA switch."""
        return replace(base, alignment=self.alignment, llm_lora=self.llm_lora)


def default_setting(profile: Profile) -> TrainSetting:
    return TrainSetting(profile.alignment.alignment, profile.alignment.llm_lora,
                        activation_checkpointing=profile.activation_checkpointing)


def train_settings(profile: Profile, qlora: bool | None = None) -> list[TrainSetting]:
    """Every alignment mode with and without LLM LoRA; the profile's own setting with activation checkpointing
    toggled and with full logits (the `loss_logits_only` comparison); 4-bit QLoRA (shallow + LLM LoRA, with
    checkpointing, as QLoRA is used) when `qlora` (default: the profile's choice)."""
    ckpt = profile.activation_checkpointing
    settings = [TrainSetting(mode, lora, activation_checkpointing=ckpt) for mode in ALIGNMENT_MODES for lora in (False, True)]
    own = default_setting(profile)
    settings += [replace(own, activation_checkpointing=not ckpt), replace(own, loss_logits_only=False)]
    if profile.qlora if qlora is None else qlora:
        settings.append(TrainSetting("shallow", True, quantization="4bit", activation_checkpointing=True))
    return list(dict.fromkeys(settings))  # in order, without duplicates


def release_memory() -> None:
    """Frees what the previous setting left, and hands freed heap back to the OS so RSS deltas mean something."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def time_setting(profile: Profile, setting: TrainSetting, matmul_peaks: dict[str, float],
                 warmup_steps: int, timed_steps: int) -> dict:
    """Builds the model for `setting`, runs warm-up and timed steps, and returns the measurements."""
    release_memory()
    with PeakMemory(profile.device) as memory:
        alignment = setting.alignment_config(profile.alignment)
        model, processor = profile.training_model(alignment, setting.quantization)
        if setting.activation_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        config = model.config
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-5)
        batch = make_batch(config, profile.train_batch_size, profile.views_per_study, profile.report_tokens,
                           processor, profile.device)

        def step() -> float:
            with profile.autocast():
                loss = model(**batch, loss_logits_only=setting.loss_logits_only).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

        for _ in range(warmup_steps):
            step()
        losses, step_times = [], []
        for _ in range(timed_steps):
            synchronize(profile.device)
            start = time.perf_counter()
            losses.append(step())
            synchronize(profile.device)
            step_times.append(time.perf_counter() - start)
        step_seconds = statistics.median(step_times)

    batch_size, seq_len = batch["input_ids"].shape
    shape = StepShape(batch_size, seq_len, profile.views_per_study, profile.report_tokens)
    flops = training_flops(config, shape, alignment, setting.loss_logits_only, setting.activation_checkpointing)
    achieved = flops.total / step_seconds
    peak_name = str(profile.compute_dtype).removeprefix("torch.")
    result = {
        "setting": setting.name,
        **asdict(setting),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "step_seconds": round(step_seconds, 4),
        "step_seconds_each": [round(seconds, 4) for seconds in step_times],
        "samples_per_s": round(batch_size / step_seconds, 3),
        "tokens_per_s": round(batch_size * seq_len / step_seconds, 1),
        "peak_memory_gib": round(memory.peak_bytes / 2**30, 4),
        "peak_memory_delta_gib": round(memory.delta_bytes / 2**30, 4),
        "model_flops_per_step": flops.total,
        "recompute_flops_per_step": flops.recompute,
        "flops_by_part": flops.to_dict()["by_part"],
        "achieved_tflops": round(achieved / 1e12, 5),
        "mfu": round(achieved / matmul_peaks[peak_name], 4),
        "mfu_against": f"{peak_name} matmul peak",
        "final_loss": round(losses[-1], 4),
    }
    del model, optimizer, batch
    return result


def loss_logits_only_comparison(profile: Profile, results: list[dict]) -> dict:
    """Step time with the LM head at labelled positions only vs over the whole sequence, on the profile's
    own setting."""
    own = default_setting(profile)
    by_name = {result["setting"]: result for result in results}
    head_only = by_name[own.name]["step_seconds"]
    full = by_name[replace(own, loss_logits_only=False).name]["step_seconds"]
    reduction = 1 - head_only / full
    return {
        "setting": own.name,
        "step_seconds_full_logits": full,
        "step_seconds_loss_logits_only": head_only,
        "step_time_ratio": round(head_only / full, 4),
        "step_time_reduction": round(reduction, 4),
        "goal_reduction": LOSS_LOGITS_ONLY_GOAL,
        "meets_goal": reduction >= LOSS_LOGITS_ONLY_GOAL,
    }


def run(profile: Profile, hardware: dict, qlora: bool | None = None, warmup_steps: int | None = None,
        timed_steps: int | None = None) -> dict:
    """Every training setting of `profile`, and the `loss_logits_only` comparison."""
    warmup = profile.warmup_steps if warmup_steps is None else warmup_steps
    timed = profile.timed_steps if timed_steps is None else timed_steps
    settings = train_settings(profile, qlora)
    results = []
    for setting in tqdm(settings, desc=f"train ({profile.name})", unit="setting"):
        logger.info("train: %s", setting.name)
        results.append(time_setting(profile, setting, hardware["matmul_peak_flops"], warmup, timed))
    return {
        "warmup_steps": warmup,
        "timed_steps": timed,
        "compute_dtype": str(profile.compute_dtype).removeprefix("torch."),
        "settings": results,
        "loss_logits_only": loss_logits_only_comparison(profile, results),
        "mfu_goal": mfu_against_goal(profile, results),
    }


def mfu_against_goal(profile: Profile, results: list[dict]) -> dict | None:
    """The MFU of the profile's own setting against the profile's goal (None where it has none)."""
    if profile.mfu_goal is None:
        return None
    own = default_setting(profile).name
    mfu = next(result["mfu"] for result in results if result["setting"] == own)
    return {"setting": own, "mfu": mfu, "goal": profile.mfu_goal, "meets_goal": mfu >= profile.mfu_goal}
