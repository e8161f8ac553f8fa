"""latune: sweeps of adversarial training with label augmentation (arXiv 2503.16179).

The public API, loaded on first use (PEP 562), so ``import latune`` loads no torch and starts nothing::

    import latune
    config = latune.resolve(latune.from_flat({"data.name": "digits", "la.delta": 0.2}))
    for epoch in latune.train(config): print(epoch.metrics["robust_acc"])

    spec = latune.load_sweep("delta_eps_grid", overrides={"optim.epochs": 1})
    outcome = latune.run_sweep(spec, mlflow=False)
    front = outcome.table[outcome.table["pareto_rank"] == 0]

``latune.train`` is the training function, also after ``import latune.train``: that module is the
``python -m latune.train`` command's entry point, and the import system's binding of a submodule to its
package's attribute is refused for exported names (_Package below). The command line is ``latune COMMAND``
(latune.cli.main).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Config": "latune.config", "from_flat": "latune.config", "to_flat": "latune.config", "resolve": "latune.config",
    "ConfigError": "latune.errors", "DataError": "latune.errors", "UserError": "latune.errors",
    "load_data": "latune.core.data",
    "build_model": "latune.core.models", "save_checkpoint": "latune.core.models",
    "load_checkpoint": "latune.core.models",
    "train": "latune.core.train", "evaluate": "latune.core.evaluate", "EvalSettings": "latune.core.evaluate",
    "SweepSpec": "latune.sweep.spec", "load_sweep": "latune.sweep.spec",
    "SweepOutcome": "latune.sweep.run", "run_sweep": "latune.sweep.run",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("latune")
        except PackageNotFoundError:  # a source tree on sys.path, not installed
            value = "0+unknown"
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'latune' has no attribute {name!r}")
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """latune's module type. Importing a submodule sets it as an attribute of its package, so ``import
    latune.train`` (the ``python -m latune.train`` entry point) would replace the function ``latune.train`` with
    that module; an exported name is never replaced by its namesake submodule."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
