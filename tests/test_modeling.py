import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, LogitsProcessor, LogitsProcessorList

from r2gen_hf import R2GenConfig, R2GenForConditionalGeneration, R2GenModel, modeling_r2gen
from r2gen_hf.loss_utils import linear_cross_entropy
from r2gen_hf.testing import tiny_config, tiny_model_and_processor

END_OF_TURN, EOS, PAD, IMAGE = 106, 1, 0, 262_144
REPORTS = ["The heart is normal in size. No pleural effusion.", "Small left pleural effusion. No pneumothorax."]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_processor()


class ForceTokenAt(LogitsProcessor):
    """Makes `token` the only choice once `step` new tokens have been generated."""

    def __init__(self, prompt_length: int, step: int, token: int):
        self.prompt_length, self.step, self.token = prompt_length, step, token

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_length == self.step:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token] = 0.0
        return scores


def test_forward_shapes_and_image_features(tiny, studies):
    model, processor = tiny
    batch = processor(images=studies([2, 1]), text=REPORTS)
    out = model(**batch)
    assert out.logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
    assert out.image_hidden_states.shape == (2, 16, model.config.text_config.hidden_size)  # mean: one block per study
    assert torch.isfinite(out.loss)


def test_loss_is_cross_entropy_on_report_tokens_only(tiny, studies):
    model, processor = tiny
    batch = processor(images=studies([2, 1]), text=REPORTS)
    out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    supervised = labels != -100
    expected = F.cross_entropy(logits[supervised], labels[supervised])
    torch.testing.assert_close(out.loss, expected)
    # The prompt's tokens carry no loss: changing the prompt's labels to anything else changes nothing, and
    # the number of supervised tokens is exactly report + <end_of_turn>.
    n_report = sum(len(processor.report_ids(r)) for r in REPORTS)
    assert int(supervised.sum()) == n_report


@pytest.mark.parametrize("fused", [True, False], ids=["fused_head", "hooked_head"])
@pytest.mark.parametrize("num_items_in_batch", [None, 40])
def test_loss_logits_only_gives_the_full_logits_loss_and_gradients(num_items_in_batch, fused, studies, monkeypatch):
    """The LM head at report positions only: the same loss and the same gradients as full-sequence logits,
    with the Trainer's gradient-accumulation normaliser (num_items_in_batch) and without; with the head fused
    into the loss (a plain linear head) and through the head module (one with a forward hook)."""
    model, processor = tiny_model_and_processor(seed=1)
    model.config.text_config.final_logit_softcapping = 30.0  # Gemma 2's; checks the soft-cap is kept
    head_calls, fused_calls = [], []
    if fused:
        def spy(hidden_states, *args, **kwargs):
            fused_calls.append(hidden_states.shape)
            return linear_cross_entropy(hidden_states, *args, **kwargs)

        monkeypatch.setattr(modeling_r2gen, "linear_cross_entropy", spy)
    else:
        model.lm_head.register_forward_hook(lambda module, args, output: head_calls.append(args[0].shape))
    batch = processor(images=studies([2, 1]), text=REPORTS)
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": torch.tensor(num_items_in_batch)}

    losses, grads = [], []
    for loss_logits_only in (False, True):
        model.zero_grad()
        out = model(**batch, loss_logits_only=loss_logits_only, **extra)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        assert (out.logits is None) == loss_logits_only
    torch.testing.assert_close(losses[1], losses[0])
    supervised = int((batch["labels"][:, 1:] != -100).sum())
    width = model.config.text_config.hidden_size
    if fused:  # the full-logits pass runs the head module, the loss_logits_only pass the fused loss
        assert fused_calls == [(supervised, width)]
    else:
        assert head_calls == [(*batch["input_ids"].shape, width), (supervised, width)]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)
    if num_items_in_batch is not None:  # the normaliser is really used: sum / 40, not the mean
        assert supervised != num_items_in_batch
        mean = model(**batch, loss_logits_only=True).loss
        torch.testing.assert_close(losses[1], mean.detach() * supervised / num_items_in_batch)


def test_loss_logits_only_needs_labels(tiny, studies):
    model, processor = tiny
    batch = processor(images=studies([1]), text=REPORTS[:1])
    batch.pop("labels")
    with pytest.raises(ValueError, match="needs `labels`"):
        model(**batch, loss_logits_only=True)


def test_placeholder_count_mismatch_raises_with_both_counts(tiny, studies):
    model, processor = tiny
    batch = processor(images=studies([1]), text=REPORTS[:1])
    first = int((batch["input_ids"][0] == IMAGE).nonzero()[0])
    batch["input_ids"][0, first] = PAD
    with pytest.raises(ValueError, match=r"15 `<image_soft_token>` placeholders.*16 visual tokens"):
        model(**batch)
    with pytest.raises(ValueError, match="no `pixel_values`"):
        model(input_ids=processor(images=studies([1]))["input_ids"])


def test_padding_views_do_not_change_a_study(studies):
    for combination in ("mean", "concat"):
        model, processor = tiny_model_and_processor(view_combination=combination)
        images = studies([1, 3], seed=3)
        together = processor(images=images, text=["Normal chest.", "Normal chest."])
        alone = processor(images=images[:1], text=["Normal chest."])
        with torch.no_grad():
            logits_together = model(**together).logits[0]
            logits_alone = model(**alone).logits[0]
        n = alone["input_ids"].shape[1]
        torch.testing.assert_close(logits_together[:n], logits_alone, atol=1e-5, rtol=1e-5)


def test_mean_averages_encoder_tokens_over_views(tiny, studies):
    model, processor = tiny
    view = studies([1], seed=5)[0][0]
    once = processor(images=[[view]])
    twice = processor(images=[[view, view]])
    other = processor(images=[[view, studies([1], seed=6)[0][0]]])
    with torch.no_grad():
        features_once = model.get_image_features(once["pixel_values"], once["view_mask"])
        features_twice = model.get_image_features(twice["pixel_values"], twice["view_mask"])
        features_other = model.get_image_features(other["pixel_values"], other["view_mask"])
    torch.testing.assert_close(features_once, features_twice, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(features_once, features_other, atol=1e-3)


def test_concat_keeps_one_block_per_view(studies):
    model, processor = tiny_model_and_processor(view_combination="concat")
    batch = processor(images=studies([2, 1]))
    with torch.no_grad():
        features = model.get_image_features(batch["pixel_values"], batch["view_mask"])
    assert features.shape == (3, 16, model.config.text_config.hidden_size)


def test_save_and_load_give_identical_logits(tiny, studies, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert "model.multi_modal_projector.linear_1.weight" in load_file(tmp_path / "model.safetensors")
    batch = processor(images=studies([2, 1]), text=REPORTS)
    with torch.no_grad():
        expected = model(**batch).logits
    for loader in (R2GenForConditionalGeneration, AutoModelForImageTextToText):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(reloaded, R2GenForConditionalGeneration)
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=0)
    assert reloaded.generation_config.eos_token_id == [EOS, END_OF_TURN]


def test_auto_classes_resolve_r2gen():
    settings = {k: v for k, v in tiny_config().to_dict().items() if k != "model_type"}
    config = AutoConfig.for_model("r2gen", **settings)
    assert isinstance(config, R2GenConfig)
    assert type(AutoModel.from_config(config)) is R2GenModel
    assert type(AutoModelForImageTextToText.from_config(config)) is R2GenForConditionalGeneration


def test_generation_stops_at_end_of_turn_and_eos(tiny, studies):
    model, processor = tiny
    batch = processor(images=studies([1, 2]))
    prompt_length = batch["input_ids"].shape[1]
    for stop in (END_OF_TURN, EOS):
        for num_beams in (1, 3):
            force = LogitsProcessorList([ForceTokenAt(prompt_length, 3, stop)])
            sequences = model.generate(**batch, max_new_tokens=12, num_beams=num_beams, logits_processor=force)
            new = sequences[:, prompt_length:]
            assert new.shape[1] == 4, (stop, num_beams)  # 3 tokens, then the stop token, then nothing
            assert (new[:, 3] == stop).all()
            assert all(len(report.split()) >= 1 for report in processor.batch_decode(sequences))


def test_default_generation_config_is_consistent():
    model, _ = tiny_model_and_processor()
    config = model.generation_config
    assert config.eos_token_id == [EOS, END_OF_TURN] and config.pad_token_id == PAD and config.bos_token_id == 2
    assert config.do_sample is False and config.num_beams == 3
    config.validate(strict=True)  # no contradictory settings such as temperature without sampling


def test_batched_greedy_equals_one_by_one(studies):
    # concat gives prompts of different lengths, so the batch is really left-padded.
    model, processor = tiny_model_and_processor(view_combination="concat", seed=1)
    images = studies([2, 1, 3], seed=2)
    settings = dict(max_new_tokens=10, num_beams=1, do_sample=False, repetition_penalty=1.0)
    batch = processor(images=images)
    batched = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1] :]
    for index, study in enumerate(images):
        single = processor(images=[study])
        alone = model.generate(**single, **settings)[0, single["input_ids"].shape[1] :]
        assert batched[index, : len(alone)].tolist() == alone.tolist()


def test_kv_cache_and_beam_search(tiny, studies):
    model, processor = tiny
    batch = processor(images=studies([2, 1], seed=4))
    settings = dict(max_new_tokens=8, num_beams=1, repetition_penalty=1.0)
    with_cache = model.generate(**batch, use_cache=True, **settings)
    without_cache = model.generate(**batch, use_cache=False, **settings)
    assert torch.equal(with_cache, without_cache)
    beams = model.generate(**batch, max_new_tokens=8, num_beams=3)
    assert beams.shape[0] == 2 and beams.shape[1] > batch["input_ids"].shape[1]


@pytest.mark.parametrize("vision", ["timm_swin", "timm_convnext"])
def test_timm_backbones(vision, studies):
    model, processor = tiny_model_and_processor(vision=vision)
    assert type(model.vision_tower).__name__ == "TimmWrapperModel"
    batch = processor(images=studies([2, 1]), text=REPORTS)
    out = model(**batch)
    assert out.image_hidden_states.shape == (2, 16, model.config.text_config.hidden_size)
    out.loss.backward()
    assert model.multi_modal_projector.linear_1.weight.grad is not None
    prompts = processor(images=studies([1]))
    assert model.generate(**prompts, max_new_tokens=3, num_beams=2).shape[1] > prompts["input_ids"].shape[1]


@pytest.mark.parametrize("vision", ["swin", "timm_swin"])
def test_gradient_checkpointing_on_both_towers(vision, studies):
    model, processor = tiny_model_and_processor(vision=vision)
    assert model.supports_gradient_checkpointing
    assert "Gemma3DecoderLayer" in model._no_split_modules
    batch = processor(images=studies([2, 1]), text=REPORTS)

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(0)
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    loss_plain, grads_plain = loss_and_grads()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.language_model.layers)
    vision_flags = [
        getattr(module, "gradient_checkpointing", False) or getattr(module, "grad_checkpointing", False)
        for module in model.model.vision_tower.modules()
    ]
    assert any(vision_flags)
    loss_ckpt, grads_ckpt = loss_and_grads()
    torch.testing.assert_close(loss_ckpt, loss_plain)
    assert grads_ckpt.keys() == grads_plain.keys()
    assert any(".vision_tower." in name for name in grads_plain)
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], atol=1e-5, rtol=1e-4, msg=name)
    model.activation_checkpointing_disable()
    assert not any(getattr(m, "grad_checkpointing", False) or getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_attention_is_causal(tiny, studies):
    """A later token must never change an earlier position's logits (the report would leak into training)."""
    model, processor = tiny
    batch = processor(images=studies([1]), text=REPORTS[:1])
    changed = batch["input_ids"].clone()
    changed[0, -2] = 1000
    with torch.no_grad():
        original = model(**batch).logits
        edited = model(**{**batch, "input_ids": changed}).logits
    torch.testing.assert_close(edited[0, :-2], original[0, :-2], rtol=0, atol=0)
    assert not torch.allclose(edited[0, -1], original[0, -1])
