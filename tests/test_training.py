"""finetune.py and R2GenTrainer on the tiny model and a small synthetic set (CPU, in-process)."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import finetune
from r2gen_hf import R2GenForConditionalGeneration
from r2gen_hf.checkpoints import load_trained_model
from r2gen_hf.data import R2GenDataCollator
from r2gen_hf.training import R2GenTrainingArguments

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    from data_prep import synthetic

    path = tmp_path_factory.mktemp("synthetic")
    assert synthetic.main(["--output", str(path), "--num_studies", "40", "--seed", "0", "--image_size", "64"]) == 0
    return path


def run(tmp_path, synthetic_dir, *flags, callbacks=None):
    output = tmp_path / "out"
    argv = [TINY, "--dataset_dir", str(synthetic_dir), "--output_dir", str(output), *flags]
    assert finetune.main(argv, callbacks=callbacks) == 0
    return output


def losses(output_dir):
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_training_lowers_the_loss_and_writes_evaluations(tmp_path, synthetic_dir):
    output = run(tmp_path, synthetic_dir, "--max_steps", "8", "--eval_steps", "4", "--save_steps", "4")
    history = losses(output)
    assert len(history) == 8
    assert sum(history[-2:]) / 2 < sum(history[:2]) / 2, history

    # Every evaluation writes predictions and metrics; references are the full cleaned reports.
    from datasets import load_from_disk

    validation = load_from_disk(str(synthetic_dir))["validation"]
    references = dict(zip(validation["id"], validation["report"]))
    for step in (4, 8):
        directory = output / f"eval-step-{step}"
        metrics = json.loads((directory / "metrics.json").read_text())
        assert {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "r2gen_score"} <= metrics.keys()
        assert metrics["r2gen_score"] == pytest.approx(0.5 * metrics["bleu_4"] + 0.5 * metrics["cider"])
        assert {"ce_micro_f1", "ce_macro_f1_5"} <= metrics.keys() and metrics["labeler"].startswith("rule-based")
        rows = [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == metrics["num_studies"] == min(6, len(validation))  # max_eval_samples 6
        assert len({row["id"] for row in rows}) == len(rows)
        for row in rows:
            assert row["reference"] == references[row["id"]]
            assert set(row) == {"id", "prediction", "reference"}
    assert (output / "test" / "metrics.json").exists()
    assert (output / "eval" / "metrics.json").exists()  # the final evaluation does not overwrite eval-step-8
    assert json.loads((output / "r2gen_base.json").read_text())["model_name_or_path"] == "r2gen_hf:tiny"

    # The final model: adapters + processor + generation config, and a merged copy from_pretrained loads.
    assert (output / "adapter_model.safetensors").exists() and (output / "processor_config.json").exists()
    # The generation settings that were scored (tiny.yaml: greedy, 12 new tokens) go with the model.
    for directory in (output, output / "merged"):
        generation = json.loads((directory / "generation_config.json").read_text())
        assert generation["num_beams"] == 1 and generation["max_new_tokens"] == 12, generation
    merged = R2GenForConditionalGeneration.from_pretrained(output / "merged")
    assert not any("lora_" in name for name, _ in merged.named_parameters())

    # Every checkpoint, not only the final model, loads by itself and writes the reports its evaluation scored.
    checkpoint = output / "checkpoint-4"
    assert json.loads((checkpoint / "r2gen_base.json").read_text())["model_name_or_path"] == "r2gen_hf:tiny"
    model, processor = load_trained_model(checkpoint)
    assert model.generation_config.num_beams == 1 and model.generation_config.max_new_tokens == 12
    first_batch = [validation[index] for index in range(4)]  # tiny.yaml: per_device_eval_batch_size 4
    batch = R2GenDataCollator(processor, include_reports=False, max_views=2)(first_batch)
    with torch.no_grad():
        sequences = model.generate(**batch)
    regenerated = processor.batch_decode(sequences[:, batch["input_ids"].shape[1] :])
    rows = [json.loads(line) for line in (output / "eval-step-4" / "predictions.jsonl").read_text().splitlines()]
    scored = {row["id"]: row["prediction"] for row in rows}
    assert regenerated == [scored[study["id"]] for study in first_batch]


def test_evaluation_generates_from_the_prompt_alone(tmp_path, synthetic_dir, monkeypatch):
    seen = []
    original = R2GenForConditionalGeneration.generate

    def spy(self, *args, **kwargs):
        seen.append({key: value for key, value in kwargs.items() if isinstance(value, torch.Tensor)})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(R2GenForConditionalGeneration, "generate", spy)
    run(tmp_path, synthetic_dir, "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1", "--do_predict", "false")
    assert seen
    model_turn = torch.tensor([105, 4368, 107])  # "<start_of_turn>model\n": the last prompt tokens
    for inputs in seen:
        assert "labels" not in inputs
        ids = inputs["input_ids"]
        # Every row ends exactly where the report would begin: nothing of the reference is in the input.
        assert torch.equal(ids[:, -3:], model_turn.expand(ids.shape[0], 3)), ids[:, -6:]
        assert inputs["attention_mask"][:, -1].all()  # left padding


def test_trainer_computes_logits_at_report_positions_only(tmp_path, synthetic_dir, monkeypatch):
    """The Trainer asks for `loss_logits_only` by default, and the run's losses are those of full logits."""
    seen = []
    original = R2GenForConditionalGeneration.forward

    @functools.wraps(original)  # generate() reads forward's signature
    def spy(self, *args, **kwargs):
        if "labels" in kwargs:
            seen.append(kwargs.get("loss_logits_only", False))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(R2GenForConditionalGeneration, "forward", spy)
    flags = ["--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no", "--do_predict", "false"]
    label_only = losses(run(tmp_path / "label_only", synthetic_dir, *flags))
    assert seen and all(seen)
    seen.clear()
    full = losses(run(tmp_path / "full", synthetic_dir, *flags, "--loss_logits_only", "false"))
    assert seen and not any(seen)
    assert label_only == pytest.approx(full, rel=1e-4) and len(full) == 3


def test_generation_config_file_is_used_and_saved(tmp_path, synthetic_dir):
    """--generation_config (a GenerationConfig folder) sets how evaluations generate, and is what the saved
    model generates with; --generation_max_length still applies on top (tiny.yaml: 12 new tokens)."""
    from transformers import GenerationConfig

    GenerationConfig(num_beams=2, no_repeat_ngram_size=2, max_new_tokens=40, eos_token_id=[1, 106], pad_token_id=0).save_pretrained(tmp_path / "generation")
    flags = ["--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--do_predict", "false",
             "--generation_config", str(tmp_path / "generation"), "--generation_num_beams", "2",
             "--generation_min_new_tokens", "5", "--generation_repetition_penalty", "1.3"]
    output = run(tmp_path, synthetic_dir, *flags)
    saved = json.loads((output / "generation_config.json").read_text())
    assert saved["no_repeat_ngram_size"] == 2 and saved["num_beams"] == 2 and saved["max_new_tokens"] == 12, saved
    assert saved["min_new_tokens"] == 5
    assert saved["repetition_penalty"] == 1.3


@pytest.mark.parametrize("minimum", [-1, 13])
def test_generation_min_new_tokens_outside_the_length_limit_is_rejected(minimum):
    with pytest.raises(ValueError, match=f"--generation_min_new_tokens must be between 0 and --generation_max_length \\(12\\), got {minimum}"):
        R2GenTrainingArguments(output_dir="unused", generation_max_length=12, generation_min_new_tokens=minimum)


@pytest.mark.parametrize("penalty", [0.0, -1.0])
def test_nonpositive_generation_repetition_penalty_is_rejected(penalty):
    with pytest.raises(ValueError, match=f"--generation_repetition_penalty must be positive \\(1.0 = no penalty\\), got {penalty}"):
        R2GenTrainingArguments(output_dir="unused", generation_repetition_penalty=penalty)


class InterruptAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated kill at step {self.step}")


def adapter_weights(directory):
    return load_file(directory / "adapter_model.safetensors")


def test_kill_and_resume_gives_the_same_final_weights(tmp_path, synthetic_dir):
    flags = ["--max_steps", "6", "--save_steps", "3", "--eval_strategy", "no", "--do_predict", "false",
             "--merge_adapters", "false", "--lora_dropout", "0.0"]
    straight = run(tmp_path / "a", synthetic_dir, *flags)

    interrupted = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, synthetic_dir, *flags, callbacks=[InterruptAt(4)])
    assert (interrupted / "out" / "checkpoint-3").is_dir() and not (interrupted / "out" / "checkpoint-6").exists()
    resumed = run(interrupted, synthetic_dir, *flags, "--resume_from_checkpoint")

    expected, actual = adapter_weights(straight), adapter_weights(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)
    assert losses(resumed)[-3:] == pytest.approx(losses(straight)[-3:], rel=1e-5)


class PoisonAt(TrainerCallback):
    """Sets the projector's weights to NaN after `step`, so the next loss is NaN."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            for name, param in model.named_parameters():
                if "multi_modal_projector" in name and param.requires_grad:
                    param.data.fill_(float("nan"))


def test_non_finite_loss_stops_with_the_step_and_advice(tmp_path, synthetic_dir):
    with pytest.raises(FloatingPointError, match=r"at step 3\b.*bf16"):
        run(tmp_path, synthetic_dir, "--max_steps", "6", "--eval_strategy", "no", "--save_strategy", "no",
            "--do_predict", "false", callbacks=[PoisonAt(2)])


def test_help_documents_every_option():
    result = subprocess.run([sys.executable, str(ROOT / "finetune.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    import dataclasses

    for group in finetune.ARGUMENT_GROUPS:
        for field in dataclasses.fields(group):
            if field.init and not field.name.startswith("_"):
                assert f"--{field.name}" in result.stdout, field.name
    for name in ("--alignment", "--llm_lora", "--quantization", "--lm_model", "--vision_model", "--max_report_tokens"):
        assert name in result.stdout


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_recipes_parse(recipe):
    model_args, data_args, alignment, training_args = finetune.parse_arguments([str(ROOT / "configs" / recipe), "--use_cpu"])
    assert isinstance(training_args, R2GenTrainingArguments)
    assert training_args.output_dir and data_args.dataset_dir


def test_unknown_recipe_keys_are_rejected(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("dataset_dir: x\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        finetune.parse_arguments([str(recipe)])


def test_changed_defaults_carry_reasons():
    args = R2GenTrainingArguments(output_dir="x", use_cpu=True)
    assert args.predict_with_generate and not args.remove_unused_columns
    assert args.learning_rate == 1e-4 and str(args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, "value") else args.lr_scheduler_type) == "cosine"
    assert args.metric_for_best_model == "r2gen_score" and args.greater_is_better
    source = (ROOT / "r2gen_hf" / "training.py").read_text()
    for name in ("predict_with_generate", "remove_unused_columns", "learning_rate", "metric_for_best_model"):
        line = source.index(f"    {name}:")
        assert source[:line].rstrip().splitlines()[-1].strip().startswith("#"), f"{name} has no reason comment"


def test_optimizer_groups_are_split_by_module_keeping_their_settings():
    from r2gen_hf.training import split_groups_by_module

    names = ["model.vision_tower.layer.weight", "model.multi_modal_projector.linear_1.weight",
             "model.multi_modal_projector.linear_1.bias", "model.language_model.lora_A.weight"]
    named = [(name, torch.nn.Parameter(torch.zeros(1))) for name in names]
    params = [param for _, param in named]
    # The Trainer's grouping: decay / no decay, each with the optimizer's defaults filled in.
    optimizer = torch.optim.AdamW(
        [{"params": [params[0], params[1], params[3]], "weight_decay": 0.1}, {"params": [params[2]], "weight_decay": 0.0}],
        lr=1e-3, betas=(0.8, 0.9),
    )
    groups = split_groups_by_module(optimizer.param_groups, named, {"multi_modal_projector": 1e-2})
    by_param = {id(param): group for group in groups for param in group["params"]}
    assert [by_param[id(param)]["lr"] for param in params] == [1e-3, 1e-2, 1e-2, 1e-3]
    assert [by_param[id(param)]["weight_decay"] for param in params] == [0.1, 0.1, 0.0, 0.1]
    assert all(group["betas"] == (0.8, 0.9) for group in groups)  # the group's other settings travel with it
    assert sorted(len(group["params"]) for group in groups) == [1, 1, 2] and len(by_param) == 4
    assert groups[0]["lr"] == 1e-3  # the Trainer logs the first group's rate as the run's learning_rate
    assert optimizer.param_groups[0]["params"] == [params[0], params[1], params[3]]  # the input is not mutated


def test_module_learning_rates_follow_the_schedule(tmp_path, synthetic_dir):
    """--vision_learning_rate 0 leaves the (deep-trained) Swin untouched while the projector trains at its own
    peak rate, scaled by the same schedule as everything else."""

    class Record(TrainerCallback):
        def __init__(self):
            self.rates = []  # per step: {"projector" | "vision" | "other": lr}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            names = {id(p): n for n, p in model.named_parameters()}
            self.rates.append({
                ("projector" if "multi_modal_projector" in names[id(g["params"][0])] else
                 "vision" if "vision_tower" in names[id(g["params"][0])] else "other"): g["lr"]
                for g in optimizer.param_groups
            })

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    record = Record()
    run(tmp_path, synthetic_dir, "--alignment", "deep", "--max_steps", "3", "--eval_strategy", "no",
        "--save_strategy", "no", "--do_predict", "false", "--lr_scheduler_type", "linear",
        "--projector_learning_rate", "0.03", "--vision_learning_rate", "0", callbacks=[record])
    vision = [n for n in record.before if "vision_tower" in n]
    projector = [n for n in record.before if "multi_modal_projector" in n]
    assert vision and projector
    assert all(torch.equal(record.before[n], record.after[n]) for n in vision)
    assert any(not torch.equal(record.before[n], record.after[n]) for n in projector)
    # Each step, with a linear decay, every rate is its own peak times the same factor.
    first, second = record.rates[:2]
    assert first["vision"] == second["vision"] == 0.0
    assert first["projector"] / first["other"] == pytest.approx(0.03 / 0.003)
    decay = second["other"] / first["other"]
    assert decay < 1 and second["projector"] / first["projector"] == pytest.approx(decay)


def test_module_learning_rates_with_a_layerwise_optimizer_are_refused(monkeypatch):
    """Layer-wise optimizers (GaLore "layerwise", LOMO) hand the Trainer a dummy optimizer whose groups hold none of
    the model's parameters: the module rates cannot apply, which must be said, not silently ignored."""
    from transformers import Seq2SeqTrainer

    from r2gen_hf.training import R2GenTrainer

    def dummy_layerwise_optimizer(self, model=None):
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return self.optimizer

    monkeypatch.setattr(Seq2SeqTrainer, "create_optimizer", dummy_layerwise_optimizer)
    trainer = object.__new__(R2GenTrainer)  # only what create_optimizer reads
    trainer.args = R2GenTrainingArguments(output_dir="unused", projector_learning_rate=1e-2)
    trainer.model, trainer.optimizer = torch.nn.Linear(2, 2), None
    with pytest.raises(ValueError, match="need an optimizer with parameter groups; --optim adamw_torch"):
        trainer.create_optimizer()


def test_negative_module_learning_rate_is_rejected_at_parse_time():
    with pytest.raises(ValueError, match="--projector_learning_rate must be >= 0.*got -0.1"):
        R2GenTrainingArguments(output_dir="unused", projector_learning_rate=-0.1)
