import pytest
import torch
from transformers import AutoProcessor

import r2gen_hf  # noqa: F401  (registers the Auto classes)
from r2gen_hf import R2GenProcessor
from r2gen_hf.testing import tiny_config, tiny_processor

BOS, START_OF_TURN, END_OF_TURN, EOS, PAD = 2, 105, 106, 1, 0
BOI, EOI, IMAGE = 255_999, 256_000, 262_144
REPORTS = [
    "The heart is normal in size. No pleural effusion or pneumothorax.",
    "No acute cardiopulmonary disease; the model user wrote nothing else.",
]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(tiny_config())


def test_image_token_is_added_to_a_text_only_tokenizer(processor):
    assert processor.image_token_id == IMAGE
    assert processor.tokenizer.convert_ids_to_tokens(IMAGE) == "<image_soft_token>"
    assert processor.end_of_turn_token_id == END_OF_TURN


def test_prompt_layout_is_gemma3_chat_with_wrapped_image_block(processor, studies):
    batch = processor(images=studies([2]))
    ids = batch["input_ids"][0].tolist()
    assert ids[:2] == [BOS, START_OF_TURN]
    boi, eoi = ids.index(BOI), ids.index(EOI)
    assert ids[boi + 1 : eoi] == [IMAGE] * 16  # mean over views: one block of 16 for the study
    assert ids.count(IMAGE) == 16
    # Everything after <bos> is exactly the Gemma 3 chat text.
    expected = (
        "<start_of_turn>user\n<start_of_image>" + "<image_soft_token>" * 16 + "<end_of_image>"
        + processor.prompt + "<end_of_turn>\n<start_of_turn>model\n"
    )
    assert processor.tokenizer.decode(ids[1:]) == expected
    assert ids.count(END_OF_TURN) == 1 and ids.count(START_OF_TURN) == 2


@pytest.mark.parametrize("combination, views, expected", [("mean", [1, 3], [16, 16]), ("concat", [1, 3], [16, 48])])
def test_placeholder_count_per_study(combination, views, expected, studies):
    processor = tiny_processor(tiny_config(view_combination=combination))
    batch = processor(images=studies(views))
    assert (batch["input_ids"] == IMAGE).sum(dim=1).tolist() == expected


def test_labels_cover_report_and_end_of_turn_only(processor, studies):
    batch = processor(images=studies([2, 1]), text=REPORTS)
    for row, report in enumerate(REPORTS):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        supervised = labels != -100
        assert torch.equal(labels[supervised], ids[supervised])
        target = labels[supervised].tolist()
        assert target[-1] == END_OF_TURN
        assert processor.tokenizer.decode(target[:-1]) == report
        # The prompt (from <bos> through "<start_of_turn>model\n") is never supervised.
        first = int(supervised.nonzero()[0])
        assert ids[first - 1].item() == processor.tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
        assert START_OF_TURN in ids[:first].tolist() and IMAGE not in target
        # Right padding for training: pads at the end, masked and unsupervised.
        assert mask[: int(mask.sum())].all() and not mask[int(mask.sum()) :].any()
        assert (ids[mask == 0] == PAD).all() and (labels[mask == 0] == -100).all()


def test_prompts_for_generation_are_left_padded(studies):
    processor = tiny_processor(tiny_config(view_combination="concat"))
    batch = processor(images=studies([1, 2]))
    assert "labels" not in batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask[1].all() and not mask[0, :16].any() and mask[0, 16:].all()
    assert (ids[0, :16] == PAD).all() and ids[0, 16].item() == BOS
    # Both prompts end with the model turn opening, ready for generation.
    assert torch.equal(ids[0, -3:], ids[1, -3:])


def test_views_are_padded_and_masked(processor, studies):
    batch = processor(images=studies([1, 3]), text=REPORTS)
    pixel_values, view_mask = batch["pixel_values"], batch["view_mask"]
    assert pixel_values.shape == (2, 3, 3, 32, 32)
    assert view_mask.tolist() == [[True, False, False], [True, True, True]]
    assert (pixel_values[0, 1:] == 0).all() and pixel_values[0, 0].abs().sum() > 0


def test_report_truncation(processor, studies):
    full = processor(images=studies([1]), text=REPORTS[:1])
    cut = processor(images=studies([1]), text=REPORTS[:1], max_report_tokens=5)
    assert (cut["labels"] != -100).sum().item() == 5
    assert (full["labels"] != -100).sum().item() > 5
    assert END_OF_TURN not in cut["labels"][0].tolist()  # as R2GenGPT: a truncated report loses its end marker


def test_bad_inputs_name_the_problem(processor, studies):
    with pytest.raises(ValueError, match="Study 1 has no images"):
        processor(images=[studies([1])[0], []])
    with pytest.raises(ValueError, match="Report 0 is empty"):
        processor(images=studies([1]), text=["   "])
    with pytest.raises(ValueError, match="2 studies but 1 reports"):
        processor(images=studies([1, 1]), text=REPORTS[:1])


def test_batch_decode_returns_clean_reports(processor, studies):
    batch = processor(images=studies([1, 1]), text=REPORTS)
    # A generated sequence: prompt + report + <end_of_turn> + junk that must be cut.
    junk = processor.tokenizer(" trailing junk", add_special_tokens=False)["input_ids"]
    sequences = [row[mask.bool()].tolist() + junk + [EOS] for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert processor.batch_decode(sequences) == REPORTS
    # Report-only ids (e.g. generate output sliced after the prompt) decode the same way, pads skipped.
    report_only = processor.tokenizer(REPORTS[1], add_special_tokens=False)["input_ids"] + [END_OF_TURN, PAD, PAD]
    assert processor.decode(report_only) == REPORTS[1]
    assert "model user" in processor.decode(report_only)  # no .replace("model", "") of the seed guide
    # <eos> also ends a report.
    ends_at_eos = processor.tokenizer("Clear lungs.", add_special_tokens=False)["input_ids"] + [EOS] + junk
    assert processor.decode(ends_at_eos) == "Clear lungs."


def test_save_and_load_with_auto_processor(processor, studies, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, R2GenProcessor)
    assert (reloaded.image_seq_length, reloaded.view_combination, reloaded.prompt) == (
        processor.image_seq_length, processor.view_combination, processor.prompt
    )
    a = processor(images=studies([2, 1]), text=REPORTS)
    b = reloaded(images=studies([2, 1]), text=REPORTS)
    for key in a:
        assert torch.equal(a[key], b[key]), key
