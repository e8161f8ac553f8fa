"""Evaluate a model on a split: clean and PGD-k accuracy, class by class, the transformation head, and
common corruptions.

Evaluation is always fp32, with the model in eval mode (restored afterwards). An image counts as
robust only if it is classified correctly clean and after every one of the ``restarts`` PGD runs
(the RobustBench convention), so robust accuracy can never exceed clean accuracy here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latune.core import attacks, labels, metrics, transforms
from latune.core.data import Split, to_float
from latune.registry import CORRUPTIONS

__all__ = ["evaluate", "evaluate_corruptions", "CorruptionFiles"]

# (corruption, severity) -> (uint8 images [N,C,H,W], labels [N]) of a released CIFAR-C file, or None when absent
CorruptionFiles = Callable[[str, int], "tuple[Tensor, Tensor] | None"]


def evaluate(model: nn.Module, split: Split, *, num_classes: int, eps: float, alpha: float, steps: int,
             restarts: int = 1, batch_size: int = 256, max_images: int = 0, seed: int = 0,
             transform_ops: Sequence[str] = (), num_extra: int = 0, severity: int = 3,
             perturbation_eps: float = 0.0, outcomes: dict | None = None) -> dict[str, float | list[float]]:
    """Metrics of ``model`` on ``split`` (first ``max_images`` images if > 0).

    Returns clean_* and robust_* metrics (see latune.metrics.summarize) and, when transform_ops
    are given (LA runs), ``transform_acc``: accuracy of argmax over the M transformation logits on
    the split's images each transformed by a random op of the set (p=1). Deterministic under seed.
    ``outcomes``, when given, gets the per-image labels, clean_correct, robust_correct and num_classes
    (latune.core.outcomes).
    """
    images, targets = split.images, split.labels
    if max_images:
        images, targets = images[:max_images], targets[:max_images]
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed)
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
    if outcomes is not None:
        outcomes.update(labels=targets, num_classes=num_classes, clean_correct=clean_all, robust_correct=robust_all)
    return result


def _pair_seed(seed: int, name: str, severity: int) -> int:
    # one stream per (corruption, severity): a subset of corruptions gives the same figures as in "all"
    return seed * 1_000_003 + 10 * (CORRUPTIONS.index(name) + 1) + severity


def evaluate_corruptions(model: nn.Module, split: Split, *, num_classes: int, names: Sequence[str],
                         severities: Sequence[int] = (1, 2, 3, 4, 5), batch_size: int = 256, max_images: int = 0,
                         seed: int = 0, files: CorruptionFiles | None = None,
                         baseline: Mapping[str, float] | None = None,
                         outcomes: dict | None = None) -> dict[str, float | list[float]]:
    """Accuracy of ``model`` on ``split`` (first ``max_images`` if > 0) under each corruption and severity.

    Corrupted images come from ``latune.corruptions.corrupt`` (deterministic under ``seed``), or, for a
    corruption ``files`` has (released CIFAR-10-C/-100-C arrays of the same test images), from the files;
    their labels must match the split's. Returns the CE figures of ``metrics.corruption_errors`` (``ce_*``,
    ``mce``, ``mce_vs_baseline`` with a baseline) and ``corruption_*`` metrics as ``metrics.summarize`` gives
    them, pooled over every (corruption, severity) pair: a class's error is its mean error under corruption,
    so ``corruption_class_error_sd`` is the spread of corruption error between classes. ``outcomes``, when
    given, gets ``corruption_correct``: each image's share of the pairs classified correctly.
    """
    from latune.core.corruptions import FAMILIES, corrupt

    images, targets = split.images, split.labels
    if max_images:
        images, targets = images[:max_images], targets[:max_images]
    device = images.device
    was_training = model.training
    model.eval()
    errors: dict[tuple[str, int], float] = {}
    correct_all: list[Tensor] = []
    try:
        for name in names:
            for severity in severities:
                released = files(name, severity) if files is not None else None
                if released is not None:
                    source, file_labels = released[0][:len(targets)].to(device), released[1][:len(targets)].to(device)
                    if len(file_labels) != len(targets) or not torch.equal(file_labels, targets):
                        raise ValueError(f"eval.corruptions_dir: the {name} file's labels do not match the test "
                                         "split's (files of another data set?)")
                generator = torch.Generator(device=device).manual_seed(_pair_seed(seed, name, severity))
                hits = []
                for start in range(0, len(targets), batch_size):
                    if released is not None:
                        x = to_float(source[start:start + batch_size])
                        if x.shape[-2:] != images.shape[-2:]:
                            x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", antialias=True,
                                              align_corners=False).clamp_(0, 1)
                    else:
                        x = corrupt(to_float(images[start:start + batch_size]), name, severity, generator=generator)
                    with torch.no_grad():
                        hits.append(labels.predict(model(x), num_classes) == targets[start:start + batch_size])
                correct = torch.cat(hits)
                errors[(name, severity)] = 1.0 - float(correct.float().mean())
                correct_all.append(correct)
    finally:
        model.train(was_training)
    result: dict[str, float | list[float]] = dict(metrics.corruption_errors(errors, FAMILIES, baseline))
    pooled = torch.cat(correct_all)
    pooled_labels = targets.repeat(len(correct_all))
    result.update(metrics.summarize("corruption", metrics.class_errors(pooled, pooled_labels, num_classes),
                                    int(pooled.sum()), len(pooled)))
    if outcomes is not None:
        outcomes["corruption_correct"] = torch.stack(correct_all).float().mean(dim=0)
    return result
