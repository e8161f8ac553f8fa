"""A helper of the attack tests: a small CNN trained on clean digits, the model attacks are tried on."""

from __future__ import annotations

import torch
from torch import nn

from latune.core.data import DataBundle, iterate_batches, to_float
from latune.core.models import build_model


def train_clean_small_cnn(digits: DataBundle, epochs: int) -> nn.Module:
    """latune's small CNN (seed 0) trained ``epochs`` clean epochs with SGD on ``digits.train``; in eval mode."""
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, num_extra=0, in_channels=1, image_size=digits.image_size,
                        mean=digits.mean, std=digits.std)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for x, y in iterate_batches(digits.train, 64, generator=generator, drop_last=True):
            loss = nn.functional.cross_entropy(model(to_float(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()
