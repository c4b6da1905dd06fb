"""The markdown summary of a result file: one table per benchmark."""

import json
from pathlib import Path
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
    comparison, mfu = result["loss_logits_only"], result.get("mfu_goal")
    text = _hardware_line(result) + _table(
        ["setting", "samples/s", "tokens/s", "step s", "model FLOPs/step", "TFLOP/s", "MFU", "peak GiB", "Δ GiB"], rows)
    text += (f"\n`loss_logits_only` on {comparison['setting']}: step {comparison['step_seconds_loss_logits_only']} s vs "
             f"{comparison['step_seconds_full_logits']} s with full logits — ratio {comparison['step_time_ratio']}, "
             f"{100 * comparison['step_time_reduction']:.1f}% lower (goal ≥ {100 * comparison['goal_reduction']:.0f}%: "
             f"{'met' if comparison['meets_goal'] else 'not met'}).\n")
    if mfu:
        text += (f"\nMFU of {mfu['setting']}: {100 * mfu['mfu']:.1f}% (goal ≥ {100 * mfu['goal']:.0f}%: "
                 f"{'met' if mfu['meets_goal'] else 'not met'}).\n")
    return text


def generate_section(result: dict) -> str:
    rows = [[s["batch_size"], s["num_beams"], "compiled" if s.get("compiled_lm_head") else "eager", s["new_tokens"],
             s["tokens_per_s"], s["reports_per_s"], s["ms_per_step"]] for s in result["settings"]]
    bound = result["bandwidth_bound"]
    text = _hardware_line(result) + _table(
        ["batch", "beams", "LM head", "new tokens", "tokens/s", "reports/s", "ms/step"], rows)
    text += (f"\nBandwidth bound at batch 1: {bound['bandwidth_bound_tokens_per_s']} tokens/s "
             f"({bound['lm_weight_bytes_read_per_token'] / 1e6:.1f} MB of LM weights per token at "
             f"{bound['read_bandwidth_gb_per_s']} GB/s)")
    measured = [f"{bound[f'batch1_greedy_tokens_per_s_{key}']} tokens/s = {100 * bound[f'fraction_of_bound_{key}']:.1f}% "
                f"of it with the {'compiled' if key == 'compiled_head' else 'eager'} LM head"
                for key in ("eager", "compiled_head") if f"fraction_of_bound_{key}" in bound]
    if measured:
        text += "; measured " + ", ".join(measured)
    if "lm_head_compile_seconds" in bound:
        text += f" (compiled in {bound['lm_head_compile_seconds']} s)"
    if bound.get("goal_fraction") is not None:
        text += f". Goal ≥ {100 * bound['goal_fraction']:.0f}%: {'met' if bound['meets_goal'] else 'not met'}"
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


# ------------------------------------------------------------------------------------- README summary

README_START, README_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
# The rows the README always shows; a missing result file is shown as not yet measured.
README_ROWS = (("tiny", "cpu2"), ("demo", "cpu2"), ("gemma3-4b", "h200"))


def _own_setting(train: dict) -> dict:
    name = train["loss_logits_only"]["setting"]
    return next(setting for setting in train["settings"] if setting["setting"] == name)


def _generation(generate: dict, batch_size: int, num_beams: int) -> dict | None:
    return next((s for s in generate["settings"] if s["batch_size"] == batch_size and s["num_beams"] == num_beams), None)


def readme_row(profile: str, machine: str, results: dict | None) -> list[Any]:
    """One README row: training speed and MFU of the profile's own setting, the label-only-logits saving,
    batch-1 decoding against the bandwidth bound, batch-16 beam search, and LM weight memory."""
    if results is None:
        return [f"`{profile}`", machine, "not yet measured", *[""] * 5]
    benchmarks = results["benchmarks"]
    cells = ["–"] * 6
    if "train" in benchmarks:
        own = _own_setting(benchmarks["train"])
        comparison = benchmarks["train"]["loss_logits_only"]
        cells[0] = f"{own['samples_per_s']} ({own['setting']})"
        cells[1] = f"{100 * own['mfu']:.0f}%"
        cells[2] = f"{100 * comparison['step_time_reduction']:.0f}%"
    if "generate" in benchmarks:
        generate = benchmarks["generate"]
        beams = _generation(generate, 16, 3)
        bound = generate["bandwidth_bound"]
        measured = [(label, key) for label, key in (("", "eager"), ("compiled head ", "compiled_head"))
                    if f"fraction_of_bound_{key}" in bound]
        if measured:
            cells[3] = "; ".join(f"{label}{bound[f'batch1_greedy_tokens_per_s_{key}']} "
                                 f"({100 * bound[f'fraction_of_bound_{key}']:.0f}%)" for label, key in measured)
            cells[3] += f" of {bound['bandwidth_bound_tokens_per_s']}"
        if beams:
            cells[4] = str(beams["reports_per_s"])
    if "memory" in benchmarks:
        cells[5] = " / ".join(str(variant["lm_memory_gib"]) for variant in benchmarks["memory"]["variants"])
    return [f"`{profile}`", machine, *cells]


def readme_table(results_dir: Path) -> str:
    """The performance table of README.md, from `results_dir/<profile>-<machine>.json`."""
    rows = []
    for profile, machine in README_ROWS:
        path = Path(results_dir) / f"{profile}-{machine}.json"
        rows.append(readme_row(profile, machine, json.loads(path.read_text()) if path.exists() else None))
    headers = ["profile", "machine", "train samples/s (setting)", "MFU", "label-only logits: step time saved",
               "batch-1 greedy tokens/s (% of bandwidth bound)", "batch-16 3-beam reports/s", "LM weights GiB (unquantized / 8-bit / 4-bit)"]
    return _table(headers, rows)


def update_readme(readme: Path, results_dir: Path) -> bool:
    """Rewrites the table between the README's bench-table markers; returns whether it changed."""
    text = Path(readme).read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    new = text[:start] + "\n" + readme_table(results_dir) + text[end:]
    if new != text:
        Path(readme).write_text(new)
    return new != text
