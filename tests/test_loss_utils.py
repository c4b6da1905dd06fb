import pytest
import torch
import torch.nn.functional as F
from torch import nn

from r2gen_hf import loss_utils
from r2gen_hf.loss_utils import is_plain_linear, linear_cross_entropy


N, H, V = 11, 16, 50


def reference_loss(hidden, head, targets, softcap=None, num_items_in_batch=None):
    """The unfused path: logits, soft-cap, float32 cross-entropy (mean, or sum / num_items_in_batch)."""
    logits = head(hidden)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(logits.float(), targets, reduction=reduction)
    return loss if num_items_in_batch is None else loss / num_items_in_batch


def loss_and_grads(loss_fn, hidden, head, targets, **kwargs):
    hidden = hidden.detach().clone().requires_grad_()
    head.zero_grad()
    loss = loss_fn(hidden, head, targets, **kwargs)
    loss.backward()
    return loss.detach(), hidden.grad, head.weight.grad.clone()


@pytest.fixture
def problem():
    torch.manual_seed(0)
    head = nn.Linear(H, V, bias=False)
    hidden = torch.randn(N, H) * 3
    targets = torch.randint(0, V, (N,))
    return hidden, head, targets


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("num_items_in_batch", [None, 7, torch.tensor(30)])
def test_matches_the_unfused_loss_and_gradients(problem, monkeypatch, softcap, num_items_in_batch):
    """Loss, gradient of the hidden states and of the head's weight, in float32, over several row blocks."""
    monkeypatch.setattr(loss_utils, "rows_per_block", lambda logits: 3)  # 11 rows: blocks of 3, 3, 3, 2
    hidden, head, targets = problem
    kwargs = {"softcap": softcap, "num_items_in_batch": num_items_in_batch}
    expected = loss_and_grads(reference_loss, hidden, head, targets, **kwargs)
    fused = loss_and_grads(linear_cross_entropy, hidden, head, targets, **kwargs)
    for got, want, name in zip(fused, expected, ("loss", "hidden grad", "weight grad")):
        torch.testing.assert_close(got, want, msg=name)
    assert expected[0] > 0 and expected[2].abs().sum() > 0


def test_without_gradients_only_the_loss_is_computed(problem, monkeypatch):
    """Evaluation (no_grad): the same loss, and the logits are not turned into their gradient."""
    hidden, head, targets = problem
    expected = reference_loss(hidden, head, targets).detach()
    kept = []
    original = loss_utils._loss_and_logit_gradient

    def spy(logits, *args):
        result = original(logits, *args)
        kept.append(logits.clone())
        return result

    monkeypatch.setattr(loss_utils, "_loss_and_logit_gradient", spy)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, head, targets), expected)
    torch.testing.assert_close(kept[0], hidden @ head.weight.T)  # still the logits: no gradient written
    linear_cross_entropy(hidden.requires_grad_(), head, targets)
    assert torch.allclose(kept[1].sum(-1), torch.zeros(N), atol=1e-5)  # softmax - one-hot: rows sum to 0


def test_frozen_head_gets_no_gradient_and_keeps_none(problem):
    hidden, head, targets = problem
    head.weight.requires_grad_(False)
    hidden = hidden.clone().requires_grad_()
    linear_cross_entropy(hidden, head, targets).backward()
    assert head.weight.grad is None and hidden.grad is not None


def test_under_bf16_autocast_matches_the_autocast_path(problem):
    """Under autocast the matmuls run in bf16 as autocast would run them; loss and softmax stay float32."""
    hidden, head, targets = problem
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = loss_and_grads(reference_loss, hidden, head, targets)
        fused = loss_and_grads(linear_cross_entropy, hidden, head, targets)
    assert fused[0].dtype == torch.float32
    assert fused[1].dtype == hidden.dtype and fused[2].dtype == head.weight.dtype
    for got, want, name in zip(fused, expected, ("loss", "hidden grad", "weight grad")):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3, msg=name)


def test_bf16_head_on_float32_hidden_states(problem):
    """A frozen bf16 head (the demo's weights) with float32 LoRA activations: computed in the hidden states'
    dtype when autocast is off, as `nn.Linear` would refuse to; here the head is cast, not the activations."""
    hidden, head, targets = problem
    head = head.to(torch.bfloat16).requires_grad_(False)
    hidden = hidden.requires_grad_()
    loss = linear_cross_entropy(hidden, head, targets)
    loss.backward()
    expected = F.cross_entropy(hidden @ head.weight.float().T, targets)
    torch.testing.assert_close(loss, expected)
    assert hidden.grad.dtype == torch.float32


def test_ignored_targets_and_wrong_shapes_are_refused(problem):
    hidden, head, targets = problem
    targets = targets.clone()
    targets[2] = -100
    with pytest.raises(ValueError, match=r"negative targets \(\[-100\]\).*labels != -100"):
        linear_cross_entropy(hidden, head, targets)
    with pytest.raises(ValueError, match=r"hidden states \(N, H\).*\(1, 11, 16\)"):
        linear_cross_entropy(hidden[None], head, targets.clamp(min=0))


def test_only_plain_bias_free_linear_heads_are_fused():
    assert is_plain_linear(nn.Linear(4, 8, bias=False))
    assert not is_plain_linear(nn.Linear(4, 8, bias=True))
    hooked = nn.Linear(4, 8, bias=False)
    hooked.register_forward_hook(lambda module, args, output: output * 2)
    assert not is_plain_linear(hooked)
    assert not is_plain_linear(nn.Sequential(nn.Linear(4, 8, bias=False)))


def test_cpu_blocks_fit_in_cache():
    logits = torch.empty(0, 262_144)
    assert loss_utils.rows_per_block(logits) == 8
    assert loss_utils.rows_per_block(torch.empty(0, 10**9)) == 1
