"""Multi-process runs on CPU, launched as subprocesses the way a user launches them (DESIGN.md §6).

- Evaluation with 2 processes scores every study exactly once and gives exactly the metrics and predictions
  of 1 process, although the distributed sampler repeats a study to even out the last batch and left-pads
  a study that runs alone in one process.
- DDP (`accelerate launch --multi_gpu`), DeepSpeed ZeRO-2 and ZeRO-3 with CPU offload, each with 2 processes,
  train, evaluate and save a model: the adapter, and a merged model that `from_pretrained` loads and that
  equals the starting weights with the saved adapter merged in by peft.
- QLoRA (4-bit NF4 LM + LLM LoRA) trains through finetune.py (in-process: bitsandbytes needs no launcher).

On a machine without GPUs: `--multi_gpu` with the Trainer's `--use_cpu` gives 2 processes on gloo, while
accelerate's own `--cpu` silently runs ONE process. The DeepSpeed runs use the repository's accelerate configs
(written for 4 GPUs) with `--num_processes 2` on the command line. The first DeepSpeed run JIT-compiles its
CPU ops (~60 s) into ~/.cache/torch_extensions; later runs reuse them.
"""

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

import finetune
from r2gen_hf import R2GenConfig, R2GenForConditionalGeneration, R2GenProcessor


ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
FINETUNE = str(ROOT / "finetune.py")
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Under CI=true transformers lets its records reach the root logger as well as its own handler: every
    # Trainer line was printed twice. The runs here check that each is printed once, in CI and out of it.
    "CI": "true",
}
# The Trainer logs "***** Running Evaluation *****" once per process when replicas log at info level too:
# how a test sees that a run really had two processes.
LOG_EVERY_PROCESS = ["--log_level", "info", "--log_level_replica", "info", "--disable_tqdm", "true"]
# Validation and test studies that keep one view of their two, so that evaluation prompts differ in length
# under view_combination="concat" (16 image tokens per view) and batches are really left-padded. With 7 test
# studies, batch size 2 and 2 processes, the second process's last batch is [study 6, study 0 again]: study
# 6 (one view) is then left-padded beside a two-view study, where alone in 1 process it is not padded.
ONE_VIEW_ROWS = (1, 6)
# Short runs: the point is that each distributed mode trains, evaluates and saves, not what it learns.
TRAIN_FLAGS = ["--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--max_eval_samples", "4",
               "--do_predict", "false", "--use_cpu", "--disable_tqdm", "true"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(*options: str) -> list[str]:
    """`accelerate launch` of this interpreter's environment, on a free port (runs must not collide)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()), *options]


def ddp_launch() -> list[str]:
    return accelerate_launch("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                             "--dynamo_backend", "no")


def deepspeed_launch(accelerate_config: str) -> list[str]:
    # The shipped configs say 4 processes (GPUs); two CPU processes here. The Trainer's --use_cpu gives gloo.
    return accelerate_launch("--config_file", str(ROOT / "configs" / "accelerate" / accelerate_config),
                             "--num_processes", "2")


def tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def run(command: list[str], timeout: float) -> str:
    """Runs `command` from the repository root; returns its stdout + stderr, or fails with their tails. The
    command gets its own process group, so that a timeout also ends the workers a launcher started."""
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"Timed out after {timeout} s: {shlex.join(command)}\n--- stdout\n{tail(stdout)}\n--- stderr\n{tail(stderr)}"
        )
    assert process.returncode == 0, (
        f"Exit code {process.returncode}: {shlex.join(command)}\n--- stdout\n{tail(stdout)}\n--- stderr\n{tail(stderr)}"
    )
    return stdout + stderr


def two_views() -> list:
    """A study of two small grayscale views (noise): enough to run a model."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    return [Image.fromarray(view, mode="L") for view in pixels]


def count_evaluating_processes(output: str) -> int:
    return output.count("***** Running Evaluation *****")


def read_evaluation(directory: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((directory / "metrics.json").read_text())
    rows = [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]
    return metrics, rows


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    """The synthetic set (28 train / 4 validation / 8 test studies), with one view left in ONE_VIEW_ROWS of
    the validation and test splits."""
    from datasets import load_from_disk

    from data_prep import synthetic

    root = tmp_path_factory.mktemp("synthetic")
    assert synthetic.main(["--output", str(root / "two_views"), "--num_studies", "40", "--seed", "0",
                           "--image_size", "64"]) == 0
    dataset = load_from_disk(str(root / "two_views"))

    def keep_one_view(row, index):
        keep = 1 if index in ONE_VIEW_ROWS else len(row["images"])
        return {"images": row["images"][:keep], "views": row["views"][:keep]}

    for split in ("validation", "test"):
        dataset[split] = dataset[split].map(keep_one_view, with_indices=True)
    dataset.save_to_disk(str(root / "data"))
    return root / "data"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_dir):
    """A saved tiny R2Gen model (view_combination concat) whose reports are varied strings of report words:
    the random model with the embeddings (tied to the LM head) of the words in the training reports scaled
    up, so that greedy decoding picks among them by the study's images. Metrics are then small but non-zero,
    and every study gets its own prediction, so that a mix-up of studies across processes would show."""
    from datasets import load_from_disk

    from r2gen_hf.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(view_combination="concat")
    reports = list(load_from_disk(str(synthetic_dir))["train"]["report"])
    tokenized = processor.tokenizer(reports, add_special_tokens=False)["input_ids"]
    report_tokens = sorted({token for tokens in tokenized for token in tokens})
    with torch.no_grad():
        model.get_input_embeddings().weight[report_tokens] *= 5
    path = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pretrained_parts(tmp_path_factory):
    """A tiny Swin (with its image processor) and a tiny Gemma 3 text model (with the real Gemma 3
    tokenizer), saved as ordinary checkpoints: the starting point of the recipes (--vision_model, --lm_model)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, SwinConfig, SwinModel

    from r2gen_hf.testing import TINY_GEMMA3_TEXT, TINY_SWIN, gemma3_tokenizer, tiny_image_processor

    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    SwinModel(SwinConfig(**{k: v for k, v in TINY_SWIN.items() if k != "model_type"})).save_pretrained(root / "swin")
    tiny_image_processor().save_pretrained(root / "swin")
    text = Gemma3ForCausalLM(Gemma3TextConfig(**{k: v for k, v in TINY_GEMMA3_TEXT.items() if k != "model_type"}))
    text.save_pretrained(root / "text")
    gemma3_tokenizer().save_pretrained(root / "text")
    return root / "swin", root / "text"


# -- checks of a finished training run -----------------------------------------------------------------


def assert_trained_evaluated_and_saved(output: Path, base_model: R2GenForConditionalGeneration, processes: int) -> None:
    """Two logged finite losses; one checkpoint with an RNG state per process; an evaluation of the 4
    validation studies; the adapter and processor; and a merged model that loads, has real (non-empty)
    weights, equals `base_model` with the saved adapter merged in by peft, and runs."""
    from peft import PeftModel

    state = json.loads((output / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 2 and len(losses) == 2 and all(math.isfinite(loss) for loss in losses), losses
    rng_states = sorted(path.name for path in (output / "checkpoint-2").glob("rng_state*.pth"))
    assert rng_states == [f"rng_state_{rank}.pth" for rank in range(processes)], rng_states

    metrics, rows = read_evaluation(output / "eval-step-2")
    assert metrics["num_studies"] == len(rows) == len({row["id"] for row in rows}) == 4

    assert (output / "processor_config.json").exists() and (output / "generation_config.json").exists()
    adapter = load_file(output / "adapter_model.safetensors")
    lora_b = {name: tensor for name, tensor in adapter.items() if "lora_B" in name}
    assert lora_b and all(tensor.numel() > 0 for tensor in adapter.values())
    assert any(tensor.abs().sum() > 0 for tensor in lora_b.values()), "LoRA B is still zero: no training step"

    merged = R2GenForConditionalGeneration.from_pretrained(output / "merged").eval()
    state_dict = merged.state_dict()
    assert not any("lora_" in name or "modules_to_save" in name for name in state_dict)
    empty = [name for name, tensor in state_dict.items() if tensor.numel() == 0]
    assert not empty, f"empty weights in the merged model (unconsolidated ZeRO-3 shards?): {empty[:5]}"

    expected = PeftModel.from_pretrained(base_model, output).merge_and_unload().state_dict()
    assert state_dict.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(state_dict[name], tensor, rtol=1e-5, atol=1e-6, msg=name)

    processor = R2GenProcessor.from_pretrained(output / "merged")
    batch = processor(images=[two_views()], text=["the lungs are clear ."])
    with torch.no_grad():
        assert torch.isfinite(merged(**batch).loss)


# -- tests -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_process_evaluation_gives_exactly_the_one_process_metrics(tmp_path, synthetic_dir, checkpoint):
    flags = [str(TINY), "--model_name_or_path", str(checkpoint), "--llm_lora", "false", "--do_train", "false",
             "--do_eval", "true", "--do_predict", "false", "--eval_split", "test", "--max_eval_samples", "7",
             "--per_device_eval_batch_size", "2", "--dataset_dir", str(synthetic_dir), "--use_cpu", *LOG_EVERY_PROCESS]
    one = run([sys.executable, FINETUNE, *flags, "--output_dir", str(tmp_path / "one")], timeout=300)
    two = run([*ddp_launch(), FINETUNE, *flags, "--output_dir", str(tmp_path / "two")], timeout=300)
    assert count_evaluating_processes(one) == 1 and count_evaluating_processes(two) == 2

    metrics_one, rows_one = read_evaluation(tmp_path / "one" / "eval")
    metrics_two, rows_two = read_evaluation(tmp_path / "two" / "eval")
    # Every study once, in split order, with the same report: padding and the repeated study change nothing.
    from datasets import load_from_disk

    test_ids = load_from_disk(str(synthetic_dir))["test"]["id"][:7]
    assert [row["id"] for row in rows_one] == [row["id"] for row in rows_two] == test_ids
    assert rows_two == rows_one
    assert len({row["prediction"] for row in rows_one}) > 1, "every study got the same report: a weak comparison"
    assert metrics_two == metrics_one and metrics_one["num_studies"] == 7
    assert metrics_one["meteor"] > 0 and metrics_one["rouge_l"] > 0 and metrics_one["cider"] > 0, metrics_one

    # Counting the repeated study would have changed the scores: the comparison above would see it.
    from r2gen_hf.training import score_predictions

    predictions = [row["prediction"] for row in rows_one]
    references = [row["reference"] for row in rows_one]
    with_repeat = score_predictions(predictions + predictions[:1], references + references[:1])
    assert with_repeat != {key: value for key, value in metrics_one.items() if key != "num_studies"}


@pytest.mark.slow
def test_ddp_two_processes_train_evaluate_and_save(tmp_path, synthetic_dir):
    """tiny.yaml as it is (the tiny model, shallow alignment + LLM LoRA, merged copy) under DDP."""
    from r2gen_hf.testing import tiny_model_and_processor

    output = tmp_path / "out"
    run([*ddp_launch(), FINETUNE, str(TINY), "--dataset_dir", str(synthetic_dir), "--output_dir", str(output), *TRAIN_FLAGS],
        timeout=300)
    base, _ = tiny_model_and_processor()  # the same seeded initial weights as the run's r2gen_hf:tiny
    assert_trained_evaluated_and_saved(output, base, processes=2)


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_train_evaluate_and_save(tmp_path, synthetic_dir, checkpoint):
    """configs/accelerate/deepspeed_zero2.yaml (configs/deepspeed/zero2.json), continuing a saved R2Gen model."""
    output = tmp_path / "out"
    run([*deepspeed_launch("deepspeed_zero2.yaml"), FINETUNE, str(TINY), "--model_name_or_path", str(checkpoint),
         "--dataset_dir", str(synthetic_dir), "--output_dir", str(output), *TRAIN_FLAGS], timeout=600)
    assert (output / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own checkpoint: it really ran
    assert_trained_evaluated_and_saved(output, R2GenForConditionalGeneration.from_pretrained(checkpoint), processes=2)


@pytest.mark.slow
def test_deepspeed_zero3_offload_two_processes_train_evaluate_and_save(tmp_path, synthetic_dir, pretrained_parts):
    """configs/accelerate/deepspeed_zero3_offload.yaml (parameters and optimizer offloaded to CPU, zero.Init
    on), composing the model from a pretrained vision encoder and Gemma 3 as the recipes do. Every weight is
    partitioned across the processes: the saved adapter and merged model must hold the gathered weights."""
    swin, text = pretrained_parts
    recipe = yaml.safe_load(TINY.read_text())
    del recipe["model_name_or_path"]  # compose from --vision_model and --lm_model instead of the tiny model
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    output = tmp_path / "out"
    run([*deepspeed_launch("deepspeed_zero3_offload.yaml"), FINETUNE, str(tmp_path / "recipe.yaml"),
         "--vision_model", str(swin), "--lm_model", str(text), "--dataset_dir", str(synthetic_dir),
         "--output_dir", str(output), *TRAIN_FLAGS], timeout=600)
    shards = sorted(path.name for path in (output / "checkpoint-2" / "global_step2").glob("*model_states.pt"))
    assert len(shards) == 2, shards  # one ZeRO-3 partition per process
    base = R2GenForConditionalGeneration.from_vision_text_pretrained(swin, text)
    assert_trained_evaluated_and_saved(output, base, processes=2)


QUANTIZABLE_TEXT_WIDTHS = {"hidden_size": 64, "intermediate_size": 128, "head_dim": 32, "query_pre_attn_scalar": 32}


class CountLinear4bit(TrainerCallback):
    """Records how many bitsandbytes 4-bit layers the model has when training begins."""

    layers: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import bitsandbytes as bnb

        self.layers = sum(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())


@pytest.mark.slow
def test_qlora_trains_through_finetune(tmp_path, synthetic_dir):
    """--quantization 4bit --llm_lora on a saved model: the LM's linear layers train as NF4 + LoRA on CPU.
    bitsandbytes' CPU 4-bit path needs in_features divisible by 64 and out_features by 32 (see
    test_quantization.py), so the tiny decoder is widened to hidden 64 / attention 2 x 32 / FFN 128."""
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import BitsAndBytesConfig

    from r2gen_hf.testing import TINY_GEMMA3_TEXT, TINY_SWIN, tiny_processor

    config = R2GenConfig(vision_config=dict(TINY_SWIN), text_config={**TINY_GEMMA3_TEXT, **QUANTIZABLE_TEXT_WIDTHS})
    torch.manual_seed(0)
    R2GenForConditionalGeneration(config).save_pretrained(tmp_path / "base")
    tiny_processor(config).save_pretrained(tmp_path / "base")

    output = tmp_path / "out"
    callback = CountLinear4bit()
    # No merged copy: merging into 4-bit weights requantizes them (peft warns); QLoRA recipes keep the adapter.
    assert finetune.main([str(TINY), "--model_name_or_path", str(tmp_path / "base"), "--quantization", "4bit",
                          "--llm_lora", "true", "--merge_adapters", "false", "--max_steps", "3", "--eval_steps", "3",
                          "--save_steps", "3", "--max_eval_samples", "2", "--do_predict", "false",
                          "--dataset_dir", str(synthetic_dir), "--output_dir", str(output)], callbacks=[callback]) == 0
    assert callback.layers == 7 * config.text_config.num_hidden_layers  # q k v o gate up down, per layer

    state = json.loads((output / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), losses
    metrics, rows = read_evaluation(output / "eval-step-3")
    assert metrics["num_studies"] == len(rows) == 2

    # The adapter loads onto the 4-bit base and generates.
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = R2GenForConditionalGeneration.from_pretrained(tmp_path / "base", quantization_config=quantization)
    model = PeftModel.from_pretrained(base, output).eval()
    adapter = load_file(output / "adapter_model.safetensors")
    lora_b = [name for name in adapter if "language_model" in name and "lora_B" in name]
    assert len(lora_b) == 7 * config.text_config.num_hidden_layers
    assert any(adapter[name].abs().sum() > 0 for name in lora_b)
    processor = R2GenProcessor.from_pretrained(output)
    prompt = processor(images=[two_views()])
    generated = model.generate(**prompt, max_new_tokens=3, num_beams=1, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
