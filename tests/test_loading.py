"""`R2GenForConditionalGeneration.from_vision_text_pretrained` and `r2gen_hf.loading`.

Every source checkpoint is a tiny model saved into a temporary directory; the Hub is never contacted (the gated-repo
tests make transformers' own download call raise the errors huggingface_hub raises). Source weights are randomised
(not left at their init values, which are zeros / ones for norms) so that "loaded" and "left at init" differ.
"""

import importlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import hf_raise_for_status
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    SiglipVisionConfig,
    SwinConfig,
    SwinModel,
)

import r2gen_hf.loading as loading
import r2gen_hf.modeling_r2gen as modeling_r2gen
from r2gen_hf import GatedModelAccessError, R2GenForConditionalGeneration
from r2gen_hf.loading import explain_gated_access, resolve_dtype, split_prefixed_kwargs
from r2gen_hf.testing import TINY_GEMMA3_TEXT, TINY_IMAGE_SIZE, TINY_SWIN, tiny_vision_config


GATED_REPO = "google/gemma-3-4b-it"

# huggingface_hub 1.x speaks httpx and 2.x httpx2: build fake responses with the package its errors derive from.
httpx = importlib.import_module(
    next(cls for cls in HfHubHTTPError.__mro__ if cls.__name__ == "HTTPError").__module__.split(".")[0]
)

# Where a Gemma 3 multimodal checkpoint keeps its parts: the layout of the Hub files of google/gemma-3-4b-it (which
# transformers 5.24's `save_pretrained` also writes, reversing its own renaming) and the layout of transformers 5's
# module tree (`Gemma3ForConditionalGeneration.model.language_model`, ...).
MULTIMODAL_LAYOUTS = {
    "hub": {"text": "language_model.model.", "vision": "vision_tower.", "projector": "multi_modal_projector."},
    "transformers5": {
        "text": "model.language_model.",
        "vision": "model.vision_tower.",
        "projector": "model.multi_modal_projector.",
    },
}


# ----------------------------------------------------------------------------------------------------------------
# Tiny source checkpoints
# ----------------------------------------------------------------------------------------------------------------


def text_config(**overrides) -> Gemma3TextConfig:
    kwargs = {key: value for key, value in TINY_GEMMA3_TEXT.items() if key != "model_type"}
    return Gemma3TextConfig(**{**kwargs, **overrides})


def swin_config() -> SwinConfig:
    return SwinConfig(**{key: value for key, value in TINY_SWIN.items() if key != "model_type"})


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Gives every parameter distinct random values (norm weights start at 0 or 1, biases at 0)."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def assert_same_state(loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    loaded_state, source_state = loaded.state_dict(), source.state_dict()
    assert sorted(loaded_state) == sorted(source_state)
    for key, value in source_state.items():
        assert torch.equal(loaded_state[key].cpu(), value), f"{key} differs from the source checkpoint"


def rename_keys(path: Path, rename) -> dict[str, torch.Tensor]:
    """Rewrites a safetensors file with `rename(key)` applied to every key (dropping keys mapped to None)."""
    state = load_file(path)
    renamed = {rename(key): value for key, value in state.items()}
    renamed.pop(None, None)
    save_file(renamed, path, metadata={"format": "pt"})
    return renamed


def text_prompt_ids(batch: int = 2, length: int = 12) -> torch.LongTensor:
    """`<bos>` + ordinary tokens: no `<image_soft_token>` anywhere."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 50_000, (batch, length), generator=generator)
    ids[:, 0] = 2
    return ids


@pytest.fixture(scope="module")
def swin_source(tmp_path_factory) -> tuple[SwinModel, Path]:
    model = randomise(SwinModel(swin_config()), seed=10)
    path = tmp_path_factory.mktemp("swin")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def text_source(tmp_path_factory) -> tuple[Gemma3ForCausalLM, Path]:
    model = randomise(Gemma3ForCausalLM(text_config()), seed=11)
    path = tmp_path_factory.mktemp("gemma3_text")
    model.save_pretrained(path)
    return model, path


@pytest.fixture
def text_copy(text_source, tmp_path) -> Path:
    """A copy of the text checkpoint that a test may damage."""
    return Path(shutil.copytree(text_source[1], tmp_path / "gemma3_text"))


@pytest.fixture(scope="module")
def multimodal_source(tmp_path_factory) -> tuple[Gemma3ForConditionalGeneration, Path]:
    siglip = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    config = Gemma3Config(text_config=text_config(), vision_config=siglip, mm_tokens_per_image=4)
    model = randomise(Gemma3ForConditionalGeneration(config), seed=12)
    path = tmp_path_factory.mktemp("gemma3_multimodal")
    model.save_pretrained(path)
    return model, path


def multimodal_checkpoint(source_dir: Path, target_dir: Path, layout: str) -> Path:
    """A copy of the multimodal checkpoint with its weights stored under `layout`'s key prefixes, whichever
    layout `save_pretrained` wrote."""
    shutil.copytree(source_dir, target_dir)
    all_prefixes = sorted(
        ((part, prefix) for prefixes in MULTIMODAL_LAYOUTS.values() for part, prefix in prefixes.items()),
        key=lambda item: -len(item[1]),
    )

    def rename(key: str) -> str:
        for part, prefix in all_prefixes:
            if key.startswith(prefix):
                return MULTIMODAL_LAYOUTS[layout][part] + key[len(prefix) :]
        raise AssertionError(f"Unexpected key {key!r} in the saved Gemma3ForConditionalGeneration")

    renamed = rename_keys(target_dir / "model.safetensors", rename)
    prefixes = MULTIMODAL_LAYOUTS[layout]
    # The file holds all three parts, in this layout only.
    assert {part for part, prefix in prefixes.items() if any(key.startswith(prefix) for key in renamed)} == {
        "text",
        "vision",
        "projector",
    }
    assert all(key.startswith(tuple(prefixes.values())) for key in renamed)
    return target_dir


# ----------------------------------------------------------------------------------------------------------------
# 1. Text-only Gemma 3 checkpoint
# ----------------------------------------------------------------------------------------------------------------


def test_text_only_checkpoint_loads_every_weight(swin_source, text_source):
    swin, swin_dir = swin_source
    source_lm, text_dir = text_source

    model = R2GenForConditionalGeneration.from_vision_text_pretrained(swin_dir, text_dir).eval()

    assert_same_state(model.model.language_model, source_lm.model)
    assert_same_state(model.model.vision_tower, swin)
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, source_lm.lm_head.weight)
    assert model.config.text_config.vocab_size == source_lm.config.vocab_size
    assert model.config.image_seq_length == 16  # derived from the Swin config: (32 / 4 / 2) ** 2

    pixels = torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    input_ids = text_prompt_ids()
    with torch.no_grad():
        torch.testing.assert_close(model.model.encode_views(pixels), swin(pixels).last_hidden_state)
        expected = source_lm(input_ids=input_ids).logits
        torch.testing.assert_close(model(input_ids=input_ids).logits, expected)
        # Causal: the first position cannot see the tokens after it.
        torch.testing.assert_close(model(input_ids=input_ids[:, :1]).logits[:, 0], expected[:, 0])


# ----------------------------------------------------------------------------------------------------------------
# 2. Multimodal Gemma 3 checkpoint (SigLIP + projector + language model)
# ----------------------------------------------------------------------------------------------------------------


def test_save_pretrained_writes_the_hub_layout(multimodal_source):
    """What the layout tests below start from: transformers 5.24 saves `Gemma3ForConditionalGeneration` with
    the keys of the Hub files (`language_model.model.*`), not with its module names (`model.language_model.*`)."""
    keys = load_file(multimodal_source[1] / "model.safetensors").keys()
    assert any(key.startswith("language_model.model.layers.") for key in keys)
    assert not any(key.startswith("model.") for key in keys)


@pytest.mark.parametrize("layout", sorted(MULTIMODAL_LAYOUTS))
def test_multimodal_checkpoint_gives_its_language_model_only(swin_source, multimodal_source, tmp_path, layout):
    swin, swin_dir = swin_source
    source, source_dir = multimodal_source
    text_dir = multimodal_checkpoint(source_dir, tmp_path / layout, layout)

    model = R2GenForConditionalGeneration.from_vision_text_pretrained(swin_dir, text_dir).eval()

    assert_same_state(model.model.language_model, source.model.language_model)
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert model.config.text_config.model_type == "gemma3_text"
    # Nothing of SigLIP or of Gemma 3's own projector: exactly Swin + our projector + the language model.
    expected_keys = (
        {f"model.vision_tower.{key}" for key in swin.state_dict()}
        | {f"model.multi_modal_projector.{key}" for key in ("linear_1.weight", "linear_1.bias")}
        | {f"model.multi_modal_projector.{key}" for key in ("layer_norm.weight", "layer_norm.bias")}
        | {f"model.language_model.{key}" for key in source.model.language_model.state_dict()}
        | {"lm_head.weight"}
    )
    assert set(model.state_dict()) == expected_keys
    assert type(model.model.vision_tower) is SwinModel
    assert "siglip" not in model.config.to_json_string()

    input_ids = text_prompt_ids()
    with torch.no_grad():
        expected = source(input_ids=input_ids).logits
        torch.testing.assert_close(model(input_ids=input_ids).logits, expected)


@pytest.mark.parametrize("layout", sorted(MULTIMODAL_LAYOUTS))
def test_multimodal_checkpoint_without_key_mapping_is_refused(
    swin_source, multimodal_source, tmp_path, monkeypatch, layout
):
    """DESIGN.md §3's trap: without the key mapping no text weight is found. That must raise, not train on noise."""
    text_dir = multimodal_checkpoint(multimodal_source[1], tmp_path / layout, layout)
    monkeypatch.setattr(loading, "MULTIMODAL_TEXT_KEY_MAPPING", {r"^nothing_matches_this\.": "model."})
    with pytest.raises(ValueError, match="randomly initialised") as raised:
        R2GenForConditionalGeneration.from_vision_text_pretrained(swin_source[1], text_dir)
    assert "model.embed_tokens.weight" in str(raised.value)


# ----------------------------------------------------------------------------------------------------------------
# 3. Missing language-model weights fail loudly
# ----------------------------------------------------------------------------------------------------------------


def test_missing_language_model_weights_raise(swin_source, text_copy):
    removed = [
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.self_attn.q_proj.weight",
    ]
    rename_keys(text_copy / "model.safetensors", lambda key: None if key in removed else key)

    with pytest.raises(ValueError, match=f"would leave {len(removed)} weights randomly initialised") as raised:
        R2GenForConditionalGeneration.from_vision_text_pretrained(swin_source[1], text_copy)
    message = str(raised.value)
    assert all(key in message for key in removed)
    assert str(text_copy) in message


def test_checkpoint_with_no_matching_keys_raises(swin_source, text_source, text_copy):
    """The silent trap: a checkpoint whose keys match none of the model's must not load as a random model."""
    rename_keys(text_copy / "model.safetensors", lambda key: f"unrelated_prefix.{key}")
    n_weights = len(text_source[0].model.state_dict())

    with pytest.raises(ValueError, match=f"would leave {n_weights} weights randomly initialised"):
        R2GenForConditionalGeneration.from_vision_text_pretrained(swin_source[1], text_copy)


def test_missing_vision_weights_raise(swin_source, text_source, tmp_path):
    swin_dir = Path(shutil.copytree(swin_source[1], tmp_path / "swin"))
    rename_keys(swin_dir / "model.safetensors", lambda key: None if key.startswith("encoder.layers.1.") else key)
    with pytest.raises(ValueError, match="vision encoder"):
        R2GenForConditionalGeneration.from_vision_text_pretrained(swin_dir, text_source[1])


# ----------------------------------------------------------------------------------------------------------------
# 4. Keyword arguments: vision_* / text_* / shared / R2GenConfig fields
# ----------------------------------------------------------------------------------------------------------------


def test_split_prefixed_kwargs():
    kwargs = {"vision_dtype": torch.float32, "text_token": "hf_x", "text_dtype": torch.float64, "dtype": "auto"}
    vision, text, shared = split_prefixed_kwargs(kwargs, ("vision_", "text_"))
    assert vision == {"dtype": torch.float32}
    assert text == {"token": "hf_x", "dtype": torch.float64}
    assert shared == {"dtype": "auto"}
    assert len(kwargs) == 4  # the caller's dict is left alone
    assert split_prefixed_kwargs({}, ("vision_", "text_")) == ({}, {}, {})
    # Only a leading prefix counts.
    assert split_prefixed_kwargs({"context_text_x": 1}, ("text_",)) == ({}, {"context_text_x": 1})


def test_prefixed_kwargs_reach_one_part_and_config_fields_reach_the_config(swin_source, text_source):
    model = R2GenForConditionalGeneration.from_vision_text_pretrained(
        swin_source[1],
        text_source[1],
        text_dtype=torch.float64,
        view_combination="concat",
        prompt="Describe the findings.",
        projector_type="mlp",
    )

    assert model.model.language_model.dtype == torch.float64
    assert model.lm_head.weight.dtype == torch.float64
    assert model.model.vision_tower.dtype == torch.float32
    assert model.model.multi_modal_projector.linear_1.weight.dtype == torch.float32
    assert model.config.view_combination == "concat"
    assert model.config.prompt == "Describe the findings."
    assert model.config.projector_type == "mlp"
    assert model.model.multi_modal_projector.linear_2 is not None
    # Mixed precision still runs: the projected visual tokens are cast to the language model's dtype.
    input_ids = torch.tensor([[2, 255_999] + [model.config.image_token_id] * 16 + [256_000, 5, 6]])
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=torch.randn(1, 1, 3, 32, 32)).logits
    assert logits.dtype == torch.float64 and torch.isfinite(logits).all()


def test_kwargs_are_routed_to_the_right_loader(swin_source, text_source, monkeypatch):
    seen = {}

    def spy(name, loader):
        def wrapper(source, **kwargs):
            seen[name] = kwargs
            return loader(source, **kwargs)

        monkeypatch.setattr(modeling_r2gen, name, wrapper)

    spy("load_vision_model", loading.load_vision_model)
    spy("load_language_model", loading.load_language_model)

    R2GenForConditionalGeneration.from_vision_text_pretrained(
        swin_source[1],
        text_source[1],
        vision_revision="vision-rev",
        text_revision="text-rev",
        cache_dir="/nonexistent/cache",
        view_combination="concat",
        image_seq_length=16,
    )

    shared = {"dtype": torch.float32, "cache_dir": "/nonexistent/cache"}
    assert seen["load_vision_model"] == {**shared, "revision": "vision-rev"}
    assert seen["load_language_model"] == {**shared, "revision": "text-rev"}


# ----------------------------------------------------------------------------------------------------------------
# 5. timm backbone through TimmWrapper
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["timm_convnext", "timm_swin"])
def test_timm_backbone(text_source, tmp_path, kind):
    pytest.importorskip("timm")
    vision = randomise(AutoModel.from_config(tiny_vision_config(kind)), seed=13)
    vision.save_pretrained(tmp_path / kind)

    model = R2GenForConditionalGeneration.from_vision_text_pretrained(tmp_path / kind, text_source[1]).eval()

    assert model.config.vision_config.model_type == "timm_wrapper"
    assert_same_state(model.model.vision_tower, vision)
    assert model.config.image_seq_length == 16  # 4 x 4 feature map of a 32 px view
    with torch.no_grad():
        features = model.model.get_image_features(torch.randn(1, 1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert features.shape == (1, model.config.image_seq_length, model.config.text_config.hidden_size)


# ----------------------------------------------------------------------------------------------------------------
# 6. Gated repositories
# ----------------------------------------------------------------------------------------------------------------


def hub_error(status: int, error_code: str | None = None, repo_id: str = GATED_REPO) -> HfHubHTTPError:
    """The exception huggingface_hub raises for this Hub answer (built by its own `hf_raise_for_status`)."""
    url = f"https://huggingface.co/{repo_id}/resolve/main/config.json"
    headers = {"X-Error-Code": error_code} if error_code else {}
    response = httpx.Response(status, headers=headers, request=httpx.Request("GET", url))
    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as error:
        return error
    raise AssertionError(f"huggingface_hub accepted a {status} response")


@pytest.fixture
def hub_refuses(monkeypatch):
    """Makes transformers' download call (`transformers.utils.hub.hf_hub_download`, reached even in offline mode
    since the repo is not cached) raise `error`; returns the repo ids it was called for."""
    import transformers.utils.hub as transformers_hub

    calls = []

    def install(error: Exception) -> list[str]:
        def refuse(repo_id, *args, **kwargs):
            calls.append(repo_id)
            raise error

        monkeypatch.setattr(transformers_hub, "hf_hub_download", refuse)
        monkeypatch.setattr(transformers_hub, "snapshot_download", refuse)
        return calls

    return install


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(lambda: hub_error(403, "GatedRepo"), id="403-gated"),
        pytest.param(lambda: hub_error(401), id="401-anonymous"),  # a RepositoryNotFoundError with status 401
        pytest.param(
            lambda: HfHubHTTPError(
                "401 Client Error", response=httpx.Response(401, request=httpx.Request("GET", "https://hf.co"))
            ),
            id="401-http",
        ),
    ],
)
def test_gated_repo_explains_how_to_get_access(swin_source, hub_refuses, tmp_path, error):
    error = error()
    calls = hub_refuses(error)

    with pytest.raises(GatedModelAccessError) as raised:
        R2GenForConditionalGeneration.from_vision_text_pretrained(swin_source[1], GATED_REPO, cache_dir=tmp_path)

    assert calls and set(calls) == {GATED_REPO}  # the mocked download was what refused
    message = str(raised.value)
    assert GATED_REPO in message
    assert f"HTTP {error.response.status_code}" in message
    assert re.search(r"accept the licen[cs]e", message)
    assert "hf auth login" in message
    assert "HF_TOKEN" in message
    assert isinstance(raised.value, OSError)  # callers catching OSError keep working
    # The chain keeps transformers' OSError and, below it, the Hub's error.
    chain, cause = [], raised.value.__cause__
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert error in chain


def test_repo_not_found_is_not_reported_as_gated(swin_source, hub_refuses, tmp_path):
    calls = hub_refuses(hub_error(404, "RepoNotFound", repo_id="nobody/no-such-model"))
    with pytest.raises(OSError) as raised:
        R2GenForConditionalGeneration.from_vision_text_pretrained(
            swin_source[1], "nobody/no-such-model", cache_dir=tmp_path
        )
    assert calls == ["nobody/no-such-model"]
    assert not isinstance(raised.value, GatedModelAccessError)
    assert isinstance(raised.value.__cause__, RepositoryNotFoundError)


def test_missing_local_path_is_not_reported_as_gated(swin_source, tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(OSError) as raised:
        R2GenForConditionalGeneration.from_vision_text_pretrained(swin_source[1], missing)
    assert not isinstance(raised.value, GatedModelAccessError)
    with pytest.raises(OSError) as raised:
        R2GenForConditionalGeneration.from_vision_text_pretrained(missing, GATED_REPO)
    assert not isinstance(raised.value, GatedModelAccessError)


def test_explain_gated_access_passes_other_errors_through():
    with pytest.raises(GatedModelAccessError, match="HTTP 403"):
        with explain_gated_access(GATED_REPO):
            raise hub_error(403, "GatedRepo")  # the Hub's own error, not wrapped by transformers
    with pytest.raises(FileNotFoundError):
        with explain_gated_access(GATED_REPO):
            raise FileNotFoundError("config.json")
    with pytest.raises(ValueError):
        with explain_gated_access(GATED_REPO):
            raise ValueError("not an OSError")


# ----------------------------------------------------------------------------------------------------------------
# 7. dtype
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [None, "auto"])
def test_resolve_dtype_defaults(dtype, monkeypatch):
    assert resolve_dtype(dtype, device="cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype(dtype) == torch.float32
    # A GPU with bf16 support gets bf16 (faked: the test machines have no GPU).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_dtype(dtype) == torch.bfloat16
    assert resolve_dtype(dtype, device="cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_dtype(dtype) == torch.float32


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.bfloat16, torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        (torch.float32, torch.float32),
        ("float32", torch.float32),
        ("fp32", torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_resolve_dtype_explicit(dtype, expected, recwarn):
    assert resolve_dtype(dtype) == expected
    assert not [warning for warning in recwarn if issubclass(warning.category, UserWarning)]


@pytest.mark.parametrize("dtype", [torch.float16, "float16", "fp16", "half"])
def test_resolve_dtype_warns_on_float16(dtype):
    with pytest.warns(UserWarning, match="overflow"):
        assert resolve_dtype(dtype) == torch.float16


@pytest.mark.parametrize("dtype", ["banana", "nn", "int8", torch.int64])
def test_resolve_dtype_rejects_non_float_dtypes(dtype):
    with pytest.raises(ValueError, match=re.escape(repr(dtype))):
        resolve_dtype(dtype)


def test_float16_request_warns_through_from_vision_text_pretrained(swin_source, text_source):
    with pytest.warns(UserWarning, match="overflow"):
        model = R2GenForConditionalGeneration.from_vision_text_pretrained(
            swin_source[1], text_source[1], dtype=torch.float16
        )
    assert model.model.language_model.dtype == torch.float16
