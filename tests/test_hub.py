"""Publishing (r2gen_hf.hub) against a fake Hub: what would be uploaded is complete, safetensors-only, loads by
repo id from a Hub-cache layout offline, and carries a model card with the measured metrics; tokens never show."""

import copy
import hashlib
import importlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import CommitInfo, ModelCard, RepoUrl, snapshot_download
from huggingface_hub import errors as hub_errors
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

from r2gen_hf import hub
from r2gen_hf.adapters import apply_alignment
from r2gen_hf.checkpoints import TINY_MODEL, load_trained_model, write_base_record
from r2gen_hf.testing import tiny_model_and_processor


TOKEN = "hf_" + "FakeWriteToken0123456789abcdefghij"  # the shape of a real user access token
COMMAND = f"python finetune.py configs/iu_xray_gemma3_4b.yaml --max_steps 6 --hub_token {TOKEN} --output_dir runs/iu"
BASE_MODELS = {"vision encoder": "microsoft/swin-base-patch4-window7-224", "language model": "google/gemma-3-4b-it"}
ALIGNMENT = {"alignment": "delta", "vision_lora_r": 16, "vision_lora_alpha": 16, "llm_lora": True, "llm_lora_r": 16,
             "llm_lora_alpha": 16, "llm_lora_target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.1}
TEST_METRICS = {"bleu_1": 0.4321, "bleu_2": 0.3012, "bleu_3": 0.2203, "bleu_4": 0.1687, "meteor": 0.1954,
                "rouge_l": 0.3688, "cider": 0.4415, "ce_micro_f1": 0.2468, "r2gen_score": 0.3051, "num_studies": 7}
BEST_EVAL = {"bleu_1": 0.4111, "bleu_2": 0.2911, "bleu_3": 0.2111, "bleu_4": 0.1511, "meteor": 0.1811,
             "rouge_l": 0.3511, "cider": 0.3911, "num_studies": 5}
LAST_EVAL = {**BEST_EVAL, "bleu_1": 0.3999, "bleu_4": 0.1399}


# -- a fake Hub ----------------------------------------------------------------------------------------


class FakeHub:
    """`HfApi`'s create_repo / upload_folder, writing what would be uploaded into a Hub-cache layout
    (`models--org--name/snapshots/<sha>/` + `refs/main`) and filtering files as huggingface_hub does."""

    def __init__(self, cache_dir: Path, token: str | None = None, fail_with: Exception | None = None):
        self.cache_dir, self.token, self.fail_with = Path(cache_dir), token, fail_with
        self.calls: list[tuple] = []
        self.uploaded: list[str] = []

    def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, repo_type=None, **kwargs):
        self.calls.append(("create_repo", repo_id, private, exist_ok, repo_type))
        if self.fail_with is not None:
            raise self.fail_with
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message=None, token=None, repo_type=None,
                      revision=None, allow_patterns=None, ignore_patterns=None, **kwargs):
        self.calls.append(("upload_folder", repo_id, commit_message))
        root = Path(folder_path)
        ignore = ([ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])) + DEFAULT_IGNORE_PATTERNS
        present = sorted(path.relative_to(root).as_posix() for path in root.glob("**/*") if path.is_file())
        self.uploaded = list(filter_repo_objects(present, allow_patterns=allow_patterns, ignore_patterns=ignore))
        if "README.md" in self.uploaded:  # the Hub validates the card's metadata before accepting a commit
            ModelCard((root / "README.md").read_text(), ignore_metadata_errors=False)
        sha = hashlib.sha1("\n".join(self.uploaded).encode()).hexdigest()
        repo_dir = self.cache_dir / f"models--{repo_id.replace('/', '--')}"
        for name in self.uploaded:
            target = repo_dir / "snapshots" / sha / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, target)
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(sha)
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}", commit_message=commit_message or "",
            commit_description="", oid=sha,
        )

    def snapshot(self, repo_id: str) -> Path:
        repo_dir = self.cache_dir / f"models--{repo_id.replace('/', '--')}"
        return repo_dir / "snapshots" / (repo_dir / "refs" / "main").read_text()


def http_error(status: int, server_message: str) -> hub_errors.HfHubHTTPError:
    httpx = importlib.import_module(hub_errors.Response.__module__.split(".")[0])  # httpx (hub 1.x) / httpx2
    response = httpx.Response(status, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
    return hub_errors.HfHubHTTPError(f"{status} Client Error", response=response, server_message=server_message)


# -- checkpoints like finetune.py's output_dir -----------------------------------------------------------


def write_json(path: Path, values: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2) + "\n")


def add_run_files(directory: Path) -> None:
    """What a finetune run leaves beside the model: training state, checkpoints, evaluations, logs."""
    (directory / "training_args.bin").write_bytes(b"\x80\x04pickled TrainingArguments")
    checkpoint = directory / "checkpoint-3"
    checkpoint.mkdir()
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (checkpoint / name).write_bytes(b"\x80\x04pickle")
    shutil.copyfile(directory / "tokenizer_config.json", checkpoint / "tokenizer_config.json")
    write_json(checkpoint / "trainer_state.json", {"global_step": 3})
    for step, metrics in ((3, BEST_EVAL), (6, LAST_EVAL)):
        write_json(directory / f"eval-step-{step}" / "metrics.json", {**metrics, "r2gen_score": 0.2})
        (directory / f"eval-step-{step}" / "predictions.jsonl").write_text(json.dumps({"id": "s1", "prediction": "x", "reference": "y"}) + "\n")
    write_json(directory / "test" / "metrics.json", TEST_METRICS)
    (directory / "test" / "predictions.jsonl").write_text(json.dumps({"id": "s9", "prediction": "x", "reference": "y"}) + "\n")
    write_json(directory / "test_results.json", {f"test_{key}": value for key, value in TEST_METRICS.items()} | {"test_runtime": 1.5})
    write_json(directory / "all_results.json", {f"test_{key}": value for key, value in TEST_METRICS.items()} | {"train_loss": 2.5})
    write_json(directory / "trainer_state.json", {"best_global_step": 3, "best_model_checkpoint": str(checkpoint), "global_step": 6})
    (directory / "runs").mkdir()
    (directory / "runs" / "events.out.tfevents.1.host").write_bytes(b"tensorboard")
    (directory / "train.log").write_text("step 1 loss 3.2\n")


def study_inputs(processor):
    rng = np.random.default_rng(0)
    images = [[Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8))] for _ in range(2)]
    return processor(images=images, text=["the heart is normal in size .", "no pleural effusion ."])


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("full")
    model, processor = tiny_model_and_processor()
    with torch.no_grad():
        logits = model(**study_inputs(processor)).logits
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    model.generation_config.save_pretrained(directory)
    add_run_files(directory)
    return directory, logits


@pytest.fixture(scope="module")
def adapter_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("adapter")
    base, processor = tiny_model_and_processor()
    config = copy.deepcopy(base.config)
    model, _ = apply_alignment(base, alignment="shallow", llm_lora=True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking adapters: LoRA B and the projector's trained copy away from their init
        for name, param in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    model.eval()
    with torch.no_grad():
        logits = model(**study_inputs(processor)).logits
    model.save_pretrained(directory)  # peft also writes a placeholder README.md, which publish replaces
    processor.save_pretrained(directory)
    model.generation_config.save_pretrained(directory)
    write_base_record(directory, None, None, TINY_MODEL, config)
    add_run_files(directory)
    return directory, logits


@pytest.fixture
def copy_of(tmp_path):
    def make(source: Path, ignore=None) -> Path:
        target = tmp_path / "checkpoint"
        shutil.copytree(source, target, ignore=ignore)
        return target

    return make


RUN_FILES = {"eval-step-3/metrics.json", "eval-step-6/metrics.json", "test/metrics.json", "test_results.json",
             "all_results.json", "trainer_state.json"}
PROCESSOR_FILES = {"processor_config.json", "tokenizer.json", "tokenizer_config.json"}


def assert_no_excluded(files):
    for name in files:
        assert not name.startswith(("checkpoint-", "runs/", "merged/")), name
        assert not name.endswith((".bin", ".pt", ".pth", ".log", "predictions.jsonl")), name


# -- tests ---------------------------------------------------------------------------------------------


def test_full_checkpoint_is_uploaded_complete_and_loads_by_repo_id(full_checkpoint, copy_of, tmp_path, monkeypatch, capsys, caplog):
    source, logits = full_checkpoint
    directory = copy_of(source)
    fake = FakeHub(tmp_path / "hub")
    caplog.set_level(logging.DEBUG)
    result = hub.publish(
        directory, "someone/r2gen-tiny", token=TOKEN, api=fake, base_models=BASE_MODELS, dataset="IU-Xray (test: 7 studies)",
        alignment=ALIGNMENT, command=COMMAND,
    )

    expected = {"README.md", "config.json", "model.safetensors", "generation_config.json", *PROCESSOR_FILES, *RUN_FILES}
    assert set(fake.uploaded) == expected
    assert result.files == sorted(expected)
    assert_no_excluded(fake.uploaded)
    assert fake.calls[0] == ("create_repo", "someone/r2gen-tiny", True, True, "model")  # private by default
    assert result.repo_id == "someone/r2gen-tiny" and result.commit_url.startswith("https://huggingface.co/someone/r2gen-tiny/commit/")

    # Loadable by repo id, offline, from the Hub-cache layout: the same logits.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = load_trained_model("someone/r2gen-tiny", cache_dir=str(tmp_path / "hub"))
    with torch.no_grad():
        assert torch.equal(model(**study_inputs(processor)).logits, logits)

    # The card's metadata, as the Hub reads it.
    card = ModelCard.load(fake.snapshot("someone/r2gen-tiny") / "README.md")
    assert card.data.license == "gemma" and card.data.library_name == "transformers"
    assert card.data.base_model == list(BASE_MODELS.values())
    assert card.data.pipeline_tag == "image-text-to-text"
    assert {"radiology", "report-generation", "chest-x-ray", "r2gen", "gemma3"} <= set(card.data.tags)
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("test", "BLEU-4")] == 0.1687 and results[("test", "CE F1 (micro, 14 obs.)")] == 0.2468
    assert results[("validation", "BLEU-1")] == 0.4111  # the best step (3), not the last (6)

    # The token is in no output, log, card or uploaded file.
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    for name in fake.uploaded:
        assert TOKEN.encode() not in (directory / name).read_bytes(), name


def test_model_card_says_what_the_model_is_and_what_it_is_not(full_checkpoint, copy_of):
    directory = copy_of(full_checkpoint[0])
    card = hub.build_model_card(
        directory, repo_id="someone/r2gen-tiny", base_models=BASE_MODELS, dataset="IU-Xray (test: 7 studies)",
        alignment=ALIGNMENT, command=COMMAND,
    )
    body = card.split("\n---\n", 1)[1]
    test_row = next(line for line in body.splitlines() if line.startswith("| test |"))
    assert test_row.split(" | ")[1:10] == ["7", "0.4321", "0.3012", "0.2203", "0.1687", "0.1954", "0.3688", "0.4415", "0.2468"]
    assert "`test/metrics.json`" in test_row
    validation_row = next(line for line in body.splitlines() if line.startswith("| validation (step 3) |"))
    assert "0.4111" in validation_row and "0.3999" not in body
    assert "| Split | Studies | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr | CE F1 (micro, 14 obs.) |" in body
    assert "Gemma Terms of Use" in body and "https://ai.google.dev/gemma/terms" in body
    assert "Apache-2.0" in body and "microsoft/swin" in body
    assert "Not for clinical use" in body and "Hallucinations" in body
    assert "delta" in body and "r=16, alpha=16" in body and "IU-Xray" in body
    assert 'load_trained_model("someone/r2gen-tiny")' in body and "trust_remote_code" in body
    assert COMMAND.replace(TOKEN, "***") in body and TOKEN not in card  # the exact command, its token redacted
    # MedGemma is governed by its own terms, not the Gemma Terms of Use.
    medgemma = hub.build_model_card(directory, repo_id="a/b", base_models={"language model": "google/medgemma-4b-it"}, metrics={})
    assert "license: other" in medgemma and "health-ai-developer-foundations" in medgemma
    assert "No evaluation results were recorded" in medgemma


def test_adapter_checkpoint_is_uploaded_with_its_base_record_and_loads_by_repo_id(adapter_checkpoint, copy_of, tmp_path, monkeypatch):
    source, logits = adapter_checkpoint
    directory = copy_of(source)
    fake = FakeHub(tmp_path / "hub", token=TOKEN)
    hub.publish(directory, "someone/r2gen-tiny-lora", api=fake, dataset="synthetic")

    expected = {"README.md", "adapter_config.json", "adapter_model.safetensors", "r2gen_base.json", "generation_config.json",
                *PROCESSOR_FILES, *RUN_FILES}
    assert set(fake.uploaded) == expected
    assert_no_excluded(fake.uploaded)
    snapshot = fake.snapshot("someone/r2gen-tiny-lora")
    card = (snapshot / "README.md").read_text()
    assert "Not for clinical use" in card and "peft adapter" in card  # ours, not peft's placeholder
    assert "shallow" in card and "r=16, alpha=16" in card  # read from adapter_config.json

    # The repo as `hf download someone/r2gen-tiny-lora` leaves it in the cache, loaded offline: the same logits.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = snapshot_download("someone/r2gen-tiny-lora", cache_dir=str(tmp_path / "hub"))
    model, processor = load_trained_model(cached)
    with torch.no_grad():
        torch.testing.assert_close(model(**study_inputs(processor)).logits, logits, atol=1e-5, rtol=1e-5)


def test_adapter_repo_id_loads_offline_from_a_downloaded_cache(adapter_checkpoint, copy_of, tmp_path, monkeypatch):
    directory = copy_of(adapter_checkpoint[0])
    fake = FakeHub(tmp_path / "hub", token=TOKEN)
    hub.publish(directory, "someone/r2gen-tiny-lora", api=fake, dataset="synthetic")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = load_trained_model("someone/r2gen-tiny-lora", cache_dir=str(tmp_path / "hub"))
    with torch.no_grad():
        torch.testing.assert_close(model(**study_inputs(processor)).logits, adapter_checkpoint[1], atol=1e-5, rtol=1e-5)


def test_pickle_files_are_refused_before_anything_is_uploaded(full_checkpoint, copy_of, tmp_path):
    directory = copy_of(full_checkpoint[0])
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    fake = FakeHub(tmp_path / "hub")
    with pytest.raises(hub.CheckpointNotPublishableError, match=r"pickle files \(pytorch_model.bin\).*safetensors"):
        hub.publish(directory, "someone/r2gen-tiny", token=TOKEN, api=fake)
    assert fake.calls == [] and not (tmp_path / "hub").exists()


def test_incomplete_checkpoints_are_refused(full_checkpoint, adapter_checkpoint, copy_of, tmp_path):
    fake = FakeHub(tmp_path / "hub")
    no_processor = copy_of(full_checkpoint[0], ignore=shutil.ignore_patterns("processor_config.json", "tokenizer*"))
    with pytest.raises(hub.CheckpointNotPublishableError, match="processor_config.json.*\n.*tokenizer.json") as error:
        hub.publish(no_processor, "someone/r2gen-tiny", token=TOKEN, api=fake)
    assert "nothing was uploaded" in str(error.value)
    shutil.rmtree(no_processor)
    no_record = copy_of(adapter_checkpoint[0], ignore=shutil.ignore_patterns("r2gen_base.json", "generation_config.json"))
    with pytest.raises(hub.CheckpointNotPublishableError, match="r2gen_base.json.*\n.*generation_config.json"):
        hub.publish(no_record, "someone/r2gen-tiny", token=TOKEN, api=fake)
    assert fake.calls == []


@pytest.mark.parametrize("status", [401, 403])
def test_access_errors_say_how_to_log_in_and_never_show_the_token(full_checkpoint, copy_of, tmp_path, status, capsys, caplog):
    directory = copy_of(full_checkpoint[0])
    fake = FakeHub(tmp_path / "hub", fail_with=http_error(status, f"Invalid credentials in Authorization header: Bearer {TOKEN}"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(hub.HubAuthenticationError) as error:
        hub.publish(directory, "someone/r2gen-tiny", token=TOKEN, api=fake)
    message = str(error.value)
    assert f"HTTP {status}" in message and "hf auth login" in message and "HF_TOKEN" in message
    assert "write access" in message and "'someone' namespace" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # the original error is not chained
    captured = capsys.readouterr()
    assert TOKEN not in message + captured.out + captured.err + caplog.text


def test_no_token_is_one_clear_error(full_checkpoint, copy_of, tmp_path, monkeypatch):
    directory = copy_of(full_checkpoint[0])
    monkeypatch.setattr(hub, "get_token", lambda: None)
    fake = FakeHub(tmp_path / "hub")
    with pytest.raises(hub.HubAuthenticationError, match="no Hugging Face token was found.*hf auth login.*HF_TOKEN"):
        hub.publish(directory, "someone/r2gen-tiny", api=fake)
    assert fake.calls == []


def test_command_line_dry_run_and_help(adapter_checkpoint, copy_of, capsys):
    directory = copy_of(adapter_checkpoint[0])
    assert hub.main([str(directory), "someone/r2gen-tiny-lora", "--dry_run", "--dataset", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "adapter_model.safetensors" in out and "r2gen_base.json" in out and "training_args.bin" not in out
    assert "Not for clinical use" in (directory / "README.md").read_text()
    (directory / "optimizer.pt").write_bytes(b"pickle")  # excluded by name, like the Trainer's own training state
    (directory / "weights.ckpt").write_bytes(b"pickle")
    assert hub.main([str(directory), "someone/r2gen-tiny-lora", "--dry_run"]) == 1
    assert "weights.ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        hub.main(["--help"])
    assert exit_info.value.code == 0
    assert "--dry_run" in capsys.readouterr().out


def test_commands_are_redacted():
    argv = ["finetune.py", "--hub_token", TOKEN, "--hub-token=abc", "--learning_rate", "1e-4", f"--note={TOKEN}"]
    assert hub.redact_command(argv) == "finetune.py --hub_token '***' '--hub-token=***' --learning_rate 1e-4 '--note=***'"
    assert hub.redact(f"token {TOKEN} and hf_transformers path", None) == "token *** and hf_transformers path"


def test_the_merged_copy_is_described_by_its_run(adapter_checkpoint, copy_of):
    directory = copy_of(adapter_checkpoint[0])
    (directory / "merged").mkdir()  # finetune.py --merge_adapters: a full model beside the adapter
    card = hub.build_model_card(directory / "merged", repo_id="someone/r2gen-tiny-merged", dataset="synthetic")
    assert "`../test/metrics.json`" in card and "0.4321" in card
    assert "LoRA adapters merged in" in card and "shallow" in card and "r2gen_hf.testing" in card
