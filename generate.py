"""Write radiology reports with a fine-tuned R2Gen model.

    # a prepared test split, scored at the end against its references (NLG + clinical efficacy)
    python generate.py --model runs/iu_xray --dataset_dir data/iu_xray --split test --output preds.jsonl
    # one study from image files (its views, in order)
    python generate.py --model runs/iu_xray --images frontal.png lateral.png --output one.jsonl
    # a folder (one sub-folder per study) or a CSV / JSON listing studies and their images
    python generate.py --model user/r2gen-iu-xray --studies new_studies/ --output new.jsonl
    # the ReXrank leaderboard's input, written back in its output format
    python generate.py --model ... --rexrank_input in.json --img_root_dir images/ --rexrank_output out.json

The output is JSON lines (`id`, `images`, `report`, `reference` when known), written as studies finish;
running the same command again resumes after the last finished study. The model loads from a local
directory or a Hub repo id (offline from the Hub cache with HF_HUB_OFFLINE=1), merged or base + adapters.
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import HfArgumentParser

from r2gen_hf.checkpoints import load_trained_model, quantization_config_for
from r2gen_hf.cli_logging import configure_logging
from r2gen_hf.inference import (
    compile_lm_head,
    generate_reports,
    read_results,
    studies_from_dataset,
    studies_from_folder,
    studies_from_images,
    studies_from_listing,
    studies_from_rexrank,
)
from r2gen_hf.loading import resolve_dtype


logger = logging.getLogger("generate")


@dataclass
class GenerateArguments:
    model: str = field(metadata={"help": "A fine-tuned R2Gen model: a directory written by finetune.py or a Hub repo id."})
    output: str = field(default="predictions.jsonl", metadata={"help": "JSON lines output; an existing file is resumed."})
    dataset_dir: str | None = field(default=None, metadata={"help": "A prepared dataset (data_prep); use with --split."})
    split: str = field(default="test", metadata={"help": "Split of --dataset_dir to generate for."})
    images: list[str] | None = field(default=None, metadata={"help": "Image files of ONE study (its views, in order)."})
    study_id: str | None = field(default=None, metadata={"help": "Id for the study given with --images (default: first file's name)."})
    studies: str | None = field(default=None, metadata={"help": "A folder (one sub-folder per study), a CSV (id,images[,reference]) or a JSON list."})
    image_root: str | None = field(default=None, metadata={"help": "Base folder for relative image paths in --studies listings."})
    rexrank_input: str | None = field(default=None, metadata={"help": "ReXrank input JSON (study id -> image_path, context, ...)."})
    img_root_dir: str | None = field(default=None, metadata={"help": "Image root for --rexrank_input."})
    rexrank_output: str | None = field(default=None, metadata={"help": "Write ReXrank's output JSON (input + model_prediction) here."})
    max_samples: int | None = field(default=None, metadata={"help": "Only the first N studies (debugging)."})
    max_views: int | None = field(default=None, metadata={"help": "Use at most this many views per study (IU 2, MIMIC 1)."})
    batch_size: int = field(default=8, metadata={"help": "Studies per generate() call."})
    num_beams: int | None = field(default=None, metadata={"help": "Override the checkpoint's beam count (1 = greedy)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Override the maximum report length in tokens."})
    min_new_tokens: int | None = field(default=None, metadata={"help": "Override the minimum report length in tokens."})
    repetition_penalty: float | None = field(default=None, metadata={"help": "Override the repetition penalty (1.0 = none)."})
    no_repeat_ngram_size: int | None = field(default=None, metadata={"help": "Forbid repeating n-grams of this size."})
    length_penalty: float | None = field(default=None, metadata={"help": "Beam-search length penalty."})
    cache_implementation: Literal["dynamic", "static"] | None = field(
        default=None,
        metadata={"help": "KV cache: dynamic (default) or static (pre-allocated; on GPUs transformers then compiles the "
                          "decoding step with torch.compile: faster after a one-off compile per batch shape)."},
    )
    compile_lm_head: bool = field(
        default=False,
        metadata={"help": "CPU only: compile the LM head (torch.compile max-autotune; ~4 s once per batch shape). Measured "
                          "on the demo LM at batch 1: 42 vs 52-63 ms per token. On GPUs use --cache_implementation static."},
    )
    quantization: Literal["none", "8bit", "4bit"] = field(default="none", metadata={"help": "Load the LM in 8-bit or 4-bit (bitsandbytes)."})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPUs that support it, else fp32), bfloat16 or float32."})
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda if available, else cpu)."})
    device_map: str | None = field(default=None, metadata={"help": "'auto' to spread the model over GPU, CPU and disk (small GPUs)."})
    offload_folder: str | None = field(default=None, metadata={"help": "Folder for weights offloaded to disk with --device_map auto."})
    score: bool = field(default=True, metadata={"help": "Score against references when they exist (NLG + clinical efficacy)."})
    labeler: Literal["rule", "chexbert", "none"] = field(
        default="rule",
        metadata={"help": "CE labeler: rule (offline CheXpert-style rules), chexbert (f1chexbert, weights from the Hub), none."},
    )
    bootstrap_samples: int = field(default=0, metadata={"help": "Bootstrap resamples for 95%% confidence intervals (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap resampling."})


GENERATION_OVERRIDES = (
    "num_beams", "max_new_tokens", "min_new_tokens", "repetition_penalty", "no_repeat_ngram_size", "length_penalty",
    "cache_implementation",
)


def select_studies(args: GenerateArguments):
    """Exactly one input source -> the list of studies (and the ReXrank object when that is the source)."""
    sources = [name for name in ("dataset_dir", "images", "studies", "rexrank_input") if getattr(args, name)]
    if len(sources) != 1:
        raise ValueError(f"Give exactly one input: --dataset_dir, --images, --studies or --rexrank_input (got {sources or 'none'}).")
    if args.dataset_dir:
        return studies_from_dataset(args.dataset_dir, args.split, args.max_samples), None
    if args.images:
        return studies_from_images(args.images, args.study_id), None
    if args.studies:
        path = Path(args.studies)
        studies = studies_from_folder(path) if path.is_dir() else studies_from_listing(path, args.image_root)
        return studies[: args.max_samples], None
    if not args.img_root_dir:
        raise ValueError("--rexrank_input needs --img_root_dir (the folder its image_path entries are relative to).")
    studies, rexrank = studies_from_rexrank(args.rexrank_input, args.img_root_dir)
    return studies[: args.max_samples], rexrank


def generation_config_for(model, args: GenerateArguments):
    """The checkpoint's GenerationConfig with the flags that were given; sampling stays off."""
    config = model.generation_config
    for name in GENERATION_OVERRIDES:
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    config.validate(strict=True)
    return config


def main(argv: list[str] | None = None) -> int:
    # 1. Arguments.
    (args,) = HfArgumentParser(GenerateArguments, description=__doc__).parse_args_into_dataclasses(args=argv)
    configure_logging(logging.INFO)
    studies, rexrank = select_studies(args)

    # 2. Model and processor (merged, or base + adapters), on the chosen device.
    dtype = resolve_dtype(args.dtype, args.device)
    quantization = quantization_config_for(args.quantization, dtype)
    model, processor = load_trained_model(
        args.model, dtype=dtype, quantization_config=quantization, device_map=args.device_map, offload_folder=args.offload_folder
    )
    if args.device_map is None and quantization is None:
        model.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.compile_lm_head:
        compile_lm_head(model)

    # 3. Generate, writing each study as it finishes (a re-run resumes).
    summary = generate_reports(
        model, processor, studies, args.output, generation_config_for(model, args), args.batch_size, args.max_views
    )

    # 4. Summary, scores and the ReXrank output.
    results = read_results(args.output)
    report = {
        "studies": len(results),
        "generated_now": summary.studies,
        "resumed": summary.resumed,
        "skipped": summary.skipped,
        "tokens_per_second": round(summary.tokens_per_second, 1),
        "studies_per_second": round(summary.studies_per_second, 3),
    }
    scored = [row for row in results if row.get("reference")]
    if args.score and scored:
        from r2gen_hf.metrics import compute_report_metrics

        report["metrics"] = compute_report_metrics(
            [row["report"] for row in scored], [row["reference"] for row in scored],
            labeler=None if args.labeler == "none" else args.labeler,
            bootstrap_samples=args.bootstrap_samples, seed=args.seed,
        )
    if rexrank is not None and args.rexrank_output:
        by_id = {row["id"]: row["report"] for row in results}
        for study_id, value in rexrank.items():
            if study_id in by_id:
                value["model_prediction"] = by_id[study_id]
        Path(args.rexrank_output).write_text(json.dumps(rexrank, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 1 if summary.skipped and not summary.studies and not summary.resumed else 0


if __name__ == "__main__":
    sys.exit(main())
