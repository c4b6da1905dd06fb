"""The markdown summary of a result file: one table per benchmark."""

from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _hardware_line(result: dict) -> str:
    hardware = result.get("hardware")
    if not hardware:
        return ""
    peaks = ", ".join(f"{name} {value} TFLOP/s" for name, value in hardware["matmul_peak_tflops"].items())
    bandwidth = hardware["memory_bandwidth"]
    return (f"Measured in the same run: matmul peak {peaks} ({hardware['matmul_size']}² matmul); memory bandwidth "
            f"{bandwidth['read_gb_per_s']} GB/s read, {bandwidth['copy_gb_per_s']} GB/s copy.\n\n")


def train_section(result: dict) -> str:
    rows = [[s["setting"], s["samples_per_s"], s["tokens_per_s"], s["step_seconds"], f"{s['model_flops_per_step']:.3e}",
             s["achieved_tflops"], s["mfu"], s["peak_memory_gib"], s["peak_memory_delta_gib"]] for s in result["settings"]]
    comparison = result["loss_logits_only"]
    text = _hardware_line(result) + _table(
        ["setting", "samples/s", "tokens/s", "step s", "model FLOPs/step", "TFLOP/s", "MFU", "peak GiB", "Δ GiB"], rows)
    text += (f"\n`loss_logits_only` on {comparison['setting']}: step {comparison['step_seconds_loss_logits_only']} s vs "
             f"{comparison['step_seconds_full_logits']} s with full logits — ratio {comparison['step_time_ratio']}, "
             f"{100 * comparison['step_time_reduction']:.1f}% lower (goal ≥ {100 * comparison['goal_reduction']:.0f}%: "
             f"{'met' if comparison['meets_goal'] else 'not met'}).\n")
    return text


def generate_section(result: dict) -> str:
    rows = [[s["batch_size"], s["num_beams"], s["new_tokens"], s["tokens_per_s"], s["reports_per_s"], s["ms_per_step"]]
            for s in result["settings"]]
    bound = result["bandwidth_bound"]
    text = _hardware_line(result) + _table(["batch", "beams", "new tokens", "tokens/s", "reports/s", "ms/step"], rows)
    text += (f"\nBandwidth bound at batch 1: {bound['bandwidth_bound_tokens_per_s']} tokens/s "
             f"({bound['lm_weight_bytes_read_per_token'] / 1e6:.1f} MB of LM weights per token at "
             f"{bound['read_bandwidth_gb_per_s']} GB/s)")
    if "fraction_of_bound" in bound:
        text += f"; measured {bound['batch1_greedy_tokens_per_s']} tokens/s = {100 * bound['fraction_of_bound']:.1f}% of it"
    return text + ".\n"


def memory_section(result: dict) -> str:
    rows = [[v["quantization"], v["lm_memory_gib"], v["lm_embedding_gib"], v["vs_unquantized"]] for v in result["variants"]]
    return _table(["LM weights", "GiB", "of which embedding GiB", "vs unquantized"], rows)


def metrics_section(result: dict) -> str:
    rows = [
        ["ours, cold (JVM start)", result["ours_seconds_per_1000_cold"]],
        ["ours, warm", result["ours_seconds_per_1000_warm"]],
        ["pycocoevalcap", result["pycocoevalcap_seconds_per_1000"]],
        ["CE rule labeler", result["ce_rule_labeler_seconds_per_1000"]],
    ]
    return _table(["scoring", "s per 1,000 reports"], rows) + f"\nSame scores: max |difference| = {result['max_abs_difference']}.\n"


def data_section(result: dict) -> str:
    rows = [["prepared (ours)", result["prepared_images_per_s"]], ["R2GenGPT (JPEG decode each step)", result["r2gengpt_images_per_s"]]]
    return _table(["loading", "images/s"], rows) + f"\nRatio {result['ratio']}x.\n"


SECTIONS = {"train": train_section, "generate": generate_section, "memory": memory_section,
            "metrics": metrics_section, "data": data_section}


def to_markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [f"# Benchmarks: profile `{results['profile']}` on `{results['machine_name']}`\n",
             f"{machine['processor']}, {machine['cpu_count']} CPUs, torch {machine.get('torch', '?')} "
             f"({machine['torch_threads']} threads){', ' + machine['gpu'] if 'gpu' in machine else ''}. "
             "Written by `python -m bench`; the JSON beside this file has every number.\n"]
    for name, section in SECTIONS.items():
        if name in results.get("benchmarks", {}):
            result = results["benchmarks"][name]
            lines.append(f"## {name} (measured {result.get('measured_at', '?')})\n")
            lines.append(section(result))
    return "\n".join(lines)
