"""The nodes of the fake cluster (latune.cluster.fake) on this machine: Ray's fake multi-node provider, with the
head that ``ray up`` needs and a ``ray stop`` that stops only this cluster.

Ray's own provider (``type: fake_multinode``) runs only under ``RAY_FAKE_CLUSTER=1 ray start --head
--autoscaling-config=...``: its head exists before anything starts, its tags cannot change, and commands would go
to it over SSH at its node id. ``ray up`` with it fails at its first step: the pip wheel lacks the provider's
defaults (``fake_multi_node/example.yaml``: FileNotFoundError), and with them ``ray up`` tries to relaunch that head
(``KeyError: 'node'`` in ``terminate_node``). FakeNodeProvider keeps Ray's worker nodes as they are (processes the
head's autoscaler starts, with the node type's resources, GPUs as logical resources) and adds a head that ``ray
up`` creates, tags, runs commands on (a local shell, in the head's own home) and ``ray down`` terminates.

Every process of the fake cluster carries ``LATUNE_FAKE_NODE=<fake dir>`` in its environment (set for the head's
commands; Ray's processes and the workers the autoscaler starts inherit it). Stopping goes by that mark, never by
process name: a plain ``ray stop`` would stop every Ray of this machine's user, other clusters included. The
head's ``ray`` is a wrapper whose ``stop`` stops this cluster's Ray processes only (cluster.yaml runs ``ray
stop`` before ``ray start``, and ``ray down`` runs it on the head); terminating the head (``ray down``) ends every
marked process, as an instance that goes away takes its processes with it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import ray  # noqa: F401 -- before psutil, which Ray vendors (ray/thirdparty_files, on sys.path once ray is imported)
import psutil
from ray.autoscaler._private.command_runner import SSHCommandRunner, _with_environment_variables
from ray.autoscaler._private.constants import RAY_PROCESSES
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FakeMultiNodeProvider
from ray.autoscaler.tags import NODE_KIND_HEAD, TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE

__all__ = ["MARK", "FakeNodeProvider", "node_processes", "stop_node"]

MARK = "LATUNE_FAKE_NODE"  # environment variable naming the fake cluster's folder in each of its processes
_HEAD_ONLY = ("RAY_OVERRIDE_RESOURCES", "RAY_NODE_TYPE_NAME", "RAY_CLOUD_INSTANCE_ID")  # what `ray up` sets for the head
_RAY_WRAPPER = """#!/bin/sh
# The fake head's `ray` (latune.cluster.fake_node): `ray stop` stops this fake cluster's Ray processes only.
if [ "$1" = stop ]; then
    exec {python} -c 'import sys; from latune.cluster.fake_node import stop_node; stop_node(sys.argv[1])' "${mark}"
fi
exec {ray} "$@"
"""


class FakeNodeProvider(FakeMultiNodeProvider):
    """Ray's FakeMultiNodeProvider plus a head kept in ``<fake_dir>/head.json`` (its tags), so that ``ray up``,
    ``ray exec``, ``ray down`` and the head's autoscaler, each a process of its own, see the same head.
    provider_config: Ray's fake provider settings and ``fake_dir``, the cluster's folder (latune.cluster.fake)."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self._dir = Path(provider_config["fake_dir"])
        self._nodes.pop(self._head_node_id)  # Ray's head exists from the start; this one from `ray up` on

    # -- the head, from its state file ---------------------------------------------------------------------
    def _sync_head(self) -> None:
        state = self._dir / "head.json"
        with self.lock:
            if state.is_file():
                self._nodes[FAKE_HEAD_NODE_ID] = {"tags": json.loads(state.read_text())}
            else:
                self._nodes.pop(FAKE_HEAD_NODE_ID, None)

    def _write_head(self, tags: dict[str, str] | None) -> None:
        state = self._dir / "head.json"
        if tags is None:
            state.unlink(missing_ok=True)
            return
        partial = state.with_name(".head.json.partial")
        partial.write_text(json.dumps(tags))
        partial.replace(state)

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        self._sync_head()
        return super().non_terminated_nodes(tag_filters)

    def is_running(self, node_id: str) -> bool:
        self._sync_head()
        return super().is_running(node_id)

    def is_terminated(self, node_id: str) -> bool:
        self._sync_head()
        return super().is_terminated(node_id)

    def node_tags(self, node_id: str) -> dict[str, str]:
        self._sync_head()
        return super().node_tags(node_id)

    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int) -> None:
        """`ray up` creates the head (workers come from create_node_with_resources_and_labels): its home with an
        empty ~/.bashrc, as a fresh instance has, and the `ray` wrapper its commands find first."""
        if tags.get(TAG_RAY_NODE_KIND) != NODE_KIND_HEAD or count != 1:
            raise ValueError(f"the fake cluster creates one head this way, not {count} node(s) tagged {tags}")
        home = self._dir / "head"
        home.mkdir(parents=True, exist_ok=True)
        (home / ".bashrc").touch()
        (self._dir / "bin").mkdir(exist_ok=True)
        wrapper = self._dir / "bin" / "ray"
        wrapper.write_text(_RAY_WRAPPER.format(python=shlex.quote(sys.executable), mark=MARK,
                                               ray=shlex.quote(str(Path(sys.executable).with_name("ray")))))
        wrapper.chmod(0o755)
        self._write_head({**tags, TAG_RAY_NODE_KIND: NODE_KIND_HEAD})

    def _create_node_with_resources_and_labels(self, node_config: dict[str, Any], tags: dict[str, str], count: int,
                                               resources: dict[str, float], labels: dict[str, str]) -> None:
        """A worker, as Ray's provider starts it, but without the head's environment: this process (the head's
        autoscaler) inherited `ray start`'s, where `ray up` sets the head's resources (RAY_OVERRIDE_RESOURCES, CPU
        0) and node type, and Ray reads them from here when it sizes the worker: every worker would get 0 CPUs."""
        with self.lock:
            saved = {name: os.environ.pop(name) for name in _HEAD_ONLY if name in os.environ}
            os.environ["RAY_NODE_TYPE_NAME"] = tags[TAG_RAY_USER_NODE_TYPE]
            try:
                super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
            finally:
                os.environ.pop("RAY_NODE_TYPE_NAME", None)
                os.environ.update(saved)

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self.lock:
            if node_id == FAKE_HEAD_NODE_ID:
                self._sync_head()
                self._write_head({**self._nodes[node_id]["tags"], **tags})
            else:  # Ray's fake provider refuses any change; the autoscaler's status tags are harmless
                self._nodes[node_id]["tags"].update(tags)

    def terminate_node(self, node_id: str) -> None:
        """The head: every process of the fake cluster ends (as with an instance that is gone), then the head's
        record; a worker: Ray's own way (its processes, started by this process)."""
        if node_id != FAKE_HEAD_NODE_ID:
            return super().terminate_node(node_id)
        stop_node(str(self._dir), ray_only=False, grace_s=2)
        self._write_head(None)

    def get_command_runner(self, log_prefix: str, node_id: str, auth_config: dict[str, Any], cluster_name: str,
                           process_runner: Any, use_internal_ip: bool,
                           docker_config: dict[str, Any] | None = None) -> SSHCommandRunner:
        if node_id != FAKE_HEAD_NODE_ID:
            raise ValueError(f"fake worker {node_id} runs no commands (disable_node_updaters)")
        return _HeadShell(self._dir, log_prefix=log_prefix, node_id=node_id, provider=self, auth_config=auth_config,
                          cluster_name=cluster_name, process_runner=process_runner, use_internal_ip=use_internal_ip)


class _HeadShell(SSHCommandRunner):
    """The head's commands in a local bash, as Ray's SSH runner runs them on a node (~/.bashrc first, in the home
    folder), with the head's environment: its own HOME and Ray temp folder, this environment's executables after
    the `ray` wrapper, RAY_FAKE_CLUSTER=1 (Ray's fake provider requires it in the autoscaler) and the mark."""

    def __init__(self, fake_dir: Path, **ssh_args: Any) -> None:
        super().__init__(**ssh_args)
        self.home = fake_dir / "head"
        path = os.pathsep.join([str(fake_dir / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        # RAY_ADDRESS of the caller would point the head's Ray commands at another cluster
        self.env = ["env", "-u", "RAY_ADDRESS", f"HOME={self.home}", f"PATH={path}", f"RAY_TMPDIR={fake_dir / 'tmp'}",
                    "RAY_FAKE_CLUSTER=1", f"{MARK}={fake_dir}"]
        (fake_dir / "tmp").mkdir(parents=True, exist_ok=True)

    def run(self, cmd: str | None = None, timeout: int = 120, exit_on_fail: bool = False,
            port_forward: Any = None, with_output: bool = False, environment_variables: dict | None = None,
            run_env: str = "auto", ssh_options_override_ssh_key: str = "", shutdown_after_run: bool = False,
            silent: bool = False) -> Any:
        # port_forward: the head's ports are this machine's already; shutdown_after_run: `ray down` ends the head
        if cmd is None:
            script = "cd ~ && exec bash -i"
        else:
            if environment_variables:
                cmd = _with_environment_variables(cmd, environment_variables)
            script = f"cd ~ && source ~/.bashrc; export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && ({cmd})"
        return self._run_helper([*self.env, "bash", "-c", script], with_output, exit_on_fail, silent=silent)

    def _local(self, path: str) -> Path:
        return self.home / path[2:] if path.startswith("~/") else Path(path)

    def run_rsync_up(self, source: str, target: str, options: dict | None = None) -> None:
        """What Ray's rsync copies: a file, or a folder's files but those rsync_exclude and the .gitignore files
        of rsync_filter leave out (git lists them: tracked and untracked files, ignored ones left out)."""
        _copy(Path(source), self._local(target), target.endswith("/"), options or {})

    def run_rsync_down(self, source: str, target: str, options: dict | None = None) -> None:
        _copy(self._local(source), Path(target), target.endswith("/"), options or {})

    def remote_shell_command_str(self) -> str:
        return f"cd {shlex.quote(str(self.home))} && HOME={shlex.quote(str(self.home))} bash\n"


def _copy(source: Path, target: Path, into: bool, options: dict) -> None:
    if source.is_file():
        target = target / source.name if into or target.is_dir() else target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return
    for relative in _listed(source, options):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, target / relative)


def _listed(folder: Path, options: dict) -> list[str]:
    """The files under ``folder`` to copy, relative to it."""
    if options.get("rsync_filter"):  # `.gitignore` is the only filter cluster.yaml uses; git reads it as rsync does
        listed = subprocess.run(["git", "-C", str(folder), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, text=True, check=True).stdout
        files = [name for name in listed.split("\0") if name and (folder / name).is_file()]
    else:
        files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    excluded = options.get("rsync_exclude") or []
    return [name for name in files if not any(fnmatch.fnmatch("/" + name, pattern) for pattern in excluded)]


def node_processes(fake_dir: str) -> list[psutil.Process]:
    """The processes of the fake cluster in ``fake_dir``, this one and its parents left out: those whose
    environment has MARK=fake_dir, and their descendants (Ray's workers and agents rename themselves, which
    overwrites the environment /proc shows, so only their parent, the raylet, is known by its mark)."""
    keep = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    processes, marked = list(psutil.process_iter()), set()
    for process in processes:
        try:
            if process.environ().get(MARK) == fake_dir:
                marked.add(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    found = []
    for process in processes:
        try:
            lineage = {process.pid, *(parent.pid for parent in process.parents())}
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if lineage & marked and process.pid not in keep:
            found.append(process)
    return found


def _is_ray(process: psutil.Process) -> bool:
    """A process `ray stop` would stop (Ray's own list: by name, or by command line)."""
    try:
        name, line = process.name(), subprocess.list2cmdline(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(keyword in (name if by_name else line) for keyword, by_name in RAY_PROCESSES)


def stop_node(fake_dir: str, ray_only: bool = True, grace_s: float = 5) -> int:
    """Stop the fake cluster's processes (``ray_only``: its Ray processes, as `ray stop` on a node stops that
    node's Ray; else all of them): SIGTERM, then SIGKILL after ``grace_s`` seconds (Ray's raylets and GCS often
    outlast `ray stop`'s own 16 s grace; killed, they are gone as surely). Returns how many."""
    if not fake_dir:  # `ray stop` outside a fake head (no mark): stopping nothing beats stopping the machine's Ray
        raise ValueError(f"no fake cluster named: {MARK} is not set")
    processes = [p for p in node_processes(fake_dir) if not ray_only or _is_ray(p)]
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    killed = []
    for process in alive:
        try:
            killed.append(process.name())
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    what = "Ray processes" if ray_only else "processes"
    late = f"; killed after {grace_s:g} s: {', '.join(killed)}" if killed else ""
    print(f"fake cluster {fake_dir}: stopped {len(processes)} {what} (no other process of this machine){late}")
    return len(processes)
