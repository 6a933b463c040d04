"""Outputs other people can read: permissions that follow the user's umask, and atomic small files.

`tempfile.mkdtemp` creates 0700 folders and `tempfile.mkstemp` 0600 files; anything made that way and
then renamed into place must get the mode an ordinary `open()`/`os.makedirs()` would have given it
(0644 / 0755 under the usual umask 022). `follow_umask` does that for a file or a whole tree.
"""

from __future__ import annotations

import json
import os
from typing import Any


def current_umask() -> int:
  """The process umask, read without changing it where the kernel reports it (Linux >= 4.7)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)  # fallback: read by setting and restoring (not thread-safe, but brief)
  os.umask(mask)
  return mask


def follow_umask(path: str, recursive: bool = True) -> None:
  """chmod `path` (and, for a folder, everything under it) to 0666/0777 minus the umask."""
  mask = current_umask()
  file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
  if not os.path.isdir(path):
    os.chmod(path, file_mode)
    return
  os.chmod(path, dir_mode)
  if not recursive:
    return
  for root, dirs, files in os.walk(path):
    for d in dirs:
      os.chmod(os.path.join(root, d), dir_mode)
    for f in files:
      if not os.path.islink(os.path.join(root, f)):
        os.chmod(os.path.join(root, f), file_mode)


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a sibling temporary file and a rename (never half a file).
  URLs (gs://...) go through etils.epath (a copy-and-delete rename on object stores)."""
  tmp = f"{path}.tmp-{os.getpid()}"
  if "://" in str(path):
    from etils import epath  # pylint: disable=import-outside-toplevel
    epath.Path(tmp).write_text(text)
    epath.Path(tmp).replace(path)
    return
  try:
    with open(tmp, "w", encoding="utf-8") as f:  # open() honours the umask
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=1) + "\n")
