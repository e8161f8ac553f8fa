"""Evaluate a model on a split: clean and PGD-k accuracy, class by class, the transformation head, and
common corruptions.

Evaluation is always fp32, with the model in eval mode (restored afterwards), and is configured by one
``EvalSettings`` (``EvalSettings.from_config`` of a resolved run config). An image counts as robust only if it is
classified correctly clean and after every one of the ``restarts`` PGD runs (the RobustBench convention), so
robust accuracy can never exceed clean accuracy here; at radius 0 (or 0 steps) there are no robust_* metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latune.config import Config
from latune.core import attacks, labels, metrics, transforms
from latune.core.data import Split, to_float
from latune.core.outcomes import identify_test_set
from latune.registry import CORRUPTIONS, corruption_names

__all__ = ["EvalSettings", "evaluate", "evaluate_corruptions", "CorruptionFiles"]

# (corruption, severity) -> (uint8 images [N,C,H,W], labels [N]) of a released CIFAR-C file, or None when absent
CorruptionFiles = Callable[[str, int], "tuple[Tensor, Tensor] | None"]


@dataclass(frozen=True)
class EvalSettings:
    """How a run is evaluated: the eval.* settings of its resolved config plus the label layout they need."""

    num_classes: int  # K: the class logits, first in the model's output
    eps: float  # l_inf radius of the PGD attack in [0,1] pixel units; 0 = no attack, no robust_* metrics
    alpha: float  # PGD step size, [0,1] pixel units
    steps: int  # PGD iterations; 0 = no attack, no robust_* metrics
    restarts: int = 1  # random restarts; an image is robust only if it survives every one
    batch_size: int = 256  # images per batch
    max_images: int = 0  # evaluate the first N images of a split; 0 = all
    seed: int = 0  # seeds the random starts, the transformations and the corruptions
    transform_ops: tuple[str, ...] = ()  # the LA set's ops (transform_acc); () = LA off
    num_extra: int = 0  # M: transformation logits after the K class logits
    severity: int = 3  # la.severity of the transformations
    perturbation_eps: float = 0.0  # la.perturbation_eps: size of the fgsm / uniform_noise ops
    corruptions: tuple[str, ...] = ()  # common corruptions evaluated (evaluate_corruptions)
    corruption_severities: tuple[int, ...] = (1, 2, 3, 4, 5)  # their severities, each in 1..5

    @property
    def attacked(self) -> bool:
        """Whether robust_* metrics are measured: a radius and steps above 0."""
        return self.eps > 0 and self.steps > 0

    @classmethod
    def from_config(cls, config: Config, num_classes: int) -> EvalSettings:
        """The settings of a resolved config (``latune.config.resolve``) for a data set of ``num_classes``."""
        e, la = config.eval, config.la
        if e.eps is None or e.alpha is None or la.perturbation_eps is None:
            raise ValueError("EvalSettings.from_config needs a resolved config (latune.config.resolve)")
        return cls(num_classes=num_classes, eps=e.eps, alpha=e.alpha, steps=e.steps, restarts=e.restarts,
                   batch_size=e.batch_size, max_images=e.max_images, seed=config.seed,
                   transform_ops=config.la_ops if config.num_extra else (),  # augment_only: no head to score
                   num_extra=config.num_extra, severity=la.severity, perturbation_eps=la.perturbation_eps,
                   corruptions=corruption_names(e.corruptions), corruption_severities=e.corruption_severities)


def _first(split: Split, max_images: int) -> tuple[Tensor, Tensor]:
    if max_images:
        return split.images[:max_images], split.labels[:max_images]
    return split.images, split.labels


def evaluate(model: nn.Module, split: Split, settings: EvalSettings, *,
             outcomes: dict[str, Any] | None = None) -> dict[str, float | list[float]]:
    """Metrics of ``model`` on ``split`` (its first ``settings.max_images`` images if > 0).

    Returns clean_* metrics (see latune.core.metrics.summarize); robust_* metrics (PGD, ``settings.restarts``
    random starts; an image is robust only if classified correctly clean and after every restart) unless
    ``settings.eps`` or ``settings.steps`` is 0, when the run has no robust figures rather than copies of the
    clean ones; and, when ``settings.transform_ops`` are given (LA runs), ``transform_acc``: accuracy of argmax
    over the M transformation logits on the split's images each given a random op of the set (p=1), counted over
    the images the op changed (NaN if none). The model runs in eval mode and gets its mode back afterwards.
    Deterministic under ``settings.seed``. ``outcomes``, when given, gets the per-image labels, num_classes,
    clean_correct, (when attacked) robust_correct and the test_set id of the images (latune.core.outcomes).
    """
    s = settings
    images, targets = _first(split, s.max_images)
    generator = torch.Generator(device=images.device).manual_seed(s.seed)
    was_training = model.training
    model.eval()
    clean_correct, robust_correct, head_hits, head_seen = [], [], 0, 0
    try:
        for start in range(0, len(images), s.batch_size):
            x = to_float(images[start:start + s.batch_size])
            y = targets[start:start + s.batch_size]
            loss = labels.class_loss(y, s.num_classes)
            with torch.no_grad():
                clean_correct.append(labels.predict(model(x), s.num_classes) == y)
            survived = clean_correct[-1].clone()
            for _ in range(s.restarts if s.attacked else 0):
                x_adv = attacks.pgd(model, x, loss, eps=s.eps, alpha=s.alpha, steps=s.steps, random_start=True,
                                    generator=generator, check_gradients=start == 0)
                with torch.no_grad():
                    survived &= labels.predict(model(x_adv), s.num_classes) == y
            robust_correct.append(survived)
            if s.transform_ops:
                hits, seen = _head_hits(model, x, loss, s, generator)
                head_hits, head_seen = head_hits + hits, head_seen + seen
    finally:
        model.train(was_training)
    result = _summary("clean", torch.cat(clean_correct), targets, s.num_classes)
    if s.attacked:
        result.update(_summary("robust", torch.cat(robust_correct), targets, s.num_classes))
    if s.transform_ops:
        result["transform_acc"] = head_hits / head_seen if head_seen else float("nan")
    if outcomes is not None:
        outcomes.update(labels=targets, num_classes=s.num_classes, clean_correct=torch.cat(clean_correct),
                        test_set=identify_test_set(images, targets))
        if s.attacked:
            outcomes["robust_correct"] = torch.cat(robust_correct)
    return result


def _head_hits(model: nn.Module, x: Tensor, loss: attacks.LossFn, s: EvalSettings,
               generator: torch.Generator) -> tuple[int, int]:
    """(images whose transformation head names their op's group, images an op changed) for one batch."""
    ctx = transforms.TransformContext(
        generator=generator, severity=s.severity, eps=s.perturbation_eps,
        input_gradient=lambda xs, idx: attacks.input_gradient(model, xs, loss, idx))
    x_t, z = transforms.apply_label_augmentation(x, s.transform_ops, s.num_extra, 1.0, ctx)
    with torch.no_grad():
        head = model(x_t)[:, s.num_classes:].argmax(dim=1)
    transformed = z >= 0
    return int((head == z)[transformed].sum()), int(transformed.sum())


def _summary(prefix: str, correct: Tensor, targets: Tensor, num_classes: int) -> dict[str, float | list[float]]:
    return metrics.summarize(prefix, metrics.class_errors(correct, targets, num_classes), int(correct.sum()),
                             len(targets))


def _pair_seed(seed: int, name: str, severity: int) -> int:
    # one stream per (corruption, severity): a subset of corruptions gives the same figures as in "all"
    return seed * 1_000_003 + 10 * (CORRUPTIONS.index(name) + 1) + severity


def evaluate_corruptions(model: nn.Module, split: Split, settings: EvalSettings, *, max_images: int | None = None,
                         files: CorruptionFiles | None = None,
                         baseline: Mapping[str, float] | None = None,
                         outcomes: dict[str, Any] | None = None) -> dict[str, float | list[float]]:
    """Accuracy of ``model`` on ``split`` under each of ``settings.corruptions`` at each of its severities.

    Uses the first ``max_images`` images (``settings.max_images`` when None; 0 = all). Corrupted images come from
    ``latune.core.corruptions.corrupt`` (deterministic under ``settings.seed``), or, for a corruption ``files`` has
    (released CIFAR-10-C/-100-C arrays of the same test images), from the files; their labels must match the
    split's. Returns the CE figures of ``metrics.corruption_errors`` (``ce_*``, ``mce``, ``mce_vs_baseline`` with a
    baseline) and ``corruption_*`` metrics as ``metrics.summarize`` gives them, pooled over every (corruption,
    severity) pair: a class's error is its mean error under corruption, so ``corruption_class_error_sd`` is the
    spread of corruption error between classes. The model runs in eval mode and gets its mode back afterwards.
    ``outcomes``, when given, gets ``corruption_correct``: each image's share of the pairs classified correctly.
    """
    from latune.core.corruptions import FAMILIES

    s = settings
    images, targets = _first(split, s.max_images if max_images is None else max_images)
    was_training = model.training
    model.eval()
    errors: dict[tuple[str, int], float] = {}
    correct_all: list[Tensor] = []
    try:
        for name in s.corruptions:
            for severity in s.corruption_severities:
                released = files(name, severity) if files is not None else None
                correct = _corrupted_hits(model, images, targets, name, severity, released, s)
                errors[(name, severity)] = 1.0 - float(correct.float().mean())
                correct_all.append(correct)
    finally:
        model.train(was_training)
    result: dict[str, float | list[float]] = dict(metrics.corruption_errors(errors, FAMILIES, baseline))
    result.update(_summary("corruption", torch.cat(correct_all), targets.repeat(len(correct_all)), s.num_classes))
    if outcomes is not None:
        outcomes["corruption_correct"] = torch.stack(correct_all).float().mean(dim=0)
    return result


def _corrupted_hits(model: nn.Module, images: Tensor, targets: Tensor, name: str, severity: int,
                    released: tuple[Tensor, Tensor] | None, s: EvalSettings) -> Tensor:
    """bool[N]: which images ``model`` classifies right under corruption ``name`` at ``severity``.

    From the released arrays when given (resized to the split's images), else generated by
    ``latune.core.corruptions.corrupt`` from one generator per (corruption, severity).
    """
    from latune.core.corruptions import corrupt

    device = images.device
    if released is not None:
        source, file_labels = released[0][:len(targets)].to(device), released[1][:len(targets)].to(device)
        if len(file_labels) != len(targets) or not torch.equal(file_labels, targets):
            raise ValueError(f"eval.corruptions_dir: the {name} file's labels do not match the test "
                             "split's (files of another data set?)")
    generator = torch.Generator(device=device).manual_seed(_pair_seed(s.seed, name, severity))
    hits = []
    for start in range(0, len(targets), s.batch_size):
        if released is not None:
            x = to_float(source[start:start + s.batch_size])
            if x.shape[-2:] != images.shape[-2:]:
                x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", antialias=True,
                                  align_corners=False).clamp_(0, 1)
        else:
            x = corrupt(to_float(images[start:start + s.batch_size]), name, severity, generator=generator)
        with torch.no_grad():
            hits.append(labels.predict(model(x), s.num_classes) == targets[start:start + s.batch_size])
    return torch.cat(hits)
