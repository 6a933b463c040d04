"""Every process must run the same config and the same code: hashes, and a start-up check across hosts.

config hash: sha256 of the resolved run config (sorted JSON) plus the workdir, leaving out the fields
that legitimately differ per process (distributed.process_id). code hash: sha256 of every .py file of
the installed `qwen_audio_jax` package (relative path + bytes). At start-up each process gathers both
hashes from all others (multihost_utils.process_allgather) and fails before compiling when one differs.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

PER_PROCESS_FIELDS = (("distributed", "process_id"),)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RunMismatchError(RuntimeError):
  """Processes of one run disagree on the config or the code."""


def config_digest(cfg, workdir: str = "") -> str:
  d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  for path in PER_PROCESS_FIELDS:
    node = d
    for k in path[:-1]:
      node = node.get(k, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.pop(path[-1], None)
  text = json.dumps({"config": d, "workdir": workdir}, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()


def code_digest(root: str = _PACKAGE_ROOT) -> str:
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    for name in sorted(f for f in filenames if f.endswith(".py")):
      path = os.path.join(dirpath, name)
      h.update(os.path.relpath(path, root).encode() + b"\0")
      with open(path, "rb") as f:
        h.update(f.read())
      h.update(b"\0")
  return h.hexdigest()


def mismatches(rows: list[tuple[str, str]]) -> str:
  """One message naming the processes whose (config, code) hashes differ from process 0's; '' if none."""
  parts = []
  for what, idx in (("config", 0), ("code", 1)):
    ref = rows[0][idx]
    bad = [i for i, r in enumerate(rows) if r[idx] != ref]
    if bad:
      shown = ", ".join(f"process {i} has {rows[i][idx][:12]}" for i in bad[:8])
      parts.append(f"{what} hash differs from process 0's {ref[:12]}: {shown}")
  if not parts:
    return ""
  return ("processes disagree: " + "; ".join(parts) + ". Every host must run the same command (config file, "
          "--config overrides, --workdir) on the same code version")


def check_same_everywhere(cfg, workdir: str) -> tuple[str, str]:
  """(config hash, code hash) of this process; raises RunMismatchError when another process differs."""
  import jax  # pylint: disable=import-outside-toplevel
  mine = (config_digest(cfg, workdir), code_digest())
  if jax.process_count() == 1:
    return mine
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  local = np.frombuffer(bytes.fromhex(mine[0]) + bytes.fromhex(mine[1]), np.uint8)
  gathered = np.asarray(multihost_utils.process_allgather(local))
  rows = [(bytes(r[:32]).hex(), bytes(r[32:]).hex()) for r in gathered.reshape(jax.process_count(), 64)]
  message = mismatches(rows)
  if message:
    raise RunMismatchError(message)
  return mine
