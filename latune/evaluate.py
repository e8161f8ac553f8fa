"""Evaluate a model on a split: clean and PGD-k accuracy, class by class, and the transformation head.

Evaluation is always fp32, with the model in eval mode (restored afterwards). An image counts as
robust only if it is classified correctly clean and after every one of the ``restarts`` PGD runs
(the RobustBench convention), so robust accuracy can never exceed clean accuracy here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from latune import attacks, labels, metrics, transforms
from latune.data import Split, to_float

__all__ = ["evaluate"]


def evaluate(model: nn.Module, split: Split, *, num_classes: int, eps: float, alpha: float, steps: int,
             restarts: int = 1, batch_size: int = 256, max_images: int = 0, seed: int = 0,
             transform_ops: Sequence[str] = (), num_extra: int = 0, severity: int = 3,
             perturbation_eps: float = 0.0) -> dict[str, float | list[float]]:
    """Metrics of ``model`` on ``split`` (first ``max_images`` images if > 0).

    Returns clean_* and robust_* metrics (see latune.metrics.summarize) and, when transform_ops
    are given (LA runs), ``transform_acc``: accuracy of argmax over the M transformation logits on
    the split's images each transformed by a random op of the set (p=1). Deterministic under seed.
    """
    images, targets = split.images, split.labels
    if max_images:
        images, targets = images[:max_images], targets[:max_images]
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed)
    groups = transforms.label_groups(transform_ops, num_extra) if transform_ops else ()
    was_training = model.training
    model.eval()
    clean_correct, robust_correct, head_hits = [], [], 0
    try:
        for start in range(0, len(images), batch_size):
            x = to_float(images[start:start + batch_size])
            y = targets[start:start + batch_size]

            def class_loss(logits: Tensor, index: Tensor, y: Tensor = y) -> Tensor:
                return nn.functional.cross_entropy(labels.class_logits(logits, num_classes), y[index], reduction="sum")

            with torch.no_grad():
                clean = labels.predict(model(x), num_classes)
            survived = clean == y
            for _ in range(restarts if eps > 0 and steps > 0 else 0):
                x_adv = attacks.pgd(model, x, class_loss, eps=eps, alpha=alpha, steps=steps, random_start=True,
                                    generator=generator, check_gradients=start == 0)
                with torch.no_grad():
                    survived &= labels.predict(model(x_adv), num_classes) == y
            clean_correct.append(clean == y)
            robust_correct.append(survived)
            if transform_ops:
                ctx = transforms.TransformContext(
                    generator=generator, severity=severity, eps=perturbation_eps,
                    input_gradient=lambda xs, idx, loss=class_loss: attacks.input_gradient(model, xs, loss, idx))
                x_t, z = transforms.apply_label_augmentation(x, transform_ops, num_extra, 1.0, ctx)
                with torch.no_grad():
                    head = model(x_t)[:, num_classes:].argmax(dim=1)
                head_hits += int((head == z).sum())
    finally:
        model.train(was_training)
    clean_all, robust_all = torch.cat(clean_correct), torch.cat(robust_correct)
    total = len(targets)
    result = metrics.summarize("clean", metrics.class_errors(clean_all, targets, num_classes),
                               int(clean_all.sum()), total)
    if eps > 0 and steps > 0:
        result.update(metrics.summarize("robust", metrics.class_errors(robust_all, targets, num_classes),
                                        int(robust_all.sum()), total))
    else:  # no attack: robust equals clean by definition; keep the keys so every report has them
        result.update({k.replace("clean", "robust", 1): v for k, v in list(result.items())})
    if transform_ops:
        result["transform_acc"] = head_hits / total if total else float("nan")
    return result
