"""Run the benchmarks and write `bench/results/<profile>-<machine>.{json,md}`.

    python -m bench all --profile tiny                 # every benchmark
    python -m bench train --profile demo               # one: train | generate | data | metrics | memory
    python -m bench all --profile tiny --machine mybox --output_dir /tmp/results
    python -m bench readme                             # regenerate README.md's table from bench/results/

Running one benchmark updates its entry in an existing result file and leaves the others. The machine's
matmul peaks and memory bandwidth are measured again in every run and stored with each entry.
"""

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ._report import machine_info, machine_name
from .hardware import measure_machine
from .markdown import to_markdown, update_readme
from .profiles import PROFILES, make_profile


logger = logging.getLogger("bench")

BENCHMARKS = ("train", "generate", "data", "metrics", "memory")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=("all", *BENCHMARKS, "readme"))
    parser.add_argument("--profile", choices=PROFILES, default="tiny")
    parser.add_argument("--machine", default=None, help="Short machine name in file names (default: cpu<N> or the GPU model).")
    parser.add_argument("--output_dir", default=str(RESULTS_DIR))
    parser.add_argument("--qlora", action=argparse.BooleanOptionalAction, default=None,
                        help="Include 4-bit QLoRA in `train` (default: yes for tiny and gemma3-4b, no for demo).")
    parser.add_argument("--warmup_steps", type=int, default=None, help="Override the profile's untimed training steps.")
    parser.add_argument("--timed_steps", type=int, default=None, help="Override the profile's timed training steps.")
    parser.add_argument("--new_tokens", type=int, default=None, help="Override the profile's generated tokens per report.")
    parser.add_argument("--compile_lm_head", action=argparse.BooleanOptionalAction, default=None,
                        help="`generate`: also time batch-1 greedy with the LM head compiled (default: on a CPU).")
    parser.add_argument("--num_reports", type=int, default=1000, help="Reports scored by `metrics`.")
    parser.add_argument("--num_images", type=int, default=32, help="Images loaded by `data`.")
    return parser.parse_args(argv)


def run_benchmark(name: str, args: argparse.Namespace, hardware_cache: dict) -> dict[str, Any]:
    """One benchmark's result (with the hardware figures it was compared with, where it uses any)."""
    if name == "data":
        from . import data_loading

        return data_loading.run(num_images=args.num_images)
    if name == "metrics":
        from . import metrics_speed

        return metrics_speed.run(num_reports=args.num_reports)

    profile = make_profile(args.profile)
    if "hardware" not in hardware_cache:
        dtypes = tuple(dict.fromkeys((torch.float32, torch.bfloat16, profile.compute_dtype)))
        hardware_cache["hardware"] = measure_machine(profile.device, dtypes)
    hardware = hardware_cache["hardware"]
    if name == "train":
        from . import train

        result = train.run(profile, hardware, qlora=args.qlora, warmup_steps=args.warmup_steps, timed_steps=args.timed_steps)
    elif name == "generate":
        from . import generate

        result = generate.run(profile, hardware, new_tokens=args.new_tokens, compile_head=args.compile_lm_head)
    elif name == "memory":
        from . import memory

        result = memory.run(profile)
    else:
        raise ValueError(f"Unknown benchmark {name!r}; choose one of {BENCHMARKS}.")
    return {**result, "hardware": {key: value for key, value in hardware.items() if key != "bandwidth"}}


def load_previous(path: Path, profile: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    previous = json.loads(path.read_text())
    return previous if previous.get("profile") == profile else {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.benchmark == "readme":
        changed = update_readme(README, Path(args.output_dir))
        logger.info("%s %s", README, "updated" if changed else "already up to date")
        return 0
    machine = args.machine or machine_name()
    output_dir = Path(args.output_dir)
    json_path = output_dir / f"{args.profile}-{machine}.json"
    names = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)

    results = load_previous(json_path, args.profile)
    results.update({"profile": args.profile, "machine_name": machine, "machine": machine_info()})
    benchmarks = results.setdefault("benchmarks", {})
    hardware_cache: dict = {}
    # Scorers and libraries print progress on stdout; only the final JSON goes there.
    with contextlib.redirect_stdout(sys.stderr):
        for name in names:
            start = time.perf_counter()
            benchmarks[name] = run_benchmark(name, args, hardware_cache)
            benchmarks[name]["benchmark_seconds"] = round(time.perf_counter() - start, 1)
            benchmarks[name]["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            logger.info("%s done in %.1f s", name, benchmarks[name]["benchmark_seconds"])

    output_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(to_markdown(results))
    print(json.dumps(results, indent=2))
    logger.info("wrote %s and %s", json_path, json_path.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
