"""Fine-tune an R2Gen model (Swin + projector + Gemma 3) on a prepared chest X-ray report dataset.

    python finetune.py configs/iu_xray_gemma3_4b.yaml                    # one YAML/JSON file with every option
    python finetune.py configs/tiny.yaml --max_steps 4 --output_dir out   # a file, then flags that override it
    python finetune.py --dataset_dir data/iu_xray --output_dir runs/iu --alignment delta --llm_lora --bf16
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml finetune.py configs/mimic_cxr_multi_gpu.yaml

Datasets come from `python -m data_prep.<iu_xray|mimic_cxr|synthetic>`. Every evaluation generates reports
from the prompt and images alone and writes `predictions.jsonl` + `metrics.json` under
`<output_dir>/eval-step-N/` (and `<output_dir>/test/` with --do_predict).
"""

import logging
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed

from r2gen_hf.adapters import AlignmentConfig
from r2gen_hf.cli_logging import configure_logging
from r2gen_hf.data import R2GenDataCollator
from r2gen_hf.hub import current_command, describe_dataset, publish
from r2gen_hf.training import (
    DataArguments,
    EvaluationCollator,
    ModelArguments,
    R2GenTrainer,
    R2GenTrainingArguments,
    build_model_and_processor,
    load_splits,
    resolve_resume_checkpoint,
    save_final_model,
)


logger = logging.getLogger("finetune")
ARGUMENT_GROUPS = (ModelArguments, DataArguments, AlignmentConfig, R2GenTrainingArguments)


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, AlignmentConfig, R2GenTrainingArguments]:
    """Flags, or a YAML/JSON file as the first argument whose values later flags override."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARGUMENT_GROUPS, description=__doc__)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        path = Path(argv.pop(0))
        values = yaml.safe_load(path.read_text()) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown options {unknown}. See `python finetune.py --help` for the names.")
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None, callbacks: list | None = None) -> int:
    # 1. Arguments and logging.
    model_args, data_args, alignment, training_args = parse_arguments(argv)
    configure_logging(training_args.get_process_log_level())
    set_seed(training_args.seed)

    # 2. Data: the prepared splits (images already resized by data_prep).
    splits = load_splits(data_args)

    # 3. Model and processor, with the alignment mode and LoRA applied.
    model, processor = build_model_and_processor(model_args, alignment, max_report_tokens=data_args.max_report_tokens)

    # 4. Trainer: training batches carry reports as labels; evaluation batches carry the prompt alone.
    #    Publishing happens once at the end (step 7), not on every save with the Trainer's own card.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = R2GenTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train") if training_args.do_train else None,
        eval_dataset=splits.get(data_args.eval_split) if training_args.do_eval else None,
        processing_class=processor,
        data_collator=R2GenDataCollator(processor, max_report_tokens=data_args.max_report_tokens, max_views=data_args.max_views),
        eval_data_collator=EvaluationCollator(processor, max_views=data_args.max_views),
        callbacks=callbacks,
        model_args=model_args,
    )

    # 5. Train (resuming if asked), then save the final model, processor and generation config.
    if training_args.do_train:
        checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        save_final_model(trainer, training_args.output_dir, merge=training_args.merge_adapters)

    # 6. Evaluate on the validation split and, with --do_predict, on the test split.
    if training_args.do_eval:
        metrics = trainer.evaluate(output_name="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.do_predict:
        metrics = trainer.predict(splits[data_args.test_split], metric_key_prefix="test").metrics
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)

    # 7. Publish model, processor, generation config and a model card (--push_to_hub, --hub_model_id).
    if push_to_hub and trainer.is_world_process_zero():
        publish(
            training_args.output_dir,
            training_args.hub_model_id or Path(training_args.output_dir).name,
            private=training_args.hub_private_repo is not False,
            token=training_args.hub_token,
            base_models=(
                {"R2Gen model": model_args.model_name_or_path}
                if model_args.model_name_or_path
                else {"vision encoder": model_args.vision_model, "language model": model_args.lm_model}
            ),
            dataset=describe_dataset(data_args.dataset_dir),
            alignment=alignment.to_dict(),
            command=current_command(),
            eval_split=data_args.eval_split,
            test_split=data_args.test_split,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
