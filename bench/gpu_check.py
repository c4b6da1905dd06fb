"""The GPU check (run by bench/gpu_check.sh): for one profile, in bf16 (the profile's dtype), 8-bit and 4-bit —
LM weight memory, peak training memory and samples/s (LLM LoRA, activation checkpointing), generation
tokens/s at batch 1 and reports/s at batch 16 with 3 beams (fixed new tokens, no early stop) — plus the
memory-bandwidth bound on batch-1 tokens/s. Prints one JSON object on stdout (logs go to stderr).

    python -m bench.gpu_check --profile gemma3-4b [--new_tokens 100] [--train_batch_size 8]
"""

import argparse
import contextlib
import json
import logging
import sys
import time
from dataclasses import replace

import torch

from r2gen_hf.adapters import AlignmentConfig

from . import generate, memory, train
from ._report import machine_info, machine_name
from .hardware import measure_machine
from .profiles import PROFILES, QUANTIZATIONS, make_profile


logger = logging.getLogger("bench.gpu_check")


def check_variant(profile, quantization: str, hardware: dict, new_tokens: int, timed_steps: int) -> dict:
    start = time.perf_counter()
    setting = train.TrainSetting("shallow", True, quantization=quantization, activation_checkpointing=True)
    trained = train.time_setting(profile, setting, hardware["matmul_peak_flops"], warmup_steps=1, timed_steps=timed_steps)
    result = {"train": {key: trained[key] for key in (
        "setting", "batch_size", "seq_len", "samples_per_s", "tokens_per_s", "step_seconds", "peak_memory_gib",
        "peak_memory_delta_gib", "mfu")}}
    train.release_memory()
    model, processor = profile.base_model(quantization)
    result = {**memory.footprint(model, quantization), **result}
    batch1 = generate.time_generation(profile, model, processor, 1, 1, new_tokens, runs=1)
    batch16 = generate.time_generation(profile, model, processor, 16, 3, new_tokens, runs=1)
    result["generate_batch1_greedy_tokens_per_s"] = batch1["tokens_per_s"]
    result["generate_batch16_beams3_reports_per_s"] = batch16["reports_per_s"]
    result["generate_batch16_beams3_tokens_per_s"] = batch16["tokens_per_s"]
    result["bandwidth_bound_tokens_per_s"] = round(
        hardware["bandwidth"].read_bytes_per_s / result["lm_weight_bytes_read_per_token"], 1)
    result["seconds"] = round(time.perf_counter() - start, 1)
    del model
    train.release_memory()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="gemma3-4b")
    parser.add_argument("--new_tokens", type=int, default=100)
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--timed_steps", type=int, default=3)
    parser.add_argument("--quantizations", nargs="+", choices=QUANTIZATIONS, default=list(QUANTIZATIONS))
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    profile = replace(make_profile(args.profile), train_batch_size=args.train_batch_size,
                      alignment=AlignmentConfig(alignment="shallow", llm_lora=True), activation_checkpointing=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        hardware = measure_machine(profile.device, tuple(dict.fromkeys((torch.float32, profile.compute_dtype))))
        variants = {}
        for quantization in args.quantizations:
            logger.info("gpu_check: %s", quantization)
            variants[quantization] = check_variant(profile, quantization, hardware, args.new_tokens, args.timed_steps)
    unquantized = str(profile.weight_dtype).removeprefix("torch.")
    result = {
        "profile": profile.name,
        "machine_name": machine_name(),
        "machine": machine_info(),
        "unquantized_dtype": unquantized,
        "new_tokens": args.new_tokens,
        "train_batch_size": args.train_batch_size,
        "matmul_peak_tflops": hardware["matmul_peak_tflops"],
        "memory_bandwidth": hardware["memory_bandwidth"],
        "variants": {("bf16" if q == "none" and unquantized == "bfloat16" else q): v for q, v in variants.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
