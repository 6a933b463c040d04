"""What a sweep writes under its workdir besides the per-sample dumps.

  results.json   every cell: checkpoint, dataset, task, recipe, the recipe's summary, the reference numbers
  results.md     rows = checkpoints, columns = dataset / headline metric, "ours (paper X)" when given
  results.png    one panel per dataset: the headline metric per checkpoint, the reference as a line
  manifest.json  recipes (name, version, how they compute), decode settings, checkpoint hashes,
                 package versions, date, the resolved config
Files are written atomically (temporary file, then rename) with the user's umask.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import tempfile
from typing import Any, Sequence

PACKAGES = ("qwen-audio-jax", "jax", "jaxlib", "flax", "orbax-checkpoint", "sacrebleu", "jiwer", "editdistance",
            "edit-distance", "whisper-normalizer", "pycocoevalcap", "scikit-learn", "tiktoken", "numpy")


def write_atomic(path: str, text: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  write_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n")


def checkpoint_hash(path: str) -> str:
  """sha256 over the checkpoint's config, metadata and every params/ file's name, size and (for files up
  to 16 MiB) content: it changes when the weights change without hashing gigabytes per sweep."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      rel = os.path.relpath(full, path)
      size = os.path.getsize(full)
      h.update(f"{rel}\0{size}\0".encode())
      if size <= 16 << 20:
        with open(full, "rb") as f:
          h.update(f.read())
  return h.hexdigest()


def package_versions() -> dict[str, str | None]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def headline(summary: dict) -> tuple[str, float | None]:
  key = summary.get("headline", "")
  value = summary.get(key)
  return key, (float(value) if isinstance(value, (int, float)) else None)


def markdown(cells: Sequence[dict], checkpoints: Sequence[str], datasets: Sequence[dict]) -> str:
  by = {(c["checkpoint"], c["dataset"]): c for c in cells}
  columns = []
  for d in datasets:
    summary = next((c["summary"] for c in cells if c["dataset"] == d["name"]), {})
    columns.append((d, headline(summary)[0] or "?"))
  lines = ["| checkpoint | " + " | ".join(f"{d['name']} {key}" for d, key in columns) + " |",
           "|---|" + "---|" * len(columns)]
  for ckpt in checkpoints:
    cells_text = []
    for d, key in columns:
      cell = by.get((ckpt, d["name"]))
      value = headline(cell["summary"])[1] if cell else None
      text = "—" if value is None else f"{value:.4g}"
      ref = d.get("reference", {}).get(key)
      cells_text.append(text + (f" (paper {ref:g})" if ref is not None else ""))
    lines.append(f"| {ckpt} | " + " | ".join(cells_text) + " |")
  return "\n".join(lines) + "\n"


def chart(path: str, cells: Sequence[dict], checkpoints: Sequence[str], datasets: Sequence[dict]) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  n = len(datasets)
  fig, axes = plt.subplots(1, n, figsize=(max(4.0, 3.2 * n), 3.6), squeeze=False)
  by = {(c["checkpoint"], c["dataset"]): c for c in cells}
  for ax, d in zip(axes[0], datasets):
    values, key = [], ""
    for ckpt in checkpoints:
      cell = by.get((ckpt, d["name"]))
      key, value = headline(cell["summary"]) if cell else (key, None)
      values.append(float("nan") if value is None else value)
    ax.bar(range(len(checkpoints)), values, color="tab:blue")
    ref = d.get("reference", {}).get(key)
    if ref is not None:
      ax.axhline(ref, color="tab:red", linestyle="--", label="paper")
      ax.legend(loc="best", fontsize=8)
    ax.set_xticks(range(len(checkpoints)), checkpoints, rotation=20, fontsize=8)
    ax.set_title(f"{d['name']}\n({d['recipe']})", fontsize=9)
    ax.set_ylabel(key)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)


def manifest(config_json: dict, checkpoints: Sequence[dict], hashes: dict[str, str], datasets: Sequence[dict],
             decode: dict, recipe_impl: dict) -> dict:
  return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "checkpoints": [{**c, "content_sha256": hashes[c["name"]]} for c in checkpoints],
          "datasets": [{k: d[k] for k in ("name", "task", "recipe", "source", "fields", "reference", "limit")}
                       for d in datasets],
          "recipes": recipe_impl, "decode": decode, "packages": package_versions(), "config": config_json}
