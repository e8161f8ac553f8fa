"""Label-augmentation targets and the soft-target loss (Amerehi & Healy, arXiv 2503.16179).

The head predicts K class logits followed by M transformation logits. A transformed image with class
y and transformation group z gets the target concat((1-δ)·onehot(y), δ·onehot(z)); an untransformed
one gets concat(onehot(y), 0). Predictions and every metric use only the first K logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from latune.core.attacks import LossFn

__all__ = ["la_targets", "soft_cross_entropy", "class_logits", "predict", "class_loss", "target_loss"]


def la_targets(labels: Tensor, groups: Tensor, num_classes: int, num_extra: int, delta: float) -> Tensor:
    """Soft targets float[B, K+M] (each row sums to 1).

    labels: long[B] in [0, K). groups: long[B], the transformation's label group in [0, M) or -1 for
    an untransformed image. With δ=0 or M=0 this is exactly one-hot(y) padded with M zeros.
    """
    batch = labels.shape[0]
    targets = torch.zeros(batch, num_classes + num_extra, device=labels.device)
    targets[torch.arange(batch, device=labels.device), labels] = 1.0
    if num_extra == 0 or delta == 0:
        return targets
    transformed = groups >= 0
    rows = torch.nonzero(transformed).squeeze(1)
    targets[rows, labels[rows]] = 1.0 - delta
    targets[rows, num_classes + groups[rows]] = delta
    return targets


def soft_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of soft targets over all K+M logits: -Σ_j t_j log softmax(logits)_j.

    Computed in fp32 even under bf16 autocast, because log-softmax of low-precision logits loses the
    small δ share of the target.
    """
    per_image = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return per_image.sum()
    return per_image.mean()


def class_logits(logits: Tensor, num_classes: int) -> Tensor:
    """The first K logits: the class head, the only part used at test time."""
    return logits[:, :num_classes]


def predict(logits: Tensor, num_classes: int) -> Tensor:
    """Predicted class long[B]: argmax over the first K logits."""
    return logits[:, :num_classes].argmax(dim=1)


def class_loss(labels: Tensor, num_classes: int) -> LossFn:
    """The attacks' loss for class labels long[B]: summed cross-entropy of the first K logits.

    ``loss(logits float[B', K+M], index long[B'])`` scores the images at positions ``index`` of the batch
    ``labels`` belongs to (fgsm in label augmentation attacks a sub-batch).
    """
    def loss(logits: Tensor, index: Tensor) -> Tensor:
        return F.cross_entropy(class_logits(logits, num_classes), labels[index], reduction="sum")

    return loss


def target_loss(targets: Tensor) -> LossFn:
    """The attacks' loss for soft LA targets float[B, K+M]: summed soft cross-entropy over all K+M logits."""
    def loss(logits: Tensor, index: Tensor) -> Tensor:
        return soft_cross_entropy(logits, targets[index], reduction="sum")

    return loss
