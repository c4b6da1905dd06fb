"""R2GenGPT-style report generation: Swin (or any timm backbone) -> projector -> Gemma 3.

The visual tokens of each study are projected to the language model's width and written into the
token embeddings at the positions of `<image_soft_token>` placeholders (`masked_scatter`, as LLaVA and
Gemma 3 do in transformers), so that attention masks, batching, `generate()` and the KV cache are the
standard ones. See DESIGN.md §2-§4.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.loss.loss_utils import fixed_cross_entropy
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging

from .configuration_r2gen import R2GenConfig
from .loading import (
    copy_quantization_markers,
    explain_gated_access,
    load_language_model,
    load_vision_model,
    resolve_dtype,
    saved_quantization_config,
    split_prefixed_kwargs,
    warn_if_float16,
    with_unquantized_vision,
)
from .loss_utils import is_plain_linear, linear_cross_entropy


logger = logging.get_logger(__name__)


@dataclass
class R2GenModelOutputWithPast(BaseModelOutputWithPast):
    """
    image_hidden_states (`torch.FloatTensor` of shape `(num_image_blocks, image_seq_length, hidden_size)`, *optional*):
        Projected visual tokens written into the sequence: one block per study (`mean`) or per view (`concat`).
    """

    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class R2GenCausalLMOutputWithPast(ModelOutput):
    """
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        Next-token cross-entropy over the positions whose label is not -100 (the report and its `<end_of_turn>`).
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Language-model scores; None when the forward pass was asked for `loss_logits_only`.
    cache (`Cache`, *optional*):
        The KV cache, for generation.
    hidden_states, attentions:
        As in transformers' causal LM outputs, when requested.
    image_hidden_states (`torch.FloatTensor`, *optional*):
        Projected visual tokens, see [`R2GenModelOutputWithPast`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None


def vision_output_width(vision_tower: nn.Module) -> int:
    """Width of the vision encoder's output tokens: `hidden_size` for transformers' Swin (1024 for
    Swin-B), `num_features` for a timm backbone wrapped by `TimmWrapperModel`."""
    timm_model = getattr(vision_tower, "timm_model", None)
    if timm_model is not None:
        return timm_model.num_features
    return vision_tower.config.hidden_size


def encode_views(vision_tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Runs a vision encoder on a batch of single views and returns their visual tokens as a sequence.

    Args:
        vision_tower: a transformers `SwinModel` (tokens already flat) or a `TimmWrapperModel`, whose
            feature maps are flattened from NHWC (timm Swin) or NCHW (ConvNeXt, ResNet) layouts.
        pixel_values: `(num_views, channels, height, width)`.
    Returns:
        `(num_views, image_seq_length, vision_width)`.
    """
    pixel_values = pixel_values.to(vision_tower.dtype)
    timm_model = getattr(vision_tower, "timm_model", None)
    if timm_model is None:
        return vision_tower(pixel_values).last_hidden_state  # (N, L, C)
    features = vision_tower(pixel_values, do_pooling=False).last_hidden_state
    if features.ndim == 4:
        if getattr(timm_model, "output_fmt", "NCHW") == "NHWC":
            features = features.flatten(1, 2)  # (N, H, W, C) -> (N, H*W, C)
        else:
            features = features.flatten(2).transpose(1, 2)  # (N, C, H, W) -> (N, H*W, C)
    return features


@torch.no_grad()
def infer_image_seq_length(vision_tower: nn.Module, image_size: int | None = None) -> int:
    """Counts the visual tokens one view produces by running a blank image through the encoder.

    `image_size` defaults to a timm model's pretrained input size, or the transformers config's.
    """
    if image_size is None:
        timm_model = getattr(vision_tower, "timm_model", None)
        if timm_model is not None:
            # A fixed-size backbone (timm Swin, ViT) knows its input size; others declare it in `pretrained_cfg`.
            fixed_size = getattr(getattr(timm_model, "patch_embed", None), "img_size", None)
            image_size = fixed_size[-1] if fixed_size is not None else timm_model.pretrained_cfg["input_size"][-1]
        else:
            image_size = vision_tower.config.image_size
    param = next(vision_tower.parameters())
    blank = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    return encode_views(vision_tower, blank).shape[1]


class R2GenMultiModalProjector(nn.Module):
    """Maps visual tokens to the language model's width.

    `linear` is R2GenGPT's `Linear + LayerNorm`; `mlp` puts an activation and a second Linear before the
    same LayerNorm. The LayerNorm output has unit RMS per dimension, which matches the scale of Gemma 3's
    token embeddings after their internal `sqrt(hidden_size)` multiplier (measured RMS 1.03 on Gemma 3
    270M), so the spliced visual tokens need no further rescaling.
    """

    def __init__(self, config: R2GenConfig, vision_width: int):
        super().__init__()
        text_width = config.text_config.hidden_size
        self.linear_1 = nn.Linear(vision_width, text_width)
        if config.projector_type == "mlp":
            self.act = ACT2FN[config.projector_hidden_act]
            self.linear_2 = nn.Linear(text_width, text_width)
        else:
            self.act = None
            self.linear_2 = None
        self.layer_norm = nn.LayerNorm(text_width)

    def forward(self, visual_tokens: torch.Tensor) -> torch.Tensor:
        # The projector trains in fp32 beside a frozen bf16 encoder (`upcast_trainable_parameters`).
        hidden_states = self.linear_1(visual_tokens.to(self.linear_1.weight.dtype))  # (..., L, D_text)
        if self.linear_2 is not None:
            hidden_states = self.linear_2(self.act(hidden_states))
        return self.layer_norm(hidden_states)


class R2GenPreTrainedModel(PreTrainedModel):
    config: R2GenConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SwinLayer", "Gemma3DecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        """transformers' walk sets the `gradient_checkpointing` flag of Swin and Gemma 3 layers; timm
        backbones have their own switch (`set_grad_checkpointing`), which that walk does not reach."""
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        for module in self.modules():
            timm_model = getattr(module, "timm_model", None)
            if timm_model is not None and hasattr(timm_model, "set_grad_checkpointing"):
                timm_model.set_grad_checkpointing(enable)

    def _activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, *args, **kwargs) -> None:
        """Non-reentrant checkpointing unless told otherwise. transformers defaults to it only when given no
        kwargs at all, but peft's `prepare_model_for_kbit_training` passes `{}`: torch's reentrant variant
        then gives no gradient to LoRA inside the Swin layers (delta mode), whose inputs (pixels) need none."""
        activation_checkpointing_kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        super()._activation_checkpointing_enable(activation_checkpointing_kwargs, *args, **kwargs)

    def enable_input_require_grads(self) -> None:
        """Makes the token embeddings' output require grad, so that LoRA on a frozen LM trains under
        activation checkpointing. Only the language model's embeddings are hooked: transformers' generic
        version also hooks Swin's patch embeddings, whose output is a tuple (and pixels need no grad)."""

        def make_inputs_require_grads(module, inputs, output):
            output.requires_grad_(True)

        self._require_grads_hooks = [self.get_input_embeddings().register_forward_hook(make_inputs_require_grads)]
        self._require_grads_hook = self._require_grads_hooks[0]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus: a bitsandbytes `quantization_config` leaves the vision
        tower, projector and LM head unquantized; fp16 warns; a gated repo explains how to get access."""
        if kwargs.get("quantization_config") is not None:
            kwargs["quantization_config"] = with_unquantized_vision(kwargs["quantization_config"])
        warn_if_float16(kwargs.get("dtype"))
        with explain_gated_access(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)


class R2GenModel(R2GenPreTrainedModel):
    """Vision encoder + projector + Gemma 3 decoder, without the language-model head.

    `vision_tower` and `language_model` may be passed already built (e.g. with pretrained weights), as
    [`~R2GenForConditionalGeneration.from_vision_text_pretrained`] does; otherwise they are built from
    `config.vision_config` / `config.text_config` with `AutoModel.from_config`.
    """

    def __init__(
        self,
        config: R2GenConfig,
        vision_tower: PreTrainedModel | None = None,
        language_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        self.vision_tower = vision_tower if vision_tower is not None else AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = R2GenMultiModalProjector(config, vision_output_width(self.vision_tower))
        self.language_model = (
            language_model if language_model is not None else AutoModel.from_config(config.text_config)
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def encode_views(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(num_views, C, H, W)` -> `(num_views, image_seq_length, vision_width)`, see [`encode_views`]."""
        return encode_views(self.vision_tower, pixel_values)

    def get_image_features(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encodes and projects the views of a batch of studies.

        Args:
            pixel_values: `(batch, max_views, channels, height, width)`, or `(batch, channels, height, width)`
                for single-view studies. Padding views (where `view_mask` is False) are never encoded.
            view_mask: `(batch, max_views)`, True for real views. Defaults to all views real.
        Returns:
            `(num_blocks, image_seq_length, text_hidden)`: one block per study for `view_combination="mean"`
            (R2GenGPT averages the encoder tokens of the views, then projects), one block per real view, in
            study order, for `"concat"`.
        """
        if pixel_values.ndim == 4:
            pixel_values = pixel_values[:, None]  # (B, C, H, W) -> (B, 1, C, H, W)
        batch_size, max_views = pixel_values.shape[:2]
        if view_mask is None:
            view_mask = torch.ones(batch_size, max_views, dtype=torch.bool, device=pixel_values.device)
        view_mask = view_mask.to(device=pixel_values.device, dtype=torch.bool)
        views_per_study = view_mask.sum(dim=1)  # (B,)
        if bool((views_per_study == 0).any()):
            empty = torch.nonzero(views_per_study == 0).flatten().tolist()
            raise ValueError(f"Studies at batch positions {empty} have no image (view_mask is all False).")

        visual_tokens = self.encode_views(pixel_values[view_mask])  # (N_views, L, D_vision)
        if self.config.view_combination == "mean":
            per_study = visual_tokens.new_zeros(batch_size, max_views, *visual_tokens.shape[1:])
            per_study[view_mask] = visual_tokens  # (B, V, L, D_vision)
            weights = views_per_study.to(visual_tokens.dtype)[:, None, None]  # (B, 1, 1)
            visual_tokens = per_study.sum(dim=1) / weights  # (B, L, D_vision)
        return self.multi_modal_projector(visual_tokens)  # (num_blocks, L, D_text)

    def get_placeholder_mask(self, input_ids: torch.LongTensor, image_features: torch.Tensor) -> torch.BoolTensor:
        """Positions of `<image_soft_token>`; raises if their count differs from the number of visual tokens."""
        placeholder_mask = input_ids == self.config.image_token_id  # (B, T)
        n_placeholders = int(placeholder_mask.sum())
        n_features = image_features.shape[0] * image_features.shape[1]
        if n_placeholders != n_features:
            raise ValueError(
                f"Image features and image tokens do not match: {n_placeholders} `<image_soft_token>` placeholders "
                f"in input_ids, {n_features} visual tokens ({image_features.shape[0]} blocks x "
                f"{image_features.shape[1]}, view_combination={self.config.view_combination!r}). Build inputs with "
                "R2GenProcessor using the same `image_seq_length` and `view_combination` as the model config."
            )
        return placeholder_mask

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        view_mask: torch.BoolTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> R2GenModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("Specify exactly one of `input_ids` or `inputs_embeds`.")

        image_features = None
        if inputs_embeds is None:
            placeholder_mask = input_ids == self.config.image_token_id
            # Placeholders are overwritten below; look up a harmless id instead, since `<image_soft_token>`
            # may lie outside a text-only Gemma 3 vocabulary.
            text_ids = input_ids.masked_fill(placeholder_mask, self.config.text_config.pad_token_id or 0)
            inputs_embeds = self.get_input_embeddings()(text_ids)  # (B, T, D_text)
            if pixel_values is not None:
                image_features = self.get_image_features(pixel_values, view_mask)
                placeholder_mask = self.get_placeholder_mask(input_ids, image_features)
                image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
                inputs_embeds = inputs_embeds.masked_scatter(placeholder_mask[..., None], image_features)
            elif bool(placeholder_mask.any()):
                raise ValueError(
                    "input_ids contain `<image_soft_token>` placeholders but no `pixel_values` were given."
                )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return R2GenModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


def default_generation_config(config: R2GenConfig) -> GenerationConfig:
    """The generation defaults stored with every checkpoint (seed guide §6.1, made consistent):
    3-beam search without sampling, stopping at `<end_of_turn>` or `<eos>`."""
    text_config = config.text_config
    eos = text_config.eos_token_id if text_config.eos_token_id is not None else 1
    eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    if config.end_of_turn_token_id not in eos_ids:
        eos_ids.append(config.end_of_turn_token_id)
    return GenerationConfig(
        bos_token_id=text_config.bos_token_id,
        pad_token_id=text_config.pad_token_id,
        eos_token_id=eos_ids,
        do_sample=False,
        num_beams=3,
        max_new_tokens=120,
        repetition_penalty=1.1,
    )


class R2GenForConditionalGeneration(R2GenPreTrainedModel, GenerationMixin):
    """R2Gen with a language-modeling head: `forward` returns the loss on report tokens, `generate`
    writes reports from the prompt and images."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(
        self,
        config: R2GenConfig,
        vision_tower: PreTrainedModel | None = None,
        language_model: PreTrainedModel | None = None,
        lm_head: nn.Linear | None = None,
    ):
        super().__init__(config)
        self.model = R2GenModel(config, vision_tower=vision_tower, language_model=language_model)
        self.lm_head = (
            lm_head
            if lm_head is not None
            else nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        )
        self.post_init()
        self.generation_config = default_generation_config(config)

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str | os.PathLike,
        text_model_name_or_path: str | os.PathLike,
        **kwargs,
    ) -> "R2GenForConditionalGeneration":
        r"""Builds an R2Gen model from a pretrained vision encoder and a pretrained Gemma 3, with a freshly
        initialised projector (R2GenGPT's starting point).

        Args:
            vision_model_name_or_path: a Swin checkpoint (default R2GenGPT choice:
                `microsoft/swin-base-patch4-window7-224`) or any `timm/...` backbone.
            text_model_name_or_path: a Gemma 3 multimodal checkpoint (`google/gemma-3-4b-it`,
                `google/medgemma-4b-it`: the language model is taken, SigLIP dropped), a text-only one
                (`google/gemma-3-1b-it`, `google/gemma-3-270m`), or a path to a `.gguf` file.
            kwargs: `R2GenConfig` fields (`view_combination`, `projector_type`, `prompt`, `image_seq_length`,
                ...); `vision_*` / `text_*` keyword arguments go to that part's `from_pretrained` with the
                prefix removed; the rest (`dtype`, `token`, `cache_dir`, `device_map`, ...) go to both, except
                `quantization_config`, which only the language model receives.

        `dtype` defaults to bf16 on GPUs that support it and fp32 elsewhere. Raises `ValueError` if any
        language-model weight would be left randomly initialised, and `GatedModelAccessError` with the
        steps to get access if the Hub refuses a gated repo.
        """
        # R2GenConfig's own fields (not PreTrainedConfig's, such as `dtype`).
        config_fields = set(R2GenConfig.__annotations__) - {"vision_config", "text_config", "tie_word_embeddings"}
        config_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in config_fields}
        vision_kwargs, text_kwargs, shared = split_prefixed_kwargs(kwargs, ("vision_", "text_"))
        shared["dtype"] = resolve_dtype(shared.get("dtype"))
        for part_kwargs in (vision_kwargs, text_kwargs):
            if "dtype" in part_kwargs:
                part_kwargs["dtype"] = resolve_dtype(part_kwargs["dtype"])
        quantization_config = shared.pop("quantization_config", None)
        if quantization_config is not None:
            text_kwargs.setdefault("quantization_config", quantization_config)

        vision_tower = load_vision_model(vision_model_name_or_path, **{**shared, **vision_kwargs})
        language_model, lm_head = load_language_model(text_model_name_or_path, **{**shared, **text_kwargs})
        if config_kwargs.get("image_seq_length") is None and vision_tower.config.model_type != "swin":
            config_kwargs["image_seq_length"] = infer_image_seq_length(vision_tower)

        attn_implementations = (vision_tower.config._attn_implementation, language_model.config._attn_implementation)
        config = R2GenConfig(vision_config=vision_tower.config, text_config=language_model.config, **config_kwargs)
        # Building the composite config resets its sub-configs' attention implementation to None, which Gemma 3
        # would run without its causal mask; keep the implementations the parts were loaded with.
        config.vision_config._attn_implementation_internal, config.text_config._attn_implementation_internal = (
            attn_implementations
        )
        model = cls(config, vision_tower=vision_tower, language_model=language_model, lm_head=lm_head)
        model.multi_modal_projector.to(device=vision_tower.device, dtype=vision_tower.dtype)
        if getattr(language_model, "hf_quantizer", None) is not None:
            copy_quantization_markers(language_model, model)
            model.config.quantization_config = saved_quantization_config(
                model, language_model.config.quantization_config
            )
        return model.eval()  # as `from_pretrained`: the new projector was built in training mode

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, view_mask)

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """LM head with Gemma 3's final logit soft-capping (when the text config sets one)."""
        logits = self.lm_head(hidden_states)  # (..., V)
        softcap = self.config.text_config.final_logit_softcapping
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def loss_at_supervised_positions(
        self, hidden_states: torch.Tensor, labels: torch.LongTensor, num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """The causal-LM loss of `self.loss_function` (next-token cross-entropy in float32, mean over the
        supervised tokens or sum / `num_items_in_batch`), with the LM head run only where a label is read, and
        fused with the loss (`loss_utils.linear_cross_entropy`) when the head is a plain linear layer."""
        next_labels = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]  # (B, T): the token each position predicts
        supervised = next_labels != -100  # (B, T)
        hidden_states, targets = hidden_states[supervised], next_labels[supervised]  # (N, H), (N,)
        if is_plain_linear(self.lm_head):
            softcap = self.config.text_config.final_logit_softcapping
            return linear_cross_entropy(hidden_states, self.lm_head, targets, softcap, num_items_in_batch)
        logits = self.compute_logits(hidden_states)  # (N, V)
        return fixed_cross_entropy(logits.float(), targets, num_items_in_batch, ignore_index=-100)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        view_mask: torch.BoolTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        loss_logits_only: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> R2GenCausalLMOutputWithPast:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, max_views, channels, height, width)`):
            The views of each study, padded to the largest study in the batch.
        view_mask (`torch.BoolTensor` of shape `(batch, max_views)`, *optional*):
            True for real views, False for padding.
        labels (`torch.LongTensor` of shape `(batch, sequence_length)`, *optional*):
            Token ids to predict, -100 where no loss is taken (R2GenProcessor keeps only the report and its
            closing `<end_of_turn>`). Shifted inside the loss, as in transformers' causal LMs.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            As in transformers' causal LMs: compute logits for the last `logits_to_keep` positions only (0: all).
        loss_logits_only (`bool`, *optional*, defaults to `False`):
            With `labels`: run the LM head only at the positions the loss reads (those whose next label is not
            -100) and return `logits=None`. The loss is the same; with Gemma 3's 262k-entry vocabulary the
            full-sequence LM head (and its float32 copy in the loss) is the largest single cost of a training
            step, and most positions (image tokens, prompt) carry no loss. The Trainer turns it on.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            view_mask=view_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        if loss_logits_only:
            if labels is None:
                raise ValueError("loss_logits_only=True needs `labels`: it computes logits only where the loss reads them.")
            loss = self.loss_at_supervised_positions(outputs.last_hidden_state, labels, kwargs.get("num_items_in_batch"))
            logits = None
        else:
            logits = self.compute_logits(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))  # (B, T, V)
            loss = None
            if labels is not None:
                loss = self.loss_function(logits, labels, vocab_size=self.config.text_config.vocab_size, **kwargs)

        return R2GenCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


__all__ = [
    "R2GenCausalLMOutputWithPast",
    "R2GenForConditionalGeneration",
    "R2GenModel",
    "R2GenModelOutputWithPast",
    "R2GenMultiModalProjector",
    "R2GenPreTrainedModel",
    "default_generation_config",
]
