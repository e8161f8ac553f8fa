"""Model FLOPs of PGD training (counted, not estimated) and latune's model-FLOP utilisation on a GPU."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from _train_data import STEPS, load_images, make_bundle, new_model
from _train_loops import LatuneLoop, Workload
from latune.core import attacks
from latune.core.data import DataBundle


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def count_train_flops(arch: str, bundle: DataBundle, steps: int, batch: int = 2) -> dict[str, float]:
    """Model FLOPs per image of one PGD-k training step, counted by torch.utils.flop_counter.FlopCounterMode.

    Counted on a CPU fp32 copy (FLOPs do not depend on device or precision); FlopCounterMode counts matmuls
    and convolutions (forward and backward, honouring which gradients autograd actually asks for), not
    element-wise ops (batch norm, ReLU, the loss, the PGD update). Per image:

    * ``forward``: one forward pass.
    * ``attack_step``: forward + backward for the input gradient only (parameters frozen as latune's attack
      does, so no weight gradients; the first conv's input gradient is included). About 2x forward.
    * ``train_step``: forward + backward with weight gradients, no input gradient (about 3x forward less the
      first conv's input gradient).
    * ``pgd_train`` = steps * attack_step + train_step: the model FLOPs of adversarial training per image
      (standard augmentation and label-augmentation transforms are not model FLOPs and are not counted).
    * ``pgd_train_public``: the same for the public recipe, whose attack steps use ``loss.backward()`` and so
      also compute weight gradients (``attack_step_public``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = new_model(arch, bundle, 0, torch.device("cpu"))
    x = torch.rand(batch, bundle.channels, bundle.image_size, bundle.image_size)
    y = torch.arange(batch) % bundle.num_classes

    def counted(fn: Callable[[], Any]) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / batch

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def attack_step() -> None:
        # backward() with frozen parameters asks for the same gradients as attacks.pgd's autograd.grad (which
        # FlopCounterMode's module hooks do not support): only the input's.
        with attacks.attack_mode(model):
            xa = x.clone().requires_grad_(True)
            F.cross_entropy(model(xa), y, reduction="sum").backward()

    def train_step() -> None:
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    def attack_step_public() -> None:
        delta = torch.zeros_like(x, requires_grad=True)
        F.cross_entropy(model(x + delta), y).backward()
        model.zero_grad(set_to_none=True)

    model.eval()  # forward FLOPs do not depend on the mode; eval keeps the BN statistics of this copy unchanged
    fwd, atk = counted(forward), counted(attack_step)
    model.train()
    trn, atk_public = counted(train_step), counted(attack_step_public)
    return {"forward": fwd, "attack_step": atk, "train_step": trn, "pgd_train": steps * atk + trn,
            "pgd_train_approx_2x_3x": (2 * steps + 3) * fwd, "attack_step_public": atk_public,
            "pgd_train_public": steps * atk_public + trn}


def _interleaved(loops: dict[str, LatuneLoop], rounds: int, warmup: int, tag: str) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for round_ in range(rounds):
        for name, loop in loops.items():
            ips = loop.epoch()
            if round_ >= warmup:
                samples[name].append(ips)
            log(f"  [{tag}] round {round_}{' (warm-up)' if round_ < warmup else ''} {name}: {ips:.1f} img/s")
    return samples


def measure_bf16_preact(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """latune PreActResNet-18, PGD-10, bf16 autocast + channels_last: images/s (median) and model-FLOP utilisation.

    ``args``: bench_train's parsed arguments (mfu_images, warmup, repeats, batch_size, eval_images, seed,
    data_root, peak_tflops).
    """
    arch = "preact_resnet18"
    images, targets, _ = load_images(args.mfu_images, args.seed, args.data_root)
    bundle = make_bundle(images, targets, device, args.eval_images)
    flops = count_train_flops(arch, make_bundle(images[:8], targets[:8], torch.device("cpu"), 8), STEPS)
    work = Workload(arch, args.seed, device, args.batch_size)
    loops = {name: LatuneLoop(bundle, work, la=la, epochs=args.warmup + args.repeats, eval_images=args.eval_images,
                              fast=True)
             for name, la in (("latune", False), ("latune_la", True))}
    samples = _interleaved(loops, args.warmup + args.repeats, args.warmup, f"{arch} bf16 channels_last")
    peak = args.peak_tflops * 1e12
    out: dict[str, Any] = {
        "arch": arch, "precision": "bf16 autocast", "channels_last": True, "images": len(targets),
        "batch_size": args.batch_size, "peak_tflops": args.peak_tflops,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "flops_per_image": flops,
        "flops_counted": "FlopCounterMode (matmul+conv): 10 x (forward + input-gradient backward, params frozen) "
                         "+ 1 x (forward + weight-gradient backward); element-wise ops not counted",
        "images_per_s": {}, "images_per_s_all": samples, "achieved_tflops": {}, "mfu": {},
    }
    for name, values in samples.items():
        ips = statistics.median(values)
        out["images_per_s"][name] = ips
        out["achieved_tflops"][name] = ips * flops["pgd_train"] / 1e12
        out["mfu"][name] = ips * flops["pgd_train"] / peak
    return out
