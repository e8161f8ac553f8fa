"""latune.registry's names are plain data: every name has its implementation, and reading them loads no torch."""

import subprocess
import sys

import pytest

from latune.registry import AUGMIX_PRIMITIVES, CORRUPTION_FAMILIES, CORRUPTIONS, TRANSFORM_SETS


@pytest.mark.parametrize("name", sorted(TRANSFORM_SETS))
def test_every_op_of_every_transformation_set_is_implemented(name):
    from latune.core.transforms import OPS

    assert TRANSFORM_SETS[name] and set(TRANSFORM_SETS[name]) <= set(OPS), set(TRANSFORM_SETS[name]) - set(OPS)


def test_augmix_primitives_are_implemented_and_every_op_is_in_some_set():
    from latune.core.transforms import OPS

    assert set(AUGMIX_PRIMITIVES) <= set(OPS)
    assert set(OPS) == {op for ops in TRANSFORM_SETS.values() for op in ops}


def test_corruptions_are_exactly_the_implemented_ones():
    from latune.core import corruptions

    assert set(CORRUPTIONS) == set(corruptions._OPS) and len(CORRUPTIONS) == len(set(CORRUPTIONS)) == 15
    assert corruptions.FAMILIES is CORRUPTION_FAMILIES


_NO_TORCH = """
import runpy, sys
import latune.config, latune.sweep.spec
config = latune.config.resolve(latune.config.from_flat({"attack.eps": "8/255", "la.transform_set": "all"}))
latune.sweep.spec.load_sweep("pareto")
sys.argv = ["latune.train", "--help"]
try:
    runpy.run_module("latune.train", run_name="__main__")
except SystemExit as done:
    assert done.code == 0, done.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "ray", "mlflow"))
print("heavy:", heavy[:5])
"""


def test_validating_configs_and_sweeps_and_help_load_no_torch():
    done = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("heavy: []"), done.stdout[-500:]
