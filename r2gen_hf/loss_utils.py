"""Cross-entropy fused with the LM head, for the positions a training loss reads.

With Gemma 3's 262,144-entry vocabulary, what follows the LM head's matmul in the usual path costs nearly as
much as the matmul: the logits are copied to float32, `log_softmax` writes another float32 copy kept for
backward, and backward fills a zero float32 gradient, scatters into it and runs the `log_softmax` backward —
five passes over an (N, V) float32 tensor (measured on the demo profile: ~19% of a training step, against
~27% for the head's two matmuls).

`linear_cross_entropy` does the same maths in one sweep over blocks of rows: it computes the logits in the
compute dtype, and while a block is in float32 it takes the loss and the gradient of the loss with respect to
the logits (softmax minus one-hot), which it writes back over the logits (blocks small enough to stay in
cache on a CPU: `rows_per_block`). Backward is then one matmul per input needing a gradient. The gradient
reaching the LM head's matmul is in the compute dtype either way (autocast runs that matmul's backward in
bf16), so nothing is lost in precision; the loss and the softmax are computed in float32, as in
`transformers.loss.loss_utils.fixed_cross_entropy`.
"""

import torch
from torch import nn


def compute_dtype_of(hidden_states: torch.Tensor) -> torch.dtype:
    """The matmul dtype autocast would pick here: its dtype when enabled, the hidden states' otherwise."""
    device_type = hidden_states.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden_states.dtype


class LinearCrossEntropyFunction(torch.autograd.Function):
    """sum over rows of cross_entropy(softcap(hidden @ weight.T), targets), with the gradient computed in forward."""

    @staticmethod
    def forward(ctx, hidden_states, weight, targets, softcap, compute_dtype, needs_gradient):
        # hidden_states: (N, H), weight: (V, H), targets: (N,)
        with torch.autocast(hidden_states.device.type, enabled=False):
            hidden = hidden_states.to(compute_dtype)
            head = weight.to(compute_dtype)
            logits = hidden @ head.T  # (N, V), becomes d loss / d logits below
            row_losses = torch.empty(len(targets), dtype=torch.float32, device=logits.device)  # (N,)
            block = rows_per_block(logits)
            for start in range(0, len(targets), block):
                rows = slice(start, start + block)
                row_losses[rows] = _loss_and_logit_gradient(logits[rows], targets[rows], softcap, needs_gradient)
        if not needs_gradient:  # evaluation: nothing to keep
            return row_losses.sum()
        ctx.save_for_backward(logits, hidden if weight.requires_grad else None, head)
        ctx.input_dtypes = (hidden_states.dtype, weight.dtype)
        return row_losses.sum()

    @staticmethod
    def backward(ctx, grad_output):
        logit_grads, hidden, head = ctx.saved_tensors  # (N, V), (N, H) or None, (V, H)
        hidden_dtype, weight_dtype = ctx.input_dtypes
        grad_hidden = grad_weight = None
        with torch.autocast(logit_grads.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_hidden = (logit_grads @ head).mul_(grad_output).to(hidden_dtype)  # (N, H)
            if ctx.needs_input_grad[1]:
                grad_weight = (logit_grads.T @ hidden).mul_(grad_output).to(weight_dtype)  # (V, H)
        return grad_hidden, grad_weight, None, None, None, None


def _loss_and_logit_gradient(
    logits: torch.Tensor, targets: torch.Tensor, softcap: float | None, needs_gradient: bool = True
) -> torch.Tensor:
    """Per-row cross-entropy of a block of raw logits `(n, V)`; overwrites the block with d loss / d logits
    when `needs_gradient`."""
    scores = logits.float()  # (n, V)
    if softcap is not None:
        scores = torch.tanh(scores.div_(softcap)).mul_(softcap)
    log_probs = torch.log_softmax(scores, dim=-1)  # (n, V)
    rows = torch.arange(len(targets), device=targets.device)
    losses = -log_probs[rows, targets]  # (n,)
    if not needs_gradient:
        return losses
    # d loss / d scores = softmax - one-hot; through the soft-cap c * tanh(z / c): times 1 - (scores / c)²
    grad = log_probs.exp_()
    grad[rows, targets] -= 1
    if softcap is not None:
        grad.mul_(1 - (scores / softcap).square_())
    logits.copy_(grad)
    return losses


def rows_per_block(logits: torch.Tensor) -> int:
    """Rows of float32 scores handled at once: on CPU a block that stays in cache across its passes (8 MiB;
    measured on 2 cores, 256 x 262,144 logits: 66-90 ms in blocks of 4-8 rows vs 215 ms in blocks of 32 or more,
    and 406 ms for the unfused float32 cross-entropy); on accelerators 256 MiB (a few blocks, so a few kernel
    launches, and at most 2 x 256 MiB of float32 temporaries where the unfused loss keeps two full copies)."""
    budget = 8 * 2**20 if logits.device.type == "cpu" else 256 * 2**20
    return max(1, budget // (4 * logits.shape[-1]))


def linear_cross_entropy(
    hidden_states: torch.Tensor,
    lm_head: nn.Linear,
    targets: torch.LongTensor,
    softcap: float | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Cross-entropy of `softcap(lm_head(hidden_states))` against `targets`: the mean over the N rows, or the sum
    divided by `num_items_in_batch` (the Trainer's normaliser under gradient accumulation), as
    `fixed_cross_entropy`. `hidden_states` `(N, H)` are the positions the loss reads (no ignored targets);
    `lm_head` a bias-free `nn.Linear`, frozen or not."""
    if hidden_states.ndim != 2 or targets.shape != hidden_states.shape[:1]:
        raise ValueError(
            f"linear_cross_entropy takes hidden states (N, H) and targets (N,); got {tuple(hidden_states.shape)} "
            f"and {tuple(targets.shape)}. Select the supervised positions first."
        )
    if bool((targets < 0).any()):  # an ignored position (-100) would index the vocabulary from its end
        raise ValueError(
            f"linear_cross_entropy got negative targets ({targets[targets < 0].unique().tolist()}); pass only the "
            "supervised positions (labels != -100)."
        )
    needs_gradient = torch.is_grad_enabled() and (hidden_states.requires_grad or lm_head.weight.requires_grad)
    total = LinearCrossEntropyFunction.apply(
        hidden_states, lm_head.weight, targets, softcap, compute_dtype_of(hidden_states), needs_gradient
    )
    divisor = len(targets) if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(divisor):
        divisor = divisor.to(total.device)
    return total / divisor


def is_plain_linear(module: nn.Module) -> bool:
    """Whether `linear_cross_entropy` can read the head's weight directly: a bias-free, unquantized `nn.Linear`
    without hooks or adapters (a peft-wrapped or bitsandbytes head keeps the usual path)."""
    return type(module) is nn.Linear and module.bias is None and not module._forward_hooks and not module._forward_pre_hooks
