"""One typed configuration for a latune run, and its flat dotted-key form.

A run is described by nested frozen dataclasses (data, model, attack, la, optim, eval, plus seed and
device). Sweeps, CLIs and MLflow speak the flat form: ``{"attack.eps": 0.03, "la.delta": 0.1, ...}``.
``from_flat`` maps flat keys onto the dataclasses, coerces command-line strings, rejects unknown keys
and checks every range and name; ``to_flat`` maps back. Any bad value raises ``ConfigError`` whose
message is one line naming the field and what is allowed, before any data is loaded or run created.

Settings left ``None`` are filled by ``resolve``: from the data set's preset (architecture, image size, batch
size, epochs, ε, crop and flip), so ``--data cifar10`` alone gives the paper-scale run, then the derived ones
(PGD steps ε/4, the evaluation radius, the perturbation ops' size), so a run records every value it used.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from latune._config_values import coerce, parse_number
from latune.errors import ConfigError
from latune.registry import TRANSFORM_SETS, corruption_names

__all__ = [
    "Config", "ConfigError", "DataConfig", "ModelConfig", "AttackConfig", "LAConfig", "OptimConfig",
    "EvalConfig", "PRESETS", "from_flat", "to_flat", "resolve", "describe_keys", "parse_number",
]

DataName = Literal["digits", "mnist", "cifar10", "cifar100", "svhn", "imagefolder"]
ArchName = Literal["small_cnn", "preact_resnet18", "wrn34_10", "resnet50"]


@dataclass(frozen=True)
class DataConfig:
    name: DataName = "digits"  # data set; digits (scikit-learn, embedded) needs no download
    data_dir: str | None = None  # root of downloaded data sets; None -> $LATUNE_DATA or ~/.cache/latune/data
    image_size: int | None = None  # side of the square images fed to the model, pixels; None -> preset
    val_fraction: float = 0.15  # share of the training images held out for model selection
    test_fraction: float = 0.15  # digits only: share of all images held out as the test split
    batch_size: int | None = None  # training images per step; None -> preset
    crop_padding: int | None = None  # random-crop zero padding, pixels; 0 = no crop; None -> preset
    flip: bool | None = None  # random horizontal flips; None -> preset (off for digits, MNIST, SVHN)
    limit_train: int = 0  # keep only this many training images (small mode); 0 = all


@dataclass(frozen=True)
class ModelConfig:
    arch: ArchName | None = None  # network; None -> preset
    small_stem: bool | None = None  # resnet50 only: 3x3 stride-1 stem without max-pool; None -> when image <= 64 px
    channels_last: bool = False  # NHWC memory format (faster convolutions on GPUs)


@dataclass(frozen=True)
class AttackConfig:
    """The PGD l_inf attack used to make training examples (Madry et al. 2018)."""

    eps: float | None = None  # l_inf radius in [0,1] pixel units; 0 = standard training; None -> preset
    alpha: float | None = None  # PGD step size in [0,1] pixel units; None -> attack.eps/4
    steps: int = 10  # PGD iterations during training
    random_start: bool = True  # start from a uniform point in the eps-ball
    bn_eval: bool = True  # batch-norm in eval mode while attacking (statistics not polluted by the attack)
    target: Literal["la", "class"] = "la"  # loss the attack raises: LA soft target over K+M logits, or class label only


@dataclass(frozen=True)
class LAConfig:
    """Label augmentation (Amerehi & Healy, arXiv 2503.16179)."""

    # la: transformed images are labelled (δ on their transformation group, K+M logits); augment_only: the same
    # transformations with plain one-hot labels and a K-logit head, to tell data augmentation from label augmentation
    mode: Literal["la", "augment_only"] = "la"  # la or augment_only (needs la.delta 0, a set, la.p > 0)
    delta: float = 0.1  # share of the target given to the transformation label, in [0,1); 0 = LA off ("Adv")
    transform_set: str = "augmix_ops"  # named set of transformations (latune.TRANSFORM_SETS), or "none"
    m: int | None = None  # label granularity: the set's ops split into m label groups; None -> one label per op
    p: float = 0.5  # probability that a training image is transformed (and labelled with its group)
    severity: int = 3  # AugMix-style magnitude 1..10 of the transformations
    perturbation_eps: float | None = None  # l_inf size of the fgsm/uniform_noise kinds; None -> attack.eps


@dataclass(frozen=True)
class OptimConfig:
    epochs: int | None = None  # passes over the training split; None -> preset
    lr: float | None = None  # peak learning rate of SGD; None -> preset
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty
    nesterov: bool = True  # Nesterov momentum
    schedule: Literal["cosine", "multistep", "onecycle", "constant"] = "cosine"  # learning-rate schedule, per step
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of training where lr is multiplied by gamma
    gamma: float = 0.1  # multistep decay factor
    precision: Literal["fp32", "bf16"] = "fp32"  # training forward/backward (attack included); evaluation is fp32


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: clean and PGD-k (PGD-40 by default) accuracy, class by class."""

    eps: float | None = None  # l_inf radius of the evaluation attack; 0 = no robust_* metrics; None -> preset eps
    alpha: float | None = None  # step size; None -> eval.eps/4
    steps: int = 40  # PGD iterations
    restarts: int = 1  # random restarts; an image counts as robust only if it survives all
    every: int = 1  # evaluate on the validation split every N epochs (and always on the first and last)
    test_every: int = 0  # also clean/robust test_* metrics every N epochs (learning curves of a record); 0 = last only
    max_images: int = 0  # evaluate on at most this many images per split (first N, fixed); 0 = all
    batch_size: int = 256  # images per evaluation batch
    # common corruptions evaluated after the last epoch: none, all, a family (noise, blur, weather, digital)
    # or a comma list of corruption names (latune.registry.CORRUPTIONS)
    corruptions: str = "none"  # none, all, noise, blur, weather, digital or names, e.g. fog,snow
    corruption_severities: tuple[int, ...] = (1, 2, 3, 4, 5)  # CIFAR-C severities evaluated, each in 1..5
    corruption_every: int = 0  # also every N epochs on corruption_max_images validation images; 0 = last epoch only
    corruption_max_images: int = 256  # images of the validation split for the every-N-epochs corruption evaluation
    corruptions_dir: str | None = None  # folder of CIFAR-10-C/-100-C .npy files: the test split uses them when present
    corruption_baseline: str | None = None  # metrics.json of a baseline run (latune.train): adds mce_vs_baseline


@dataclass(frozen=True)
class Config:
    """A whole run: data, model, attack, LA, optimiser and evaluation settings, seed and device (flat dotted keys
    with ``from_flat``/``to_flat``; ``resolve`` fills what the data set's preset decides)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    la: LAConfig = field(default_factory=LAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0  # seeds the split, the initialisation, batches, transformations and attacks
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda" or "cuda:N"

    @property
    def la_active(self) -> bool:
        """Label augmentation is on (la.mode la, δ > 0 and a transformation set): K+M logits, LA targets.
        Otherwise the run is the "Adv" baseline, or with la.mode augment_only its augmentation-only arm."""
        return self.la.mode == "la" and self.la.delta > 0 and self.la.transform_set != "none"

    @property
    def augment_only(self) -> bool:
        """The LA set's transformations are applied to training images with plain labels (la.mode augment_only)."""
        return self.la.mode == "augment_only"

    @property
    def la_ops(self) -> tuple[str, ...]:
        """The transformation ops applied to training images (the LA set, in label order): with LA on or
        augment_only; () otherwise."""
        return TRANSFORM_SETS[self.la.transform_set] if self.la_active or self.augment_only else ()

    @property
    def num_extra(self) -> int:
        """M: transformation logits after the K class logits (la.m, else one per op); 0 when LA is off."""
        return (self.la.m or len(self.la_ops)) if self.la_active else 0


# Per-data-set defaults for the settings left None. Plain data: edit here to change a preset.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"optim.lr": 0.02, "model.arch": "small_cnn", "data.image_size": 16, "data.batch_size": 64, "optim.epochs": 10,
               "attack.eps": 0.1, "data.crop_padding": 1, "data.flip": False},
    "mnist": {"optim.lr": 0.02, "model.arch": "small_cnn", "data.image_size": 28, "data.batch_size": 128, "optim.epochs": 10,
              "attack.eps": 0.3, "data.crop_padding": 0, "data.flip": False},
    "cifar10": {"optim.lr": 0.1, "model.arch": "preact_resnet18", "data.image_size": 32, "data.batch_size": 128,
                "optim.epochs": 100, "attack.eps": 8 / 255, "data.crop_padding": 4, "data.flip": True},
    "cifar100": {"optim.lr": 0.1, "model.arch": "preact_resnet18", "data.image_size": 32, "data.batch_size": 128,
                 "optim.epochs": 100, "attack.eps": 8 / 255, "data.crop_padding": 4, "data.flip": True},
    "svhn": {"optim.lr": 0.01, "model.arch": "preact_resnet18", "data.image_size": 32, "data.batch_size": 128,
             "optim.epochs": 50, "attack.eps": 8 / 255, "data.crop_padding": 4, "data.flip": False},
    "imagefolder": {"optim.lr": 0.1, "model.arch": "resnet50", "data.image_size": 64, "data.batch_size": 128,
                    "optim.epochs": 90, "attack.eps": 4 / 255, "data.crop_padding": 8, "data.flip": True},
}

_SECTIONS = ("data", "model", "attack", "la", "optim", "eval")


# ---------------------------------------------------------------- flat <-> nested

def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _leaf_fields() -> dict[str, tuple[Any, Any]]:
    """Flat key -> (type, default) for every setting, in declaration order."""
    leaves: dict[str, tuple[Any, Any]] = {}
    for name, typ in _field_types(Config).items():
        if name in _SECTIONS:
            section_defaults = typ()
            for sub, sub_typ in _field_types(typ).items():
                leaves[f"{name}.{sub}"] = (sub_typ, getattr(section_defaults, sub))
        else:
            leaves[name] = (typ, getattr(Config(), name))
    return leaves


def to_flat(config: Config) -> dict[str, Any]:
    """Dotted-key dict of every setting (tuples become lists, so the dict is JSON/YAML-able)."""
    flat: dict[str, Any] = {}
    for key in _leaf_fields():
        section, _, sub = key.partition(".")
        value = getattr(getattr(config, section), sub) if sub else getattr(config, section)
        flat[key] = list(value) if isinstance(value, tuple) else value
    return flat


def from_flat(flat: Mapping[str, Any] | None = None, *, base: Config | None = None) -> Config:
    """Build a validated Config from dotted keys over ``base`` (defaults if None).

    Values may be typed (from YAML or a sweep) or strings (from ``--set key=value``); strings are
    parsed by the field's type ("8/255" for floats, "true"/"false", "none", comma lists).
    """
    leaves = _leaf_fields()
    values = to_flat(base) if base is not None else {k: d for k, (_, d) in leaves.items()}
    for key, raw in (flat or {}).items():
        if key not in leaves:
            close = difflib.get_close_matches(str(key), leaves, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}; run with --help to list the keys")
        values[key] = coerce(key, leaves[key][0], raw)
    sections: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    top: dict[str, Any] = {}
    for key, value in values.items():
        section, _, sub = key.partition(".")
        if sub:
            sections[section][sub] = coerce(key, leaves[key][0], value)
        else:
            top[key] = coerce(key, leaves[key][0], value)
    types_ = _field_types(Config)
    config = Config(**{s: types_[s](**kw) for s, kw in sections.items()}, **top)
    validate(config)
    return config


def resolve(config: Config) -> Config:
    """Fill every setting left None; the result is what a run uses and records (metrics.json, MLflow).

    First from the data set's preset (``PRESETS``), then the derived settings: attack.alpha = attack.eps/4,
    eval.eps = the preset's attack.eps (the data set's standard radius, not the training one: a model trained at
    ε = 0 is still attacked), eval.alpha = eval.eps/4 and la.perturbation_eps = attack.eps. Idempotent.
    """
    preset = PRESETS[config.data.name]
    flat = to_flat(config)
    filled = {k: v for k, v in preset.items() if flat[k] is None}
    eps = filled.get("attack.eps", flat["attack.eps"])
    eval_eps = preset["attack.eps"] if flat["eval.eps"] is None else flat["eval.eps"]
    derived = {"attack.alpha": eps / 4, "eval.eps": eval_eps, "eval.alpha": eval_eps / 4, "la.perturbation_eps": eps}
    filled.update({k: v for k, v in derived.items() if flat[k] is None})
    return from_flat(filled, base=config) if filled else config


# ---------------------------------------------------------------- validation

def _check(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")


def validate(config: Config) -> None:
    """Raise ConfigError for the first out-of-range value or unknown name."""
    d, a, la, o, e = config.data, config.attack, config.la, config.optim, config.eval
    for key, value in (("data.image_size", d.image_size), ("data.batch_size", d.batch_size),
                       ("optim.epochs", o.epochs)):
        _check(value is None or value >= 1, key, ">= 1", value)
    _check(0 < d.val_fraction < 1, "data.val_fraction", "in (0, 1)", d.val_fraction)
    _check(0 < d.test_fraction < 1, "data.test_fraction", "in (0, 1)", d.test_fraction)
    _check(d.val_fraction + d.test_fraction < 1, "data.test_fraction", "< 1 - data.val_fraction", d.test_fraction)
    _check(d.crop_padding is None or d.crop_padding >= 0, "data.crop_padding", ">= 0", d.crop_padding)
    _check(d.limit_train >= 0, "data.limit_train", ">= 0 (0 = all)", d.limit_train)
    for key, value in (("attack.eps", a.eps), ("eval.eps", e.eps), ("la.perturbation_eps", la.perturbation_eps)):
        _check(value is None or 0 <= value <= 1, key, "in [0, 1] ([0,1] pixel units)", value)
    for key, value, eps in (("attack.alpha", a.alpha, a.eps), ("eval.alpha", e.alpha, e.eps)):
        # 0 only with eps 0 (no attack): resolve derives alpha = eps/4
        _check(value is None or 0 < value <= 1 or value == eps == 0, key, "in (0, 1] or none (= eps/4)", value)
    _check(a.steps >= 0, "attack.steps", ">= 0", a.steps)
    _check(e.steps >= 0, "eval.steps", ">= 0", e.steps)
    _check(e.restarts >= 1, "eval.restarts", ">= 1", e.restarts)
    _check(e.every >= 1, "eval.every", ">= 1", e.every)
    _check(e.test_every >= 0, "eval.test_every", ">= 0 (0 = after the last epoch only)", e.test_every)
    _check(e.max_images >= 0, "eval.max_images", ">= 0 (0 = all)", e.max_images)
    _check(e.batch_size >= 1, "eval.batch_size", ">= 1", e.batch_size)
    corruption_names(e.corruptions)  # raises ConfigError naming eval.corruptions and the allowed values
    _check(bool(e.corruption_severities) and all(1 <= s <= 5 for s in e.corruption_severities),
           "eval.corruption_severities", "a non-empty list of severities in 1..5", list(e.corruption_severities))
    _check(e.corruption_every >= 0, "eval.corruption_every", ">= 0 (0 = last epoch only)", e.corruption_every)
    _check(e.corruptions_dir is None or d.name in ("cifar10", "cifar100"), "eval.corruptions_dir",
           "none unless data.name is cifar10 or cifar100 (the released CIFAR-C files hold their test sets)",
           e.corruptions_dir)
    _check(e.corruption_max_images >= 1, "eval.corruption_max_images", ">= 1", e.corruption_max_images)
    _check(0 <= la.delta < 1, "la.delta", "in [0, 1)", la.delta)
    _check(0 <= la.p <= 1, "la.p", "in [0, 1]", la.p)
    _check(1 <= la.severity <= 10, "la.severity", "in 1..10", la.severity)
    if la.transform_set != "none" and la.transform_set not in TRANSFORM_SETS:
        raise ConfigError(f"la.transform_set: unknown set {la.transform_set!r}; allowed: none, "
                          + ", ".join(TRANSFORM_SETS))
    if la.transform_set != "none":
        size = len(TRANSFORM_SETS[la.transform_set])
        _check(la.m is None or 1 <= la.m <= size, "la.m", f"in 1..{size} (size of set {la.transform_set!r})", la.m)
    if la.mode == "augment_only":
        _check_augment_only(config)
    if config.la_active or config.augment_only:
        _check_la_can_transform(config)
    _check(o.lr is None or o.lr > 0, "optim.lr", "> 0", o.lr)
    _check(0 <= o.momentum < 1, "optim.momentum", "in [0, 1)", o.momentum)
    _check(o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    _check(all(0 < m < 1 for m in o.milestones), "optim.milestones", "fractions in (0, 1)", list(o.milestones))
    _check(0 < o.gamma <= 1, "optim.gamma", "in (0, 1]", o.gamma)
    _check(not (o.nesterov and o.momentum == 0), "optim.nesterov", "false when optim.momentum is 0", o.nesterov)
    _check(config.seed >= 0, "seed", ">= 0", config.seed)
    dev = config.device
    _check(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()), "device",
           "one of auto, cpu, cuda, cuda:N", dev)


# why an op leaves every image unchanged under a config (None: it may change images); LA labels an image with
# its op's group only when the op changed it, so a set whose every op is idle here would never be learnt
_PERTURBATION_OPS = ("fgsm", "uniform_noise")
_ONE_CHANNEL_DATA = ("digits", "mnist")  # imagefolder's channels are only known once its files are read


def _idle_reason(op: str, config: Config) -> str | None:
    la = config.la
    size = la.perturbation_eps if la.perturbation_eps is not None else config.attack.eps  # None: not resolved yet
    if op in _PERTURBATION_OPS and size == 0:
        return "la.perturbation_eps is 0 (it defaults to attack.eps)"
    if op == "saturation" and config.data.name in _ONE_CHANNEL_DATA:
        return f"{config.data.name} images have one channel"
    return None


def _check_la_can_transform(config: Config) -> None:
    reasons = [_idle_reason(op, config) for op in TRANSFORM_SETS[config.la.transform_set]]
    if reasons and all(reasons):
        raise ConfigError(f"la.transform_set: {config.la.transform_set!r} would leave every image unchanged, "
                          f"because {'; '.join(dict.fromkeys(reasons))}; choose another set or la.delta=0")


def _check_augment_only(config: Config) -> None:
    """Augmentation only transforms images and keeps the labels: δ (the transformation label's share) and m (its
    groups) would do nothing, so they must say so rather than be silently ignored."""
    la = config.la
    _check(la.transform_set != "none", "la.transform_set", "a transformation set with la.mode=augment_only",
           la.transform_set)
    _check(la.p > 0, "la.p", "> 0 with la.mode=augment_only (the share of images transformed)", la.p)
    _check(la.delta == 0, "la.delta", "0 with la.mode=augment_only (the labels stay plain)", la.delta)
    _check(la.m is None, "la.m", "none with la.mode=augment_only (no transformation logits)", la.m)


def describe_keys() -> list[tuple[str, str, str]]:
    """(flat key, default, comment) for every setting; the CLIs print this for --help."""
    import inspect

    comments: dict[str, str] = {}
    for cls_name, cls in (("", Config), *((s, t) for s, t in _field_types(Config).items() if s in _SECTIONS)):
        for line in inspect.getsource(cls).splitlines():
            name, sep, rest = line.strip().partition(":")
            if sep and "#" in rest and name.isidentifier():
                comments[f"{cls_name}.{name}" if cls_name else name] = rest.split("#", 1)[1].strip()
    return [(key, repr(default), comments.get(key, "")) for key, (_, default) in _leaf_fields().items()]
