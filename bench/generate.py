"""Generation throughput: tokens/s and reports/s at batch 1 and 16, greedy and 3-beam, with the KV cache.

Every run writes exactly `new_tokens` tokens per report (`min_new_tokens = max_new_tokens`, so no early
stop), from the prompt and images alone, with the model's own generation settings otherwise. Tokens/s
counts the tokens of the returned reports (batch x new tokens; beams are not counted separately).

Generation runs as inference does: the weights in the profile's compute dtype (bf16 for the demo profile,
whose training keeps fp32 weights under bf16 autocast) and no autocast, which would cast every fp32 weight
again at every decoding step (measured on the demo LM at batch 1: 4.95 tokens/s under autocast, 8.5 in fp32,
18.5 with bf16 weights).

Batch-1 greedy decoding is memory-bandwidth bound: each new token reads every LM weight once, so tokens/s
<= bandwidth / LM weight bytes (DESIGN.md §7). The bound uses the read bandwidth measured in the same run.
On a CPU, batch-1 greedy is measured a second time with the LM head compiled (`compile_lm_head`, what
generate.py's `--compile_lm_head` does), after the eager settings; the compile time is reported apart.
"""

import copy
import logging
import time

import torch
from tqdm.auto import tqdm

from r2gen_hf.inference import compile_lm_head

from .batches import make_batch
from .flops import lm_weight_bytes_per_token
from .hardware import synchronize
from .profiles import Profile


logger = logging.getLogger(__name__)

SETTINGS = ((1, 1), (1, 3), (16, 1), (16, 3))  # (batch size, beams)


def generation_config(model, new_tokens: int, num_beams: int):
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=num_beams, do_sample=False,
                  use_cache=True)
    return config


def time_generation(profile: Profile, model, processor, batch_size: int, num_beams: int, new_tokens: int,
                    runs: int) -> dict:
    """Mean seconds of `runs` generate() calls after one short untimed call, and the throughputs."""
    inputs = make_batch(model.config, batch_size, profile.views_per_study, None, processor, profile.device, dtype=model.dtype)
    config = generation_config(model, new_tokens, num_beams)
    with torch.no_grad():
        model.generate(**inputs, generation_config=generation_config(model, 2, num_beams))  # warm-up
        synchronize(profile.device)
        start = time.perf_counter()
        for _ in range(runs):
            sequences = model.generate(**inputs, generation_config=config)
        synchronize(profile.device)
    seconds = (time.perf_counter() - start) / runs
    written = sequences.shape[1] - inputs["input_ids"].shape[1]
    if written != new_tokens:
        raise RuntimeError(f"generate() wrote {written} new tokens, expected {new_tokens} (min_new_tokens ignored?).")
    return {
        "batch_size": batch_size,
        "num_beams": num_beams,
        "new_tokens": new_tokens,
        "prompt_tokens": inputs["input_ids"].shape[1],
        "seconds": round(seconds, 4),
        "tokens_per_s": round(batch_size * new_tokens / seconds, 2),
        "reports_per_s": round(batch_size / seconds, 3),
        "ms_per_step": round(1000 * seconds / new_tokens, 3),
    }


def bandwidth_bound(model, read_bytes_per_s: float) -> dict:
    weight_bytes = lm_weight_bytes_per_token(model.language_model, model.lm_head)
    return {
        "lm_weight_bytes_read_per_token": weight_bytes,
        "read_bandwidth_gb_per_s": round(read_bytes_per_s / 1e9, 2),
        "bandwidth_bound_tokens_per_s": round(read_bytes_per_s / weight_bytes, 1),
    }


def run(profile: Profile, hardware: dict, new_tokens: int | None = None, runs: int | None = None,
        settings=SETTINGS, compile_head: bool | None = None) -> dict:
    """Every (batch size, beams) setting, eager; then, with `compile_head` (default: on a CPU), batch-1 greedy
    with the LM head compiled."""
    new_tokens = new_tokens or profile.new_tokens
    runs = runs or profile.generate_runs
    compile_head = profile.device.type == "cpu" if compile_head is None else compile_head
    model, processor = profile.base_model()
    model.to(profile.compute_dtype)  # inference weights; pixel values follow in time_generation
    results = []
    for batch_size, beams in tqdm(settings, desc=f"generate ({profile.name})", unit="setting"):
        results.append({**time_generation(profile, model, processor, batch_size, beams, new_tokens, runs),
                        "compiled_lm_head": False})
    bound = bandwidth_bound(model, hardware["bandwidth"].read_bytes_per_s)
    if compile_head:
        compile_lm_head(model)
        start = time.perf_counter()
        with torch.no_grad():  # compiles for the batch-1 shape
            model.generate(**make_batch(model.config, 1, profile.views_per_study, None, processor, profile.device,
                                        dtype=model.dtype), generation_config=generation_config(model, 1, 1))
        bound["lm_head_compile_seconds"] = round(time.perf_counter() - start, 1)
        results.append({**time_generation(profile, model, processor, 1, 1, new_tokens, runs), "compiled_lm_head": True})
    batch1 = [r for r in results if r["batch_size"] == 1 and r["num_beams"] == 1]
    for result in batch1:
        key = "compiled_head" if result["compiled_lm_head"] else "eager"
        bound[f"batch1_greedy_tokens_per_s_{key}"] = result["tokens_per_s"]
        bound[f"fraction_of_bound_{key}"] = round(result["tokens_per_s"] / bound["bandwidth_bound_tokens_per_s"], 4)
    if batch1 and profile.decode_goal is not None:
        bound["goal_fraction"] = profile.decode_goal
        bound["meets_goal"] = max(bound[key] for key in bound if key.startswith("fraction_of_bound_")) >= profile.decode_goal
    return {"runs_per_setting": runs, "settings": results, "bandwidth_bound": bound}
