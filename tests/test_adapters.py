import pytest
import torch
from peft import PeftModel

from r2gen_hf import R2GenForConditionalGeneration
from r2gen_hf.adapters import AlignmentConfig, apply_alignment, count_trainable_parameters, merge_adapters
from r2gen_hf.testing import tiny_model_and_processor

REPORTS = ["The heart is normal in size. No pleural effusion.", "Small left pleural effusion. No pneumothorax."]
LLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def trainable_names(model):
    return {name for name, param in model.named_parameters() if param.requires_grad}


def expected_trainable(name: str, alignment: str, llm_lora: bool) -> bool:
    """The specification of DESIGN.md §4, written independently of the implementation."""
    if "multi_modal_projector" in name:
        return "original_module" not in name  # peft trains a copy of modules_to_save
    if "vision_tower" in name:
        if alignment == "deep":
            return "original_module" not in name
        return alignment == "delta" and "lora_" in name and any(f".{t}." in name for t in ("q_proj", "v_proj"))
    if "language_model" in name:
        return llm_lora and "lora_" in name and any(f".{t}." in name for t in LLM_TARGETS)
    return False


def train_step(model, batch, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    model.train()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()
    return loss.item()


@pytest.mark.parametrize("alignment", ["shallow", "delta", "deep"])
@pytest.mark.parametrize("llm_lora", [False, True])
def test_alignment_modes_train_exactly_their_parts(alignment, llm_lora, studies):
    model, processor = tiny_model_and_processor()
    model, counts = apply_alignment(model, alignment=alignment, llm_lora=llm_lora)
    assert isinstance(model, PeftModel) == (alignment == "delta" or llm_lora)

    names = {name for name, _ in model.named_parameters()}
    wrong = {name for name in names if (name in trainable_names(model)) != expected_trainable(name, alignment, llm_lora)}
    assert not wrong, sorted(wrong)[:10]
    assert any("vision_tower" in n and "lora_" in n for n in trainable_names(model)) == (alignment == "delta")
    assert any("language_model" in n and "lora_" in n for n in trainable_names(model)) == llm_lora
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.by_part.get("lm_head", (0, 0))[0] == 0  # tied to the embeddings, counted once

    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    loss = train_step(model, processor(images=studies([2, 1]), text=REPORTS))
    assert torch.isfinite(torch.tensor(loss))
    for name, param in model.named_parameters():
        if param.requires_grad:
            if "lora_A" in name:  # LoRA A gets no gradient while B is still zero; B must move
                continue
            assert not torch.equal(param, before[name]), f"trainable {name} did not change"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"


def test_counts_are_reported_per_part():
    model, _ = tiny_model_and_processor()
    model, counts = apply_alignment(model, AlignmentConfig(alignment="deep"))
    vision_trainable, vision_total = counts.by_part["vision_tower"]
    assert vision_trainable == vision_total > 0
    assert counts.by_part["language_model"][0] == 0
    assert counts == count_trainable_parameters(model)
    assert "trainable parameters" in str(counts)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="alignment must be one of"):
        AlignmentConfig(alignment="full")


def test_lora_adapters_save_load_and_merge(studies, tmp_path):
    base, processor = tiny_model_and_processor(seed=3)
    base.save_pretrained(tmp_path / "base")
    model, _ = apply_alignment(base, alignment="delta", llm_lora=True)
    batch = processor(images=studies([2, 1]), text=REPORTS)
    train_step(model, batch)
    with torch.no_grad():
        expected = model(**batch).logits

    model.save_pretrained(tmp_path / "adapter")
    saved = {path.name for path in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= saved

    reloaded = PeftModel.from_pretrained(
        R2GenForConditionalGeneration.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=1e-5, atol=1e-5)

    merged = merge_adapters(reloaded)
    assert isinstance(merged, R2GenForConditionalGeneration)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-4, atol=1e-4)

    merged.save_pretrained(tmp_path / "merged")
    from_disk = R2GenForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(from_disk(**batch).logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("alignment", ["shallow", "delta", "deep"])
def test_bf16_frozen_weights_train_fp32_parts_with_and_without_autocast(alignment, studies):
    """A bf16 model keeps its frozen weights in bf16 while every trained part holds fp32 master weights (an
    AdamW step of 1e-5 on a bf16 weight of ~0.1 would be lost); training runs with and without autocast."""
    model, processor = tiny_model_and_processor()
    model = model.to(torch.bfloat16)
    model, _ = apply_alignment(model, alignment=alignment, llm_lora=True)
    trained = trainable_names(model)
    dtypes = {name: param.dtype for name, param in model.named_parameters()}
    assert {dtypes[name] for name in trained} == {torch.float32}
    assert {dtype for name, dtype in dtypes.items() if name not in trained} == {torch.bfloat16}

    batch = processor(images=studies([2, 1]), text=REPORTS)
    projector = next(p for n, p in model.named_parameters() if "multi_modal_projector" in n and p.requires_grad)
    before = projector.detach().clone()
    assert torch.isfinite(torch.tensor(train_step(model, batch, lr=1e-5)))
    assert not torch.equal(projector, before)  # a 1e-5 step survives in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(torch.tensor(train_step(model, batch)))
