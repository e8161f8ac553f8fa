"""``latune train``: train one model and write metrics.json and model.pt."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latune.cli.common import (add_config_arguments, blame_command_line, config_overrides, examples, flag_sources,
                               guarded, keys_help, write_json_atomic)

__all__ = ["main"]

_EXAMPLES = examples(
    "latune train --set optim.epochs=2 --out runs/smoke   # digits, a minute on a CPU",
    "latune train --data digits --set attack.eps=0.1 --set la.delta=0.1 --out runs/one",
    "latune train --data cifar10 --data-dir ~/data --set la.transform_set=geometric --set la.m=5")


def _format(metrics: dict[str, Any], keys: Sequence[str]) -> str:
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), (int, float)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="latune train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one model with PGD adversarial training and label augmentation.",
        epilog=f"{_EXAMPLES}\n\n{keys_help()}")
    add_config_arguments(parser)  # --data, --data-dir, --set, --corruptions, --corruptions-dir
    parser.add_argument("--out", help="output directory (default runs/train-YYYYmmdd-HHMMSS)")
    parser.add_argument("--quiet", action="store_true", help="print only the final metrics")
    args = parser.parse_args(argv)

    def main() -> int:
        from latune.config import from_flat, resolve, to_flat

        config = resolve(from_flat(config_overrides(args)))  # every config error surfaces here, before any work

        from latune.core.models import save_checkpoint
        from latune.core.outcomes import write_outcomes
        from latune.provenance import provenance
        from latune.core.train import setup, train

        run = setup(config)  # data errors surface here, still before anything is written
        out = Path(args.out or time.strftime("runs/train-%Y%m%d-%H%M%S"))
        out.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {**provenance(), "config": to_flat(run.config), "epochs": [], "final": None}
        print(f"latune.train: {config.data.name} ({len(run.data.train)} train / {len(run.data.val)} val / "
              f"{len(run.data.test)} test images), {config.model.arch}, K={run.data.num_classes} M={run.num_extra}, "
              f"eps={config.attack.eps:.4f} (eval {config.eval.eps:.4f}), delta={config.la.delta}, "
              f"device={run.device}", flush=True)
        for result in train(config, run=run):
            record["epochs"].append(result.metrics)
            write_json_atomic(out / "metrics.json", record)
            if result.test_outcomes:  # per-image test outcomes, for bootstrap intervals
                write_outcomes(out, result.test_outcomes)
            if not args.quiet:
                print(f"epoch {result.epoch:>3}/{config.optim.epochs}  " + _format(
                    result.metrics, ["train_loss", "clean_acc", "robust_acc", "robust_class_error_sd",
                                     "epoch_time_s", "images_per_s"]), flush=True)
        record["final"] = record["epochs"][-1]
        save_checkpoint(out / "model.pt", run.model, config=to_flat(run.config), extra={"final": {
            k: v for k, v in record["final"].items() if isinstance(v, (int, float))}})
        write_json_atomic(out / "metrics.json", record)
        final = record["final"]
        print("final (test split): " + _format(final, [
            "test_clean_acc", "test_robust_acc", "test_clean_class_error_sd", "test_robust_class_error_sd",
            "test_clean_worst_class_acc", "test_robust_worst_class_acc", "test_transform_acc", "test_mce",
            "test_corruption_class_error_sd"]))
        print(f"wrote {out / 'metrics.json'}, {out / 'model.pt'} and {out / 'test_outcomes.npz'}")
        return 0

    def blamed() -> int:
        """A config error (from_flat, resolve, or setup reading a file a key names) led by the flag that set it."""
        from latune.config import ConfigError

        try:
            return main()
        except ConfigError as err:
            raise blame_command_line(str(err), flag_sources(args)) from None

    return guarded(blamed)
