#!/usr/bin/env python
"""Throughput of one PGD-10 adversarial-training epoch: latune's loop against two references, like for like.

Every variant trains the same model (latune ``small_cnn``, same seed) on the same real images (MNIST test
images at 32x32x3; scikit-learn digits if MNIST is absent) with batch 128, eps 8/255, alpha 2/255, PGD-10
with random start, random crop (padding 4) + horizontal flip, and SGD (lr 0.05, momentum 0.9, weight decay
5e-4, constant schedule). The loops are in ``_train_loops.py``:

* ``public`` -- the common public recipe (locuslab/robust_overfitting ``attack_pgd``, torchvision per-sample
  transforms in a DataLoader with 0 or 2 workers; the better worker setting is the reference).
* ``torchattacks`` -- latune's device-resident batches and augmentation, ``torchattacks.PGD``, the train step.
* ``latune`` -- ``latune.core.train.train`` with LA off (delta = 0): the same work as the references.
  ``latune_la`` is the same with LA on (delta = 0.1, augmix_ops, p = 0.5): more work, so it is never paired
  with a reference; it shows what LA costs.

Each loop runs in two settings, and a ratio is only ever taken within one setting (like for like):

* ``fp32`` -- fp32, NCHW: latune's default (variants without a suffix);
* ``bf16_cl`` -- bf16 autocast for the attack and the training step, and the model and batches in channels_last
  (latune's ``optim.precision=bf16`` + ``model.channels_last=true``; the references get the same two settings
  the way a user of those codes would add them): variants ending in ``_bf16_cl``.

The goals, latune >= 3x the public recipe and >= 1.5x torchattacks, are judged separately in each setting,
from the ratio of the median images/s; they are reported (met / not met), not asserted. Each variant runs
``--warmup`` untimed epochs, then ``--repeats`` timed epochs interleaved round by round (every variant once per
round) so machine noise hits all alike. The last line of output is one JSON object with every figure.

With ``--device cuda`` (or ``--mfu``) it also measures latune's PreActResNet-18 PGD-10 training with
bf16 autocast and channels_last and its model-FLOP utilisation (see ``_train_flops.count_train_flops``).

    python benchmarks/bench_train.py                 # default: 512 images, 1 warm-up + 5 repeats, both settings
    python benchmarks/bench_train.py --quick         # 256 images, 1 repeat (smoke test)
    python benchmarks/bench_train.py --device cuda   # + PreActResNet-18 bf16 images/s and MFU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from _train_data import ALPHA, DEFAULT_MNIST, EPS, STEPS, load_images, make_bundle  # noqa: E402
from _train_flops import count_train_flops, log, measure_bf16_preact  # noqa: E402
from _train_loops import LatuneLoop, PublicRecipe, TorchattacksLoop, Workload  # noqa: E402

FP32, FAST = "fp32", "bf16_cl"
SETTINGS = {FP32: "fp32, NCHW", FAST: "bf16 autocast + channels_last"}  # setting -> how it is printed
GOALS = {"public": 3.0, "torchattacks": 1.5}  # reference loop -> goal for latune / reference, in each setting
REFERENCE_LABELS = {"public": "public recipe", "torchattacks": "torchattacks.PGD loop"}


class Variant(NamedTuple):
    loop: str  # "public", "torchattacks" or "latune"
    setting: str  # a key of SETTINGS
    la: bool = False  # label augmentation on (latune only)
    workers: int = 0  # DataLoader workers (public recipe only)


VARIANTS = {
    "public_w0": Variant("public", FP32, workers=0),
    "public_w2": Variant("public", FP32, workers=2),
    "torchattacks": Variant("torchattacks", FP32),
    "latune": Variant("latune", FP32),
    "latune_la": Variant("latune", FP32, la=True),
    "public_bf16_cl_w0": Variant("public", FAST, workers=0),
    "public_bf16_cl_w2": Variant("public", FAST, workers=2),
    "torchattacks_bf16_cl": Variant("torchattacks", FAST),
    "latune_bf16_cl": Variant("latune", FAST),
    "latune_bf16_cl_la": Variant("latune", FAST, la=True),
}
DEFAULT_VARIANTS = tuple(VARIANTS)
QUICK_VARIANTS = ("public_w0", "torchattacks", "latune", "public_bf16_cl_w0", "torchattacks_bf16_cl", "latune_bf16_cl")


def group_name(loop: str, setting: str) -> str:
    """The figure of one loop in one setting: "latune", "public_bf16_cl", ... (public: the better worker count)."""
    return loop if setting == FP32 else f"{loop}_{setting}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------------- running


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512, help="training images per epoch (default 512: 4 batches)")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per variant before the timed ones (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 256 images, no warm-up, 1 repeat, variants " + ",".join(QUICK_VARIANTS))
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch.set_num_threads for every variant (default: the CPUs this process may use)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--arch", default="small_cnn", help="model of the comparison (default small_cnn)")
    p.add_argument("--variants", default=None,
                   help=f"comma list of variants to time, from {','.join(VARIANTS)} (default: all)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_MNIST,
                   help="folder with the MNIST t10k idx files (flat or MNIST/raw); sklearn digits when absent")
    p.add_argument("--eval-images", type=int, default=64, help="images latune evaluates after its last epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mfu", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure PreActResNet-18 bf16 + channels_last images/s and MFU (default: on for cuda)")
    p.add_argument("--mfu-images", type=int, default=10000, help="training images per epoch for the MFU run")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="peak dense bf16 TFLOP/s of the device for MFU (default 989: H100/H200 SXM)")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.warmup, args.mfu_images = 256, 1, 0, min(args.mfu_images, 512)
    chosen = args.variants or ",".join(QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)
    args.variants = [v.strip() for v in chosen.split(",") if v.strip()]
    if not args.variants or set(args.variants) - set(VARIANTS):
        p.error(f"--variants: a comma list from {', '.join(VARIANTS)}")
    if args.images < args.batch_size or args.repeats < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--images >= --batch-size, --repeats >= 1, --warmup >= 0, --threads >= 1")
    return args


def build_loops(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Any], Any, str]:
    """(the chosen variants' loops in VARIANTS order, the data bundle, the data source's name)."""
    images, targets, source = load_images(args.images, args.seed, args.data_root)
    bundle = make_bundle(images, targets, device, args.eval_images)
    work = Workload(args.arch, args.seed, device, args.batch_size)
    loops: dict[str, Any] = {}
    for name, v in VARIANTS.items():
        if name not in args.variants:
            continue
        fast = v.setting == FAST
        if v.loop == "public":
            loops[name] = PublicRecipe(images, targets, bundle, work, workers=v.workers, fast=fast)
        elif v.loop == "torchattacks":
            loops[name] = TorchattacksLoop(bundle, work, fast=fast)
        else:
            loops[name] = LatuneLoop(bundle, work, la=v.la, epochs=args.warmup + args.repeats,
                                     eval_images=args.eval_images, fast=fast)
    return loops, bundle, source


def run_rounds(loops: dict[str, Any], warmup: int, repeats: int) -> dict[str, list[float]]:
    """images/s of each timed epoch, per variant; every variant runs once per round (interleaved)."""
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for round_ in range(warmup + repeats):
        for name, loop in loops.items():
            ips = loop.epoch()
            if round_ >= warmup:
                samples[name].append(ips)
            log(f"  round {round_}{' (warm-up)' if round_ < warmup else ''} {name:20s} {ips:8.1f} img/s")
    return samples


# ---------------------------------------------------------------------------------------------------- figures


def group_samples(samples: dict[str, list[float]]) -> dict[str, str]:
    """The variant that stands for each (loop, setting) group, LA off: {"public_bf16_cl": "public_bf16_cl_w2", ...}.

    A group with several variants (the public recipe's worker counts) takes the one with the higher median.
    """
    chosen: dict[str, str] = {}
    for name, values in samples.items():
        v = VARIANTS[name]
        group = group_name(v.loop, v.setting)
        if not v.la and (group not in chosen or statistics.median(values) > statistics.median(samples[chosen[group]])):
            chosen[group] = name
    return chosen


def _ratio(num: list[float], den: list[float]) -> dict[str, Any]:
    """Ratio of the medians, and the per-round ratios (the rounds are interleaved, so each pairs like epochs)."""
    per_round = [a / b for a, b in zip(num, den)]
    return {"ratio": statistics.median(num) / statistics.median(den), "per_round": per_round,
            "best_epoch_ratio": max(num) / max(den)}


def like_for_like(samples: dict[str, list[float]]) -> dict[str, Any]:
    """Every figure that compares two runs: latune/reference pairs (goals), LA cost, and each setting's own gain.

    Each pair's two sides have the same precision and memory layout; only ``settings_gain`` crosses settings,
    and it compares a loop with itself.
    """
    chosen = group_samples(samples)
    groups = {group: samples[name] for group, name in chosen.items()}
    pairs, goals_met = [], {}
    for setting in SETTINGS:
        lat = group_name("latune", setting)
        for ref, goal in GOALS.items():
            refname = group_name(ref, setting)
            if lat in groups and refname in groups:
                pair = {"setting": setting, "latune": chosen[lat], "reference": refname,
                        "reference_variant": chosen[refname], "goal": goal, **_ratio(groups[lat], groups[refname])}
                pair["met"] = pair["ratio"] >= goal
                pairs.append(pair)
                goals_met.setdefault(setting, {})[f"vs_{ref}"] = pair["met"]
    la_cost = {off: _ratio(samples[on], samples[off])["ratio"]
               for on, off in (("latune_la", "latune"), ("latune_bf16_cl_la", "latune_bf16_cl"))
               if on in samples and off in samples}
    gain = {loop: _ratio(groups[group_name(loop, FAST)], groups[loop])["ratio"]
            for loop in ("public", "torchattacks", "latune") if loop in groups and group_name(loop, FAST) in groups}
    return {"pairs": pairs, "goals_met": goals_met, "group_variants": chosen,
            "public_workers": {g: VARIANTS[n].workers for g, n in chosen.items() if VARIANTS[n].loop == "public"},
            "la_on_vs_off": la_cost, "settings_gain_same_loop": gain}


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def collect(args: argparse.Namespace, base: dict[str, Any], samples: dict[str, list[float]], bundle: Any,
            loops: dict[str, Any]) -> dict[str, Any]:
    """The JSON result: settings, every epoch's figure, the medians, the like-for-like comparisons, FLOPs."""
    flops = count_train_flops(args.arch, bundle, STEPS)
    ips = {name: statistics.median(values) for name, values in samples.items()}
    return {
        **base, "threads": torch.get_num_threads(), "arch": args.arch, "batch_size": args.batch_size,
        "eps": EPS, "alpha": ALPHA, "steps": STEPS, "torchvision": _version("torchvision"),
        "torchattacks": _version("torchattacks"),
        "variants": {name: {**VARIANTS[name]._asdict(), "precision": "bf16" if VARIANTS[name].setting == FAST
                            else "fp32", "channels_last": VARIANTS[name].setting == FAST} for name in samples},
        "images_per_s": ips, "images_per_s_all": samples, "goals": {f"vs_{k}": v for k, v in GOALS.items()},
        **like_for_like(samples),
        "model_gflop_per_image": {k: v / 1e9 for k, v in flops.items()},
        "useful_gflops": {name: v * flops["pgd_train"] / 1e9 for name, v in ips.items()},
        "train_loss_last_epoch": {name: loop.train_loss for name, loop in loops.items()},
    }


# ---------------------------------------------------------------------------------------------------- printing


def print_table(result: dict[str, Any]) -> None:
    ips, all_ = result["images_per_s"], result["images_per_s_all"]
    load = result["loadavg_1min"]
    print(f"PGD-{result['steps']} adversarial training, {result['arch']} 32x32x3, {result['images']} images/epoch, "
          f"batch {result['batch_size']}, {result['device']} ({result['cpu_model']}), {result['threads']} threads, "
          f"{result['warmup']} warm-up + {result['repeats']} timed epochs per variant, interleaved; "
          f"1-min load average {load['start']:.1f} -> {load['end']:.1f}")
    print(f"{'variant':22s} {'setting':30s} {'img/s':>8s} {'min':>8s} {'max':>8s} {'GFLOP/s':>8s}")
    for name, values in all_.items():
        print(f"{name:22s} {SETTINGS[VARIANTS[name].setting]:30s} {ips[name]:8.1f} {min(values):8.1f} "
              f"{max(values):8.1f} {result['useful_gflops'][name]:8.1f}")
    print(f"(img/s: median of the timed epochs; GFLOP/s = median img/s x "
          f"{result['model_gflop_per_image']['pgd_train']:.3f} GFLOP/image, latune's PGD-{result['steps']} "
          f"model FLOPs)")
    print("Like for like (both sides in the same setting; ratio of the median img/s, per-round ratios in brackets):")
    for pair in result["pairs"]:
        ref = pair["reference"]
        loop = ref.removesuffix(f"_{FAST}")
        workers = result["public_workers"].get(ref)
        label = REFERENCE_LABELS[loop] + (f" ({workers} workers)" if workers is not None else "")
        rounds = ", ".join(f"{r:.2f}" for r in pair["per_round"])
        print(f"  {SETTINGS[pair['setting']]:30s} {pair['latune']} / {label}: {pair['ratio']:.2f}x [{rounds}]; "
              f"goal >= {pair['goal']:g}x: {'met' if pair['met'] else 'NOT met'}")
    if not result["pairs"]:
        print("  none: no setting has latune and a reference among the variants run; no goal judged")
    for off, ratio in result["la_on_vs_off"].items():
        print(f"LA on / off, {SETTINGS[VARIANTS[off].setting]}: {ratio:.2f}x (more work; not a comparison)")
    for loop, ratio in result["settings_gain_same_loop"].items():
        print(f"{loop}: {SETTINGS[FAST]} / {SETTINGS[FP32]}, same loop: {ratio:.2f}x (what the two settings buy it)")
    mfu = result.get("bf16_preact_resnet18")
    if mfu:
        for name, v in mfu["images_per_s"].items():
            print(f"{mfu['arch']} bf16 channels_last {name}: {v:.1f} img/s, {mfu['achieved_tflops'][name]:.2f} "
                  f"TFLOP/s, MFU {100 * mfu['mfu'][name]:.2f}% of {mfu['peak_tflops']:g} TFLOP/s "
                  f"({mfu['flops_per_image']['pgd_train'] / 1e9:.2f} GFLOP/image)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    base: dict[str, Any] = {
        "benchmark": "bench_train", "device": str(device), "cpu_model": cpu_model(), "torch": torch.__version__,
        "python": platform.python_version(), "threads": args.threads, "images": args.images,
        "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
    }
    if device.type == "cuda" and not torch.cuda.is_available():
        log(f"bench_train: --device {args.device} requested but CUDA is not available here; skipped "
            "(run with --device cpu for the CPU comparison)")
        print(json.dumps({**base, "skipped": "CUDA not available"}))
        return 0
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        log(f"bench_train: warning: 1-min load average is {load_start[0]:.1f} before starting; other work on this "
            f"machine slows some epochs down (read the per-round ratios too; --threads 1 is steadier then)")
    loops, bundle, source = build_loops(args, device)
    log(f"bench_train: {args.images} images ({source}), {args.arch}, batch {args.batch_size}, PGD-{STEPS}, "
        f"device {device}, torch threads {torch.get_num_threads()}, {args.warmup} warm-up + {args.repeats} timed "
        f"epochs per variant, interleaved")
    samples = run_rounds(loops, args.warmup, args.repeats)
    result = collect(args, {**base, "data": source}, samples, bundle, loops)
    # 1-minute load averages around the timed rounds: above the thread count, other work shared the CPUs
    result["loadavg_1min"] = {"start": load_start[0], "end": os.getloadavg()[0]}
    if args.mfu if args.mfu is not None else device.type == "cuda":
        result["bf16_preact_resnet18"] = measure_bf16_preact(args, device)
    print_table(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
