"""The gcloud commands of a TPU run, as argument lists (nothing runs here).

Single slices are TPU VMs (on-demand or spot) or queued resources; Multislice (num_slices > 1) is
queued resources only, with nodes NAME-0 .. NAME-{n-1} (Cloud TPU sets the MEGASCALE_* variables
on their workers). Remote commands are bash with `set -euo pipefail`, every user value shell-quoted.
"""

from __future__ import annotations

import dataclasses
import shlex

from launch.tpu import environment
from qwen_audio_jax.plan import topology


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str
  zone: str
  slice: topology.Slice
  provisioning: str = "on-demand"  # on-demand | spot | queued
  project: str = ""
  remote_dir: str = "qwen-audio-jax"  # on each worker, relative to the home directory
  cache_root: str = ""  # gs://... root of the persistent compilation cache ("" = off)
  xla_flags: str | None = None

  @property
  def queued(self) -> bool:
    return self.provisioning == "queued" or self.slice.num_slices > 1

  @property
  def nodes(self) -> list[str]:
    return [f"{self.name}-{i}" for i in range(self.slice.num_slices)] if self.slice.num_slices > 1 else [self.name]


def _common(spec: Spec) -> list[str]:
  return [f"--zone={spec.zone}"] + ([f"--project={spec.project}"] if spec.project else [])


def create(spec: Spec) -> list[str]:
  acc = environment.accelerator_type(spec.slice)
  runtime = environment.RUNTIME_VERSION[spec.slice.generation.name]
  spot = ["--spot"] if spec.provisioning == "spot" else []
  if not spec.queued:
    return ["gcloud", "compute", "tpus", "tpu-vm", "create", spec.name, *_common(spec),
            f"--accelerator-type={acc}", f"--version={runtime}", *spot]
  nodes = ([f"--node-count={spec.slice.num_slices}", f"--node-prefix={spec.name}"] if spec.slice.num_slices > 1
           else [f"--node-id={spec.name}"])
  return ["gcloud", "compute", "tpus", "queued-resources", "create", spec.name, *_common(spec), *nodes,
          f"--accelerator-type={acc}", f"--runtime-version={runtime}", *spot]


def queued_state(spec: Spec) -> list[str]:
  return ["gcloud", "compute", "tpus", "queued-resources", "describe", spec.name, *_common(spec),
          "--format=value(state.state)"]


def delete(spec: Spec) -> list[str]:
  if spec.queued:
    return ["gcloud", "compute", "tpus", "queued-resources", "delete", spec.name, *_common(spec), "--force", "--quiet"]
  return ["gcloud", "compute", "tpus", "tpu-vm", "delete", spec.name, *_common(spec), "--quiet"]


def ssh(spec: Spec, node: str, script: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", node, *_common(spec), "--worker=all", f"--command={script}"]


def scp(spec: Spec, node: str, local: str, remote: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"{node}:{remote}", *_common(spec), "--worker=all"]


def install_script(spec: Spec, archive: str = "", repo: str = "", ref: str = "") -> str:
  """Unpack the uploaded archive (or clone repo@ref), make .venv, install the project with the TPU extra."""
  d = shlex.quote(spec.remote_dir)
  if archive:
    fetch = f"rm -rf {d} && mkdir -p {d} && tar -xzf {shlex.quote(archive)} -C {d}"
  else:
    r, ref_q = shlex.quote(repo), shlex.quote(ref or "HEAD")
    fetch = (f"rm -rf {d} && git clone -q {r} {d} && git -C {d} fetch -q origin {ref_q} "
             f"&& git -C {d} checkout -q FETCH_HEAD")
  return (f"set -euo pipefail; {fetch}; cd {d}; python3 -m venv .venv; "
          ".venv/bin/pip install -q --upgrade pip; .venv/bin/pip install -q -c constraints.txt -e '.[tpu]'")


def run_script(spec: Spec, program: str, args: list[str]) -> str:
  """Run `python -m qwen_audio_jax.<program> ARGS` from the installed .venv on a worker, exporting the
  generation's environment; output is teed to logs/<program>_<host>.log and the exit status is the
  program's (pipefail)."""
  env = environment.worker_env(spec.slice, spec.cache_root, spec.xla_flags)
  exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(env.items()))
  module = program if "." in program else f"qwen_audio_jax.{program}"
  log = f"logs/{module.rsplit('.', 1)[-1]}_$(hostname).log"
  cmd = shlex.join([".venv/bin/python", "-m", module, *args])
  return (f"set -euo pipefail; cd {shlex.quote(spec.remote_dir)}; mkdir -p logs; {exports}"
          f"{cmd} 2>&1 | tee -a {log}")
