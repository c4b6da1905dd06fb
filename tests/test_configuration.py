import json

import pytest
from transformers import AutoConfig, SwinConfig, TimmWrapperConfig
from transformers.models.gemma3 import Gemma3TextConfig

from r2gen_hf import R2GenConfig
from r2gen_hf.testing import TINY_GEMMA3_TEXT, TINY_SWIN, tiny_config


def test_defaults_are_swin_b_and_gemma3_4b_text():
    config = R2GenConfig()
    assert isinstance(config.vision_config, SwinConfig)
    assert isinstance(config.text_config, Gemma3TextConfig)
    # Swin-B/224: 7 x 7 = 49 tokens of width 1024.
    assert config.vision_config.hidden_size == 1024
    assert config.image_seq_length == 49
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (2560, 34, 8, 4)
    assert (text.head_dim, text.intermediate_size, text.vocab_size, text.sliding_window) == (256, 10240, 262_208, 1024)
    assert (config.image_token_id, config.boi_token_id, config.eoi_token_id, config.end_of_turn_token_id) == (
        262_144, 255_999, 256_000, 106
    )
    assert config.view_combination == "mean" and config.projector_type == "linear"
    assert config.prompt.startswith("Generate a comprehensive and detailed diagnosis report")


def test_plain_dict_sub_configs():
    config = R2GenConfig(vision_config=dict(TINY_SWIN), text_config=dict(TINY_GEMMA3_TEXT))
    assert isinstance(config.vision_config, SwinConfig)
    assert isinstance(config.text_config, Gemma3TextConfig)
    assert config.vision_config.embed_dim == TINY_SWIN["embed_dim"]
    assert config.text_config.hidden_size == TINY_GEMMA3_TEXT["hidden_size"]
    # 32 px / patch 4 = 8 x 8, merged once -> 4 x 4.
    assert config.image_seq_length == 16


@pytest.mark.parametrize("image_size, depths, expected", [(224, [2, 2, 18, 2], 49), (384, [2, 2, 18, 2], 144), (32, [1], 64)])
def test_swin_token_count_follows_geometry(image_size, depths, expected):
    vision = {**TINY_SWIN, "image_size": image_size, "depths": depths, "num_heads": [1] * len(depths)}
    assert R2GenConfig(vision_config=vision, text_config=dict(TINY_GEMMA3_TEXT)).image_seq_length == expected


def test_round_trip_through_dict_and_disk(tmp_path):
    config = tiny_config(view_combination="concat", projector_type="mlp", prompt="Describe the study.")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "r2gen"
    assert saved["vision_config"]["model_type"] == "swin"
    assert saved["text_config"]["model_type"] == "gemma3_text"

    def without_path(config_dict):
        return {key: value for key, value in config_dict.items() if key != "_name_or_path"}

    for reloaded in (R2GenConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path), R2GenConfig.from_dict(config.to_dict())):
        assert isinstance(reloaded, R2GenConfig)
        assert without_path(reloaded.to_dict()) == without_path(config.to_dict())
    assert reloaded.view_combination == "concat" and reloaded.projector_type == "mlp"


def test_timm_backbone_needs_token_count():
    timm = TimmWrapperConfig(architecture="convnext_atto", do_pooling=False)
    with pytest.raises(ValueError, match="image_seq_length"):
        R2GenConfig(vision_config=timm, text_config=dict(TINY_GEMMA3_TEXT))
    config = R2GenConfig(vision_config=timm, text_config=dict(TINY_GEMMA3_TEXT), image_seq_length=49)
    assert config.image_seq_length == 49
    assert R2GenConfig.from_dict(config.to_dict()).vision_config.architecture == "convnext_atto"


@pytest.mark.parametrize("field, value", [("view_combination", "sum"), ("projector_type", "conv")])
def test_invalid_choices_are_rejected(field, value):
    with pytest.raises(Exception, match=field):
        tiny_config(**{field: value})
