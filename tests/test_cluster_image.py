"""The cluster's one software image: the Dockerfile, the lock (constraints.txt) and cluster.yaml's image tag agree
(the Ray version of the base image, the Python of the lock, the digest of the Dockerfile and the lock in the tag);
the base image is pinned by digest or its ARG says it is not yet; the build runs `pip check`; the nodes do not
pull the write-once tag again; the lock pins every dependency of pyproject.toml exactly and `make` installs with
it; and, where a Docker daemon runs, the image builds and holds exactly the lock's versions."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from latune.cluster.preflight import image_digest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DIGEST = image_digest((ROOT / "Dockerfile").read_bytes(), (ROOT / "constraints.txt").read_bytes())
LOCK_TEXT = (ROOT / "constraints.txt").read_text()
PINS = {canonicalize_name(name): version for name, version in
        (line.split("==") for line in LOCK_TEXT.splitlines() if line and not line.startswith("#"))}


def _base_image() -> tuple[str, str]:
    """(Ray version, Python tag) of the Dockerfile's FROM rayproject/ray:<ray>-<py>-gpu (then @ its digest, from
    ARG RAY_BASE_DIGEST)."""
    [match] = re.findall(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-(py3\d+)-gpu"
                         r"\$\{RAY_BASE_DIGEST:\+@\}\$\{RAY_BASE_DIGEST\}\s*$", DOCKERFILE, re.M)
    return match


def test_every_lock_line_is_an_exact_pin():
    lines = [line for line in LOCK_TEXT.splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*", line) for line in lines), lines
    assert len(PINS) == len(lines)  # no package twice
    assert PINS["torch"] == "2.14.1" and PINS["torchvision"] == "0.29.1"


def test_lock_pins_every_dependency_of_pyproject_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for text in [*project["dependencies"], *extras["test"], *extras["docs"]]:  # what `make` installs
        requirement = Requirement(text)
        pin = PINS.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(pin, prereleases=True), f"{requirement.name}=={pin} not in {text}"


def test_dockerfile_base_is_the_locks_ray_and_python():
    ray, python = _base_image()
    assert ray == PINS["ray"]
    assert python == "py311" and "resolved on Python 3.11" in LOCK_TEXT


def test_dockerfile_installs_the_lock_and_pins_nothing_else():
    assert re.search(r"^COPY .*\bconstraints\.txt /tmp/latune/constraints\.txt$", DOCKERFILE, re.M)
    assert "pip install --no-cache-dir -r /tmp/latune/constraints.txt" in DOCKERFILE
    code = "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    for name, version in re.findall(r"([A-Za-z0-9._-]+)==([0-9][^\s'\"]*)", code):  # any version written inline
        assert PINS.get(canonicalize_name(name)) == version, f"Dockerfile pins {name}=={version}, the lock does not"
    assert (ROOT / ".dockerignore").read_text().split("\n", 1)[1].split() == ["*", "!constraints.txt"]


def test_cluster_yaml_names_the_image_built_from_this_lock():
    ray, python = _base_image()
    image = yaml.safe_load((ROOT / "cluster.yaml").read_text())["docker"]["image"]
    repository, tag = image.rsplit(":", 1)
    assert repository.endswith("/latune")
    assert tag == f"{ray}-{python}-gpu-{DIGEST}", \
        "the Dockerfile or constraints.txt changed: rebuild the image, write its new tag in cluster.yaml (Dockerfile)"
    assert f"TAG={ray}-{python}-gpu-$(cat Dockerfile constraints.txt | sha256sum | cut -c1-8)" in DOCKERFILE


def test_base_image_is_pinned_by_digest_or_says_it_is_not_yet():
    [digest] = re.findall(r"^ARG RAY_BASE_DIGEST=(\S*)\s*$", DOCKERFILE, re.M)
    assert DOCKERFILE.index("ARG RAY_BASE_DIGEST") < DOCKERFILE.index("\nFROM ")  # usable in FROM
    # empty until someone reads the real digest off a registry (never made up); `check` warns while it is
    assert digest == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest


def test_build_runs_pip_check_after_installing_the_lock():
    run = DOCKERFILE[DOCKERFILE.index("RUN pip install"):]
    assert run.index("pip install --no-cache-dir -r /tmp/latune/constraints.txt") < run.index("&& pip check") \
        < run.index("python -c")


def test_nodes_do_not_pull_the_write_once_tag_again():
    docker = yaml.safe_load((ROOT / "cluster.yaml").read_text())["docker"]
    assert docker["pull_before_run"] is False


def test_makefile_installs_with_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[test,docs]'" in makefile
    assert re.search(r"^\$\(STAMP\): pyproject\.toml constraints\.txt$", makefile, re.M)


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _docker_daemon(), reason="no Docker daemon on this machine")
def test_image_builds_and_holds_exactly_the_locks_versions():
    tag = f"latune-test:{DIGEST}"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=3600)
    freeze = subprocess.run(["docker", "run", "--rm", tag, "pip", "freeze", "--all"], check=True, timeout=600,
                            capture_output=True, text=True).stdout
    installed = {canonicalize_name(n): v for n, v in (line.split("==") for line in freeze.splitlines() if "==" in line)}
    assert {name: installed.get(name) for name in PINS} == PINS
