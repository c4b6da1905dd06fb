"""Model FLOPs of one R2Gen training step, counted from the architecture (matmuls and attention only).

Conventions (those of MFU as in the PaLM paper, made exact for partly frozen models):

* A matmul with a weight of N parameters applied to T tokens costs 2·N·T FLOPs forward. Backward costs
  2·N·T for the gradient of its input, counted only where a gradient has to flow (something trainable lies
  upstream), plus 2·N·T for the gradient of its weight, counted only where the weight trains. A fully
  trained path is the familiar 6·N·T; a frozen layer that passes gradient back (Gemma 3 under LoRA) is
  4·N·T; a frozen layer with nothing trainable before it (Swin in `shallow` mode) is 2·N·T.
* Attention: Q·Kᵀ and A·V cost 2·T_q·T_k·d each per head, over the whole T x T score matrix (what SDPA
  and Swin's windowed attention compute, masked or not); backward twice that where a gradient flows.
* The LM head (2·H·V per position) runs at every position, or with `loss_logits_only` only at the
  positions whose next token is supervised (the report). Its weight is Gemma 3's tied, frozen embedding.
* Not counted: biases, norms, softmax, rotary embeddings, the loss, the optimizer (all O(N) or O(T), not
  O(N·T)), and the forward recomputed under activation checkpointing (reported apart as `recompute`, so that
  MFU stays a property of the model, not of the memory-saving strategy).
* `delta` mode is counted as if the gradient flowed through all of Swin (it flows from the first LoRA on):
  an upper bound that over-counts the first block's input gradients.

Swin geometry is that of transformers' `SwinModel` (padding to whole windows, a window never larger than
the feature map); Gemma 3's that of `Gemma3TextModel`.
"""

import math
from dataclasses import dataclass, field

from r2gen_hf.adapters import LLM_LORA_TARGETS, AlignmentConfig


@dataclass(frozen=True)
class StepShape:
    """What one training step processes."""

    batch_size: int
    seq_len: int  # T: every sequence in the benchmark batch has the same length (no padding)
    views_per_study: int  # real views encoded per study
    supervised_tokens: int  # positions per sequence whose next token carries a label (report + <end_of_turn>)


@dataclass
class FlopCount:
    """Forward and backward FLOPs of one step, per part of the model."""

    forward: dict[str, float] = field(default_factory=dict)
    backward: dict[str, float] = field(default_factory=dict)
    recompute: float = 0.0  # forward FLOPs re-run by activation checkpointing (not model FLOPs)

    def add(self, part: str, forward: float, input_grad: bool, weight_grad: bool = False) -> None:
        """A matmul with a weight: backward is 1x forward per gradient computed (input, weight)."""
        self.forward[part] = self.forward.get(part, 0.0) + forward
        self.backward[part] = self.backward.get(part, 0.0) + forward * (int(input_grad) + int(weight_grad))

    def add_attention(self, part: str, forward: float, grad_flows: bool) -> None:
        """Q·Kᵀ and A·V: backward computes the gradients of both operands of each, 2x forward."""
        self.forward[part] = self.forward.get(part, 0.0) + forward
        self.backward[part] = self.backward.get(part, 0.0) + 2 * forward * int(grad_flows)

    @property
    def total(self) -> float:
        return sum(self.forward.values()) + sum(self.backward.values())

    def to_dict(self) -> dict:
        return {
            "model_flops_per_step": self.total,
            "forward_flops": sum(self.forward.values()),
            "backward_flops": sum(self.backward.values()),
            "recompute_flops": self.recompute,
            "by_part": {part: self.forward[part] + self.backward[part] for part in self.forward},
        }


def _swin_stages(vision_config) -> list[dict]:
    """Per stage: tokens (unpadded and padded to whole windows), width, depth, window size."""
    size = vision_config.image_size
    patch = vision_config.patch_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    side = size // patch
    stages = []
    for index, depth in enumerate(vision_config.depths):
        window = min(vision_config.window_size, side)
        padded = math.ceil(side / window) * window
        stages.append(
            {"side": side, "tokens": side * side, "padded_tokens": padded * padded, "window": window,
             "dim": vision_config.embed_dim * 2**index, "depth": depth}
        )
        side = (side + 1) // 2
    return stages


def add_vision_flops(count: FlopCount, config, views: int, alignment: AlignmentConfig) -> None:
    """Swin: patch embedding, blocks (attention projections, windowed attention, MLP), patch merging."""
    vision_config = config.vision_config
    if vision_config.model_type != "swin":
        raise NotImplementedError(f"FLOPs are counted for transformers' Swin only, not `{vision_config.model_type}`.")
    grad_flows = alignment.alignment in ("delta", "deep")
    trains = alignment.alignment == "deep"
    stages = _swin_stages(vision_config)
    patch = vision_config.patch_size if isinstance(vision_config.patch_size, int) else vision_config.patch_size[0]
    first = stages[0]
    count.add("vision", 2 * views * first["tokens"] * vision_config.num_channels * patch**2 * first["dim"],
              input_grad=False, weight_grad=trains)
    mlp_ratio = vision_config.mlp_ratio
    for index, stage in enumerate(stages):
        dim, tokens, padded = stage["dim"], stage["tokens"], stage["padded_tokens"]
        per_block_linear = 2 * views * (4 * padded * dim * dim + 2 * tokens * dim * int(mlp_ratio * dim))
        per_block_attention = 4 * views * padded * stage["window"] ** 2 * dim
        count.add("vision", stage["depth"] * per_block_linear, input_grad=grad_flows, weight_grad=trains)
        count.add_attention("vision_attention", stage["depth"] * per_block_attention, grad_flows)
        if alignment.alignment == "delta":  # LoRA on query and value: A (dim x r) and B (r x dim) each
            lora = 2 * views * padded * 2 * (2 * dim * alignment.vision_lora_r)
            count.add("lora", stage["depth"] * lora, input_grad=True, weight_grad=True)
        if index < len(stages) - 1:  # patch merging: 4·dim -> 2·dim on the next stage's tokens
            count.add("vision", 2 * views * stages[index + 1]["tokens"] * 4 * dim * 2 * dim,
                      input_grad=grad_flows, weight_grad=trains)


def vision_output_width(config) -> int:
    return config.vision_config.embed_dim * 2 ** (len(config.vision_config.depths) - 1)


def text_linear_shapes(text_config) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one Gemma 3 decoder layer."""
    hidden, inter, head_dim = text_config.hidden_size, text_config.intermediate_size, text_config.head_dim
    q_width, kv_width = text_config.num_attention_heads * head_dim, text_config.num_key_value_heads * head_dim
    return {
        "q_proj": (hidden, q_width), "k_proj": (hidden, kv_width), "v_proj": (hidden, kv_width),
        "o_proj": (q_width, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden),
    }


def training_flops(config, shape: StepShape, alignment: AlignmentConfig, loss_logits_only: bool,
                   activation_checkpointing: bool = False) -> FlopCount:
    """Model FLOPs of one training step of an R2Gen model with `config` (see the module docstring)."""
    count = FlopCount()
    batch, seq = shape.batch_size, shape.seq_len
    views = batch * shape.views_per_study
    add_vision_flops(count, config, views, alignment)
    vision_grad = alignment.alignment in ("delta", "deep")

    text_config = config.text_config
    hidden = text_config.hidden_size
    blocks = batch if config.view_combination == "mean" else views
    projector = 2 * blocks * config.image_seq_length * vision_output_width(config) * hidden
    if config.projector_type == "mlp":
        projector += 2 * blocks * config.image_seq_length * hidden * hidden
    count.add("projector", projector, input_grad=vision_grad, weight_grad=True)

    layers = text_config.num_hidden_layers
    tokens = batch * seq
    shapes = text_linear_shapes(text_config)
    lm_linear = 2 * tokens * layers * sum(i * o for i, o in shapes.values())
    lm_attention = 4 * batch * layers * text_config.num_attention_heads * seq * seq * text_config.head_dim
    count.add("lm", lm_linear, input_grad=True)
    count.add_attention("lm_attention", lm_attention, grad_flows=True)
    lm_lora = 0.0
    if alignment.llm_lora:
        targets = [name for name in shapes if name in alignment.llm_lora_target_modules]
        lm_lora = 2 * tokens * layers * sum((shapes[n][0] + shapes[n][1]) * alignment.llm_lora_r for n in targets)
        count.add("lora", lm_lora, input_grad=True, weight_grad=True)
    head_positions = batch * shape.supervised_tokens if loss_logits_only else tokens
    count.add("lm_head", 2 * head_positions * hidden * text_config.vocab_size, input_grad=True)

    if activation_checkpointing:  # every decoder layer (and Swin layer, where a gradient flows) runs twice
        count.recompute = lm_linear + lm_attention + lm_lora
        if vision_grad:
            count.recompute += count.forward["vision"] + count.forward["vision_attention"]
    return count


def lm_weight_bytes_per_token(language_model, lm_head) -> int:
    """Bytes of weights a decoding step reads: every decoder layer's parameters and buffers as stored
    (bitsandbytes' packed weights and their scales included), the final norm, and the whole LM head (tied
    to the embedding, read in full for the logits); the embedding lookup reads one row and is left out."""
    embedding = language_model.get_input_embeddings()
    skip = {id(p) for p in embedding.parameters()}
    total = sum(t.numel() * t.element_size() for t in language_model.parameters() if id(t) not in skip)
    total += sum(t.numel() * t.element_size() for t in language_model.buffers() if t.numel() > 1)
    total += sum(t.numel() * t.element_size() for t in lm_head.parameters())
    return total


__all__ = ["FlopCount", "LLM_LORA_TARGETS", "StepShape", "lm_weight_bytes_per_token", "text_linear_shapes", "training_flops"]
