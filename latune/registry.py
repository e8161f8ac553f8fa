"""Closed sets as plain data: transformation sets, common corruptions, and the metrics they add.

The config and sweep-file validation read these names without importing torch, so ``--help``,
``--dry-run`` and ``--list`` stay fast. The implementations (latune.core.transforms, latune.core.corruptions)
take their names from here, and tests/test_registry.py checks that every name has an implementation.
"""

from __future__ import annotations

from latune.errors import ConfigError

__all__ = ["AUGMIX_PRIMITIVES", "TRANSFORM_SETS", "CORRUPTION_FAMILIES", "CORRUPTIONS", "CORRUPTION_SEVERITIES",
           "CORRUPTION_SUMMARY_KEYS", "corruption_names",
           "AUDIT_ATTACKS", "DEFAULT_AUDIT_ATTACKS", "MASKING_GAP", "SAMPLERS", "VALIDATION_METRICS",
           "REPORTED_METRICS"]

# AugMix's `augmentations` list (CIFAR), in its order; the op choice index of the augmix op refers to this order
AUGMIX_PRIMITIVES: tuple[str, ...] = (
    "autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
)

# la.transform_set -> its ops, in label order (la.m splits them into m label groups)
TRANSFORM_SETS: dict[str, tuple[str, ...]] = {
    "augmix": ("augmix",),
    "augmix_ops": AUGMIX_PRIMITIVES,
    "geometric": ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"),
    "photometric": (
        "brightness", "contrast", "saturation", "sharpness", "autocontrast", "equalize", "posterize", "solarize",
    ),
    "perturbations": ("fgsm", "uniform_noise"),
    "noise_blur": ("gaussian_noise", "blur", "uniform_noise"),
    "all": (
        "autocontrast", "equalize", "posterize", "solarize", "rotate", "shear_x", "shear_y", "translate_x",
        "translate_y", "brightness", "contrast", "saturation", "sharpness", "gaussian_noise", "blur", "fgsm",
        "uniform_noise",
    ),
}

# CIFAR-10-C's 15 corruptions by family (Hendrycks & Dietterich 2019), in the released files' order
CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(name for names in CORRUPTION_FAMILIES.values() for name in names)
CORRUPTION_SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# corruption metrics in every report of a run with eval.corruptions (NaN until measured): usable as sweep objectives
CORRUPTION_SUMMARY_KEYS: tuple[str, ...] = (
    "mce", "corruption_acc", "corruption_class_error_mean", "corruption_class_error_sd", "corruption_worst_class_acc",
)

# measured on the validation split at each validation (the first epoch, every eval.every, the last), carried over
# between validations
VALIDATION_METRICS: tuple[str, ...] = (
    "clean_acc", "robust_acc", "clean_class_error_mean", "clean_class_error_sd", "robust_class_error_mean",
    "robust_class_error_sd", "clean_worst_class_acc", "robust_worst_class_acc",
)
# every metric a trial reports in every epoch, usable as a sweep objective or constraint (corruption summaries are
# NaN until their first evaluation: eval.corruption_every, else the last epoch)
REPORTED_METRICS: tuple[str, ...] = (*VALIDATION_METRICS, "train_loss", "images_per_s", *CORRUPTION_SUMMARY_KEYS)

# the stronger-attack audit (latune.core.audit): attack name -> default iterations; torchattacks implements them
AUDIT_ATTACKS: dict[str, int] = {"pgd40": 40, "apgd-ce": 100, "autoattack": 100}
DEFAULT_AUDIT_ATTACKS: tuple[str, ...] = ("pgd40", "apgd-ce")
MASKING_GAP = 0.05  # robust-accuracy gap (absolute, in [0,1]) between pgd40 and a stronger attack that warns

# search.sampler of algorithm: optuna sweeps (latune.sweep.samplers builds them): NSGA-II, multi-objective TPE,
# Gaussian process (logEHVI, constraint-aware) and random search
SAMPLERS: tuple[str, ...] = ("nsga2", "tpe", "gp", "random")


def corruption_names(spec: str) -> tuple[str, ...]:
    """The corruptions named by ``eval.corruptions``: none, all, a family, or a comma list of names."""
    text = spec.strip()
    if text == "none":
        return ()
    if text == "all":
        return CORRUPTIONS
    if text in CORRUPTION_FAMILIES:
        return CORRUPTION_FAMILIES[text]
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise ConfigError(f"eval.corruptions: unknown {', '.join(map(repr, unknown)) or repr(spec)}; allowed: none, "
                          f"all, {', '.join(CORRUPTION_FAMILIES)} or a comma list of {', '.join(CORRUPTIONS)}")
    return names
