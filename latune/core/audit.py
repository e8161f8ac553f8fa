"""Stronger-attack audit of trained models: torchattacks' PGD-40, APGD-CE and AutoAttack, with the
sanity checks of fra31/auto-attack's ``checks.py``. CLI (latune.cli.audit): ``python -m latune.audit
TARGET --attack ...``.

Attacks (l_inf, images in [0,1]; the model normalises internally, so torchattacks needs no normalisation):

- ``pgd40``: PGD (Madry et al. 2018), 40 steps, one random start, step alpha = eps/4. eps/4 is latune's
  ``eval.alpha`` default, so this is the attack behind a run's reported robust_acc (same algorithm,
  torchattacks' code and RNG), and a gap to APGD speaks about exactly those figures. (The common
  2.5*eps/steps rule gives eps/16 at 40 steps: smaller steps that explore the ball less.)
- ``apgd-ce``: APGD with the cross-entropy loss (Croce & Hein 2020), 100 iterations, 1 restart.
- ``autoattack``: AutoAttack version "standard" (APGD-CE, APGD-T, FAB-T, Square with 5000 queries),
  n_classes = K. torchattacks leaves APGD, APGD-T and FAB at 10 iterations; they are set to 100 here,
  as in fra31/auto-attack.

LA models output K+M logits; the attacks see only the first K (``ClassHead``), the ones used at test
time. An image counts as robust only if classified correctly clean and after the attack (RobustBench).
The model runs in eval mode with frozen parameters throughout; its mode and flags are restored after.

Checks (each returned as a line in ``warnings`` and emitted as an ``AuditWarning``):

1. possible gradient masking: apgd-ce's or autoattack's robust accuracy is more than ``masking_gap``
   (absolute, default 0.05) below pgd40's on the same images. APGD may well be a little stronger on any
   model; five points more means PGD's figures (and the sweep's) overstate robustness. With a small
   --steps every attack is weakened and the comparison is only a smoke test.
2. zero gradients: the input gradient of the class cross-entropy is exactly zero for some clean image
   (any, as auto-attack warns): every gradient attack is blind there (saturated softmax, quantisation).
3. robust accuracy above clean: accuracy on an attack's output images alone exceeds clean accuracy, so
   the attack made the model better (a broken attack, or a model that tells clean inputs apart).
4. probability outputs: every output in [0,1] and rows summing to 1 (softmax inside the model), which
   squashes the cross-entropy's gradients. Also: an attack that leaves the eps-ball or [0,1].
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from latune.core import attacks, labels, metrics
from latune.core.data import Split, to_float
from latune.registry import AUDIT_ATTACKS, DEFAULT_AUDIT_ATTACKS, MASKING_GAP

__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "AuditWarning", "ClassHead", "make_attack", "audit", "audit_checks",
           "MASKING_GAP"]

ATTACKS = AUDIT_ATTACKS  # names are plain data in latune.registry (the CLI's --help loads no torch)
DEFAULT_ATTACKS = DEFAULT_AUDIT_ATTACKS
_REFERENCE, _STRONGER = "pgd40", ("apgd-ce", "autoattack")
_PROB_TOL = 1e-5  # auto-attack's tolerance for "rows are probability distributions"


class AuditWarning(RuntimeWarning):
    """An audit check fired: the robust accuracy measured may not be trustworthy."""


class ClassHead(nn.Module):
    """``model``'s first K logits: what the attacks see, float[B, K] for inputs float[B,C,H,W] in [0,1]."""

    def __init__(self, model: nn.Module, num_classes: int):
        super().__init__()
        self.model, self.num_classes = model, num_classes
        # torchattacks restores train() afterwards when the module it got was training, which a fresh
        # module is: start with the wrapped model's mode so it restores nothing that was not there
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return labels.class_logits(self.model(x), self.num_classes)


def make_attack(name: str, head: nn.Module, *, eps: float, num_classes: int, steps: int | None = None,
                seed: int = 0) -> Any:
    """The torchattacks attack ``name`` (a key of ATTACKS) on ``head``.

    steps: iterations (autoattack: of APGD, APGD-T, FAB and the queries of Square); None -> ATTACKS[name]
    and Square's 5000 queries.
    """
    import torchattacks

    explicit, steps = steps, steps or ATTACKS[name]
    if name == "pgd40":
        return torchattacks.PGD(head, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    if name == "apgd-ce":
        return torchattacks.APGD(head, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)
    if name == "autoattack":
        if num_classes < 3:
            raise ValueError(f"--attack autoattack needs at least 3 classes (targeted DLR loss), got {num_classes}")
        attack = torchattacks.AutoAttack(head, norm="Linf", eps=eps, version="standard", n_classes=num_classes,
                                         seed=seed)
        for part in attack._autoattack.attacks:
            if hasattr(part, "steps"):  # APGD, APGD-T, FAB
                part.steps = steps
            elif explicit:  # Square counts queries: 5000 unless a small --steps asks for a smoke test
                part.n_queries = explicit
        return attack
    raise ValueError(f"--attack: unknown attack {name!r}; allowed: {', '.join(ATTACKS)}")


def audit(model: nn.Module, split: Split, *, num_classes: int, eps: float,
          attack_names: Sequence[str] = DEFAULT_ATTACKS, steps: int | None = None, batch_size: int = 256,
          max_images: int = 0, seed: int = 0, masking_gap: float = MASKING_GAP) -> dict[str, Any]:
    """Attack the first ``max_images`` (0 = all) images of ``split`` with each of ``attack_names``.

    Returns {"eps", "images", clean_* and robust_* metrics (latune.metrics.summarize; robust_* = survived
    every attack), "attacks": {name: {"steps", "seconds", "adv_acc" (accuracy on its output images alone),
    robust_*}}, "zero_gradient_images", "probability_outputs", "left_the_ball", "warnings": [str]}.
    Each warning is also emitted as an AuditWarning.
    ``model`` (K+M logits for [0,1] inputs) and ``split`` on the same device. Deterministic under ``seed``;
    the caller's RNG state, the model's mode and its parameters' requires_grad are left as they were.
    """
    limit = max_images or len(split)
    images, targets, device = split.images[:limit], split.labels[:limit], split.images.device
    names = list(dict.fromkeys(attack_names))
    clean_ok, adv_ok = [], {n: [] for n in names}
    zero_grad, probabilities, outside = 0, True, set()
    seconds = dict.fromkeys(names, 0.0)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), attacks.attack_mode(model):
        torch.manual_seed(seed)
        head = ClassHead(model, num_classes)
        built = {n: make_attack(n, head, eps=eps, num_classes=num_classes, steps=steps, seed=seed) for n in names}
        for start in range(0, len(images), batch_size):
            x, y = to_float(images[start:start + batch_size]), targets[start:start + batch_size]
            with torch.no_grad():
                out = model(x)
            clean_ok.append(labels.predict(out, num_classes) == y)
            probabilities &= _looks_like_probabilities(out, num_classes)
            grad = attacks.input_gradient(model, x, labels.class_loss(y, num_classes))
            zero_grad += int((grad.flatten(1).abs().sum(1) == 0).sum())
            for name, attack in built.items():
                started = time.perf_counter()
                x_adv = attack(x, y)
                seconds[name] += time.perf_counter() - started
                if (x_adv - x).abs().max() > eps + 1e-6 or x_adv.min() < 0 or x_adv.max() > 1:
                    outside.add(name)
                with torch.no_grad():
                    adv_ok[name].append(labels.predict(model(x_adv), num_classes) == y)

    total = len(targets)
    clean_all = torch.cat(clean_ok) if clean_ok else torch.zeros(0, dtype=torch.bool)
    result: dict[str, Any] = {"eps": eps, "images": total}
    result.update(_summary("clean", clean_all, targets, num_classes))
    survived_all = clean_all.clone()
    result["attacks"] = {}
    for name in names:
        adv = torch.cat(adv_ok[name]) if adv_ok[name] else torch.zeros(0, dtype=torch.bool)
        survived_all &= adv
        result["attacks"][name] = {"steps": steps or ATTACKS[name], "seconds": seconds[name],
                                   "adv_acc": float(adv.float().mean()) if total else math.nan,
                                   **_summary("robust", clean_all & adv, targets, num_classes)}
    result.update(_summary("robust", survived_all, targets, num_classes))
    result.update(zero_gradient_images=zero_grad, probability_outputs=bool(probabilities and total),
                  left_the_ball=sorted(outside))
    result["warnings"] = audit_checks(result, masking_gap=masking_gap)
    for line in result["warnings"]:
        warnings.warn(line, AuditWarning, stacklevel=2)
    return result


def audit_checks(result: dict[str, Any], *, masking_gap: float = MASKING_GAP) -> list[str]:
    """Warnings (the checks of the module docstring) for an ``audit`` result."""
    found: list[str] = []
    runs, clean, total = result["attacks"], result["clean_acc"], result["images"]
    if _REFERENCE in runs:
        reference = runs[_REFERENCE]["robust_acc"]
        for name in _STRONGER:
            if name in runs and reference - runs[name]["robust_acc"] > masking_gap:
                found.append(f"possible gradient masking: {name} robust accuracy {runs[name]['robust_acc']:.3f} is "
                             f"{reference - runs[name]['robust_acc']:.3f} below pgd40's {reference:.3f} (more than "
                             f"{masking_gap:g}); trust the lower figure")
    if result["zero_gradient_images"]:
        n = result["zero_gradient_images"]
        found.append(f"zero gradients: the input gradient of the loss is exactly zero for {n} of {total} images "
                     f"({n / total:.0%}); gradient attacks cannot move them (saturated softmax or masking)")
    for name, run in runs.items():
        if run["adv_acc"] > clean:
            found.append(f"robust accuracy exceeds clean accuracy: {run['adv_acc']:.3f} on {name}'s images vs "
                         f"{clean:.3f} clean; the attack made the model more accurate")
    if result["probability_outputs"]:
        found.append("probability outputs: the model's outputs lie in [0,1] and sum to 1 per image; attacks "
                     "need logits (remove the softmax)")
    found += [f"{name} left the eps-ball or [0,1]: its figures are not for eps={result['eps']:g}"
              for name in result.get("left_the_ball", ())]
    return found


def _looks_like_probabilities(out: Tensor, num_classes: int) -> bool:
    if out.numel() == 0 or out.min() < -_PROB_TOL or out.max() > 1 + _PROB_TOL:
        return False
    return any(bool(((rows.sum(1) - 1).abs() < _PROB_TOL).all()) for rows in (out, out[:, :num_classes]))


def _summary(prefix: str, correct: Tensor, targets: Tensor, num_classes: int) -> dict[str, Any]:
    return metrics.summarize(prefix, metrics.class_errors(correct, targets, num_classes), int(correct.sum()),
                             len(targets))
