"""generate.py and r2gen_hf.inference / r2gen_hf.checkpoints on a tiny checkpoint (CPU, offline)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import generate
from r2gen_hf import inference
from r2gen_hf.adapters import apply_alignment
from r2gen_hf.checkpoints import TINY_MODEL, load_trained_model, write_base_record
from r2gen_hf.testing import tiny_model_and_processor

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--num_beams", "1", "--max_new_tokens", "6", "--batch_size", "2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-checkpoint")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from data_prep import synthetic

    path = tmp_path_factory.mktemp("synthetic")
    assert synthetic.main(["--output", str(path), "--num_studies", "20", "--seed", "1", "--image_size", "48"]) == 0
    return path


@pytest.fixture
def image_files(tmp_path):
    files = []
    for index in range(5):
        path = tmp_path / "images" / f"view{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("L", (40, 48), 40 * index).save(path)
        files.append(path)
    return files


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_dataset_split_is_generated_and_scored(checkpoint, synthetic_dir, tmp_path, capsys):
    output = tmp_path / "preds.jsonl"
    assert generate.main(["--model", str(checkpoint), "--dataset_dir", str(synthetic_dir), "--split", "test", "--output", str(output), *FAST]) == 0
    from datasets import load_from_disk

    test = load_from_disk(str(synthetic_dir))["test"]
    rows = lines(output)
    assert [row["id"] for row in rows] == list(test["id"])
    assert [row["reference"] for row in rows] == list(test["report"])
    assert all(set(row) == {"id", "images", "report", "reference"} for row in rows)
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["studies"] == len(test) and {"bleu_4", "cider", "meteor", "ce_micro_f1"} <= summary["metrics"].keys()
    assert summary["metrics"]["labeler"].startswith("rule-based")
    assert summary["tokens_per_second"] > 0


@pytest.mark.parametrize(
    "flag, eager, fast",
    [("--cache_implementation", "dynamic", "static"), ("--compile_lm_head", "false", "true")],
    ids=["static_cache", "compiled_lm_head"],
)
def test_decoding_speed_options_give_the_same_reports(checkpoint, synthetic_dir, tmp_path, flag, eager, fast):
    """--cache_implementation static (the GPU fast path, compiled there) and --compile_lm_head (CPU decoding)
    write what the default decoding writes, greedy and with beams (two batch shapes: 3 studies, 3 x 2 beams)."""
    common = ["--model", str(checkpoint), "--dataset_dir", str(synthetic_dir), "--max_samples", "3",
              "--max_new_tokens", "8", "--min_new_tokens", "8", "--batch_size", "3", "--score", "false"]
    for beams in ("1", "2"):
        outputs = {}
        for value in (eager, fast):
            outputs[value] = tmp_path / f"{value}-{beams}.jsonl"
            assert generate.main([*common, "--num_beams", beams, flag, value, "--output", str(outputs[value])]) == 0
        assert lines(outputs[fast]) == lines(outputs[eager]) and len(lines(outputs[fast])) == 3


def test_compiled_lm_head_runs_eagerly_with_gradients_and_only_on_cpu():
    """With gradients enabled (training) the head is not the frozen compiled one: its weight gets a gradient,
    and a changed weight changes the logits at once."""
    model, _ = tiny_model_and_processor()
    inference.compile_lm_head(model)
    hidden = torch.randn(2, 1, model.config.text_config.hidden_size)
    logits = model.lm_head(hidden)
    logits.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    torch.testing.assert_close(model.lm_head(hidden), 2 * logits.detach())
    with torch.no_grad():
        torch.testing.assert_close(model.lm_head(hidden), 2 * logits.detach())  # compiled after the change: current weight

    meta_model = tiny_model_and_processor()[0].to("meta")
    with pytest.raises(ValueError, match="for CPU decoding; the LM head is on meta.*cache_implementation static"):
        inference.compile_lm_head(meta_model)


def test_images_folder_listing_and_rexrank(checkpoint, image_files, tmp_path):
    one = tmp_path / "one.jsonl"
    assert generate.main(["--model", str(checkpoint), "--images", str(image_files[0]), str(image_files[1]), "--output", str(one), *FAST]) == 0
    assert [row["images"] for row in lines(one)] == [[str(image_files[0]), str(image_files[1])]]

    folder = tmp_path / "studies"
    for study, views in {"s1": image_files[:2], "s2": image_files[2:3]}.items():
        (folder / study).mkdir(parents=True)
        for view in views:
            shutil.copy(view, folder / study / view.name)
    out = tmp_path / "folder.jsonl"
    assert generate.main(["--model", str(checkpoint), "--studies", str(folder), "--output", str(out), *FAST]) == 0
    assert [(row["id"], len(row["images"])) for row in lines(out)] == [("s1", 2), ("s2", 1)]

    listing = tmp_path / "studies.csv"
    listing.write_text("id,images,reference\na,images/view0.png|images/view1.png,normal heart .\nb,images/view2.png,\n")
    out = tmp_path / "csv.jsonl"
    assert generate.main(["--model", str(checkpoint), "--studies", str(listing), "--output", str(out), *FAST]) == 0
    rows = lines(out)
    assert [row["id"] for row in rows] == ["a", "b"] and rows[0]["reference"] == "normal heart ." and "reference" not in rows[1]

    rexrank_in = tmp_path / "rexrank.json"
    rexrank_in.write_text(json.dumps({
        "study-1": {"image_path": ["view0.png", "view1.png"], "key_image_path": "view0.png", "context": "Cough.", "section_findings": "Clear lungs."},
        "study-2": {"image_path": ["view2.png"], "key_image_path": "view2.png", "context": ""},
    }))
    rexrank_out = tmp_path / "rexrank_out.json"
    assert generate.main([
        "--model", str(checkpoint), "--rexrank_input", str(rexrank_in), "--img_root_dir", str(image_files[0].parent),
        "--rexrank_output", str(rexrank_out), "--output", str(tmp_path / "rexrank.jsonl"), *FAST,
    ]) == 0
    result = json.loads(rexrank_out.read_text())
    assert set(result) == {"study-1", "study-2"}
    assert all(isinstance(value["model_prediction"], str) for value in result.values())
    assert result["study-1"]["context"] == "Cough."  # the input is kept, the prediction added


def test_a_crash_loses_nothing_and_a_rerun_completes_without_duplicates(checkpoint, synthetic_dir, tmp_path, monkeypatch):
    output = tmp_path / "preds.jsonl"
    argv = ["--model", str(checkpoint), "--dataset_dir", str(synthetic_dir), "--split", "train", "--output", str(output),
            "--max_samples", "7", *FAST]
    calls = {"n": 0}
    from r2gen_hf.modeling_r2gen import R2GenForConditionalGeneration

    real = R2GenForConditionalGeneration.generate

    def crash_on_third_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(R2GenForConditionalGeneration, "generate", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate.main(argv)
    assert len(lines(output)) == 4  # two finished batches of 2 were written before the crash
    with open(output, "a") as handle:
        handle.write('{"id": "half-writ')  # a line cut short by the crash
    monkeypatch.setattr(R2GenForConditionalGeneration, "generate", real)
    assert generate.main(argv) == 0
    ids = [row["id"] for row in lines(output)]
    assert len(ids) == 7 and len(set(ids)) == 7


def test_bad_studies_are_reported_and_the_rest_still_run(checkpoint, image_files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(image_files[0].read_bytes()[:30])
    studies = [
        inference.StudyInput(id="good", image_paths=[str(image_files[0])]),
        inference.StudyInput(id="missing", image_paths=[str(tmp_path / "nope.png")]),
        inference.StudyInput(id="broken", image_paths=[str(broken)]),
        inference.StudyInput(id="empty", image_paths=[]),
        inference.StudyInput(id="good2", image_paths=[str(image_files[1])]),
    ]
    model, processor = load_trained_model(checkpoint)
    config = model.generation_config
    config.num_beams, config.max_new_tokens = 1, 4
    summary = inference.generate_reports(model, processor, studies, tmp_path / "out.jsonl", config, batch_size=5)
    assert [row["id"] for row in lines(tmp_path / "out.jsonl")] == ["good", "good2"]
    reasons = {entry["id"]: entry["reason"] for entry in summary.skipped}
    assert set(reasons) == {"missing", "broken", "empty"}
    assert "does not exist" in reasons["missing"] and "cannot read image" in reasons["broken"] and "no images" in reasons["empty"]


def test_adapter_and_merged_checkpoints_give_the_same_reports(tmp_path, image_files):
    model, processor = tiny_model_and_processor()
    model, _ = apply_alignment(model, alignment="delta", llm_lora=True)
    with torch.no_grad():  # make the adapters matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_dir, merged_dir = tmp_path / "adapter", tmp_path / "merged"
    model.save_pretrained(adapter_dir)
    processor.save_pretrained(adapter_dir)
    write_base_record(adapter_dir, None, None, TINY_MODEL, model.base_model.model.config)
    merged = model.merge_and_unload()
    merged.save_pretrained(merged_dir)
    processor.save_pretrained(merged_dir)

    studies = [inference.StudyInput(id=f"s{i}", image_paths=[str(path)]) for i, path in enumerate(image_files[:3])]
    reports = []
    for directory in (adapter_dir, merged_dir):
        loaded, loaded_processor = load_trained_model(directory)
        config = loaded.generation_config
        config.num_beams, config.max_new_tokens = 1, 8
        inference.generate_reports(loaded, loaded_processor, studies, tmp_path / f"{directory.name}.jsonl", config)
        reports.append([row["report"] for row in lines(tmp_path / f"{directory.name}.jsonl")])
    assert reports[0] == reports[1]
    base_only, base_processor = tiny_model_and_processor()
    config = base_only.generation_config
    config.num_beams, config.max_new_tokens = 1, 8
    inference.generate_reports(base_only, base_processor, studies, tmp_path / "base.jsonl", config)
    assert [row["report"] for row in lines(tmp_path / "base.jsonl")] != reports[0]  # the adapters were applied


def test_adapter_checkpoint_reloads_in_its_training_dtype_with_float32_trained_parts(tmp_path):
    """A bf16 run keeps its trained parts in float32 (`upcast_trainable_parameters`); reloaded in bf16, the
    projector must come back with exactly the saved float32 weights, not rounded to bf16 by peft's copy."""
    model, processor = tiny_model_and_processor()
    model, _ = apply_alignment(model, alignment="shallow", llm_lora=True)
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "modules_to_save" in n}
    assert saved and all(p.dtype == torch.float32 for p in saved.values())
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    write_base_record(tmp_path, None, None, TINY_MODEL, model.base_model.model.config, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "r2gen_base.json").read_text())["dtype"] == "bfloat16"

    loaded, _ = load_trained_model(tmp_path, dtype=torch.bfloat16, merge=False)
    reloaded = dict(loaded.named_parameters())
    for name, weight in saved.items():
        assert reloaded[name].dtype == torch.float32 and torch.equal(reloaded[name], weight), name
    assert loaded.get_input_embeddings().weight.dtype == torch.bfloat16  # the frozen base as trained
    assert any(p.dtype == torch.float32 for n, p in loaded.named_parameters() if "lora_" in n)


def test_repo_id_loads_offline_from_the_hub_cache(checkpoint, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--r2gen-tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(checkpoint, snapshot)
    (cache / "models--someone--r2gen-tiny" / "refs").mkdir(parents=True)
    (cache / "models--someone--r2gen-tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = load_trained_model("someone/r2gen-tiny", cache_dir=str(cache))
    reference, _ = load_trained_model(checkpoint)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(OSError, match="not in the local Hub cache.*hf download someone/not-cached"):
        load_trained_model("someone/not-cached", cache_dir=str(cache))


def test_exactly_one_input_and_help(tmp_path):
    with pytest.raises(ValueError, match="exactly one input"):
        generate.main(["--model", "x", "--output", str(tmp_path / "o.jsonl")])
    result = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    import dataclasses

    for field in dataclasses.fields(generate.GenerateArguments):
        assert f"--{field.name}" in result.stdout, field.name
