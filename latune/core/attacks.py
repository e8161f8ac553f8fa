"""l_inf PGD (Madry et al. 2018) and FGSM (Goodfellow et al. 2015) on models with inputs in [0,1].

Inputs are float[B,C,H,W] images in [0,1] pixel units; the model normalises internally, so ε and α
are in those units (8/255 is the CIFAR standard). Only the input gets gradients: parameters are
frozen during the attack, so the attack neither computes nor accumulates parameter gradients.
Batch-norm runs in eval mode while attacking by default (the attack's forward passes must not move
the running statistics), and the model's mode and requires_grad flags are restored afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["LossFn", "pgd", "fgsm", "input_gradient", "attack_mode"]

# loss_fn(logits float[B, K+M], batch_index long[B]) -> scalar to *increase*; summed over the
# batch (not averaged) so that the gradient of each image does not shrink with batch size.
LossFn = Callable[[Tensor, Tensor], Tensor]


@contextlib.contextmanager
def attack_mode(model: nn.Module, bn_eval: bool = True) -> Iterator[None]:
    """Freeze parameters (and put the model in eval mode if bn_eval); restore both on exit."""
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    if bn_eval:
        model.eval()
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def _gradient(model: nn.Module, x: Tensor, loss_fn: LossFn, index: Tensor, autocast_dtype: torch.dtype | None) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        logits = model(x)
    loss = loss_fn(logits.float(), index)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def input_gradient(model: nn.Module, x: Tensor, loss_fn: LossFn, index: Tensor | None = None, *,
                   bn_eval: bool = True) -> Tensor:
    """d loss_fn / d x for a batch, with the model in attack mode; float[B,C,H,W]."""
    index = torch.arange(x.shape[0], device=x.device) if index is None else index
    with attack_mode(model, bn_eval):
        return _gradient(model, x, loss_fn, index, None)


def pgd(model: nn.Module, x: Tensor, loss_fn: LossFn, *, eps: float, alpha: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None, bn_eval: bool = True,
        autocast_dtype: torch.dtype | None = None, check_gradients: bool = False) -> Tensor:
    """Projected gradient ascent of loss_fn in the l_inf ball of radius eps around x, clipped to [0,1].

    x: float[B,C,H,W] in [0,1]. Random start: uniform in [-eps, eps] (drawn from ``generator``, on
    x's device). Each step: x ← clip_[0,1](Π_eps(x + α·sign(∇x loss))). eps=0 or steps=0 returns x
    unchanged (a copy, detached). autocast_dtype (e.g. torch.bfloat16) runs the forward passes in that
    precision; evaluation attacks use fp32. check_gradients warns when the first step's gradient is
    zero everywhere (a sign of gradient masking or a saturated softmax).
    Returns the adversarial batch, detached.
    """
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()
    index = torch.arange(x.shape[0], device=x.device)
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x + (2 * noise - 1) * eps).clamp_(0, 1)
    else:
        x_adv = x.clone()
    with attack_mode(model, bn_eval):
        for step in range(steps):
            grad = _gradient(model, x_adv, loss_fn, index, autocast_dtype)
            if check_gradients and step == 0 and not bool(grad.any()):
                warnings.warn("PGD: the input gradient is zero for the whole batch; robust accuracy may be "
                              "overestimated (gradient masking or saturated softmax)", RuntimeWarning, stacklevel=2)
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)
    return x_adv.detach()


def fgsm(model: nn.Module, x: Tensor, loss_fn: LossFn, *, eps: float, bn_eval: bool = True) -> Tensor:
    """One signed-gradient step of size eps from x (no random start), clipped to [0,1]."""
    return pgd(model, x, loss_fn, eps=eps, alpha=eps, steps=1, random_start=False, bn_eval=bn_eval)
