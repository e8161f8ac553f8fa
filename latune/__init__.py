"""latune: sweeps of adversarial training with label augmentation (arXiv 2503.16179)."""

__version__ = "0.1.0"
