"""Model checkpoints (torch-free): write a converted checkpoint; read ANY checkpoint through `resolve`.

Layout of a converted checkpoint directory (it appears only when complete: DIR.tmp-XXXX, then renamed):
  params/             Orbax PyTree checkpoint of the parameter tree (stacked layers, see PARAMS contract)
  model_config.json   `config.to_dict(ModelConfig)`
  metadata.json       record: format, tokenizer family, source, hashes, dtype, tensors, ...
  carried.safetensors optional: source tensors the JAX model does not use (e.g. Whisper's text decoder)
  source_assets/      optional: small non-weight files of the source folder (tokenizer, configs, code)

Reading (`resolve`, `load_model_checkpoint`, `read_config`, `read_metadata`, `stored_shapes`,
`read_params`) accepts a converted checkpoint, a training run's WORKDIR (its best evaluation, else its
latest checkpoint; `step=best|latest|N` or `WORKDIR@latest` to choose), WORKDIR/best/<step> and
WORKDIR/checkpoints/<step>. A LoRA run reads as its merged model. Every CLI resolves checkpoints here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from qwen_audio_jax.model import config as config_lib
from qwen_audio_jax.model import params as params_lib
from qwen_audio_jax.orbax_write import (CHUNK_BYTES, atomic_directory, release_pages,  # noqa: F401  (re-exported)
                                         write_params)

FORMAT = "qwen-audio-jax/model-checkpoint"
FORMAT_VERSION = 1
PARAMS_DIR, CONFIG_FILE, METADATA_FILE = "params", "model_config.json", "metadata.json"
CARRIED_FILE, ASSETS_DIR = "carried.safetensors", "source_assets"


class CheckpointError(Exception):
  """A checkpoint directory is missing, incomplete or does not match its config (one-line message)."""


# ------------------------------------------------------------------------------------------------
# Parameter paths
# ------------------------------------------------------------------------------------------------


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {"a/b/c": leaf}."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


@functools.lru_cache(maxsize=32)
def _param_shapes(cfg: config_lib.ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
  return tuple((path, tuple(leaf.shape)) for path, leaf in flatten(params_lib.abstract_params(cfg)).items())


def param_shapes(cfg: config_lib.ModelConfig) -> dict[str, tuple[int, ...]]:
  """{path: shape} of every parameter the model declares for `cfg` (from `model.abstract_params`)."""
  return dict(_param_shapes(cfg))


# ------------------------------------------------------------------------------------------------
# Writing (the Orbax mechanics are in orbax_write.py)
# ------------------------------------------------------------------------------------------------


def save_model_checkpoint(directory: str, cfg: config_lib.ModelConfig, params: Mapping[str, Any],
                          metadata: Mapping[str, Any] | None = None, *, overwrite: bool = False,
                          write_extra: Callable[[str], dict | None] | None = None) -> str:
  """Writes params + config + metadata atomically; returns the directory.

  `write_extra(tmp_dir)` may add files; the dict it returns is merged into the metadata.

  Params are checked against the model's declared shapes first (nothing is written on a mismatch).
  """
  params = dict(params.get("params", params)) if isinstance(params, Mapping) else params
  check_params(params, cfg, where=directory)
  record = {"format": FORMAT, "format_version": FORMAT_VERSION, **dict(metadata or {})}
  if os.path.exists(directory) and not overwrite:
    raise CheckpointError(f"{os.path.abspath(directory)}: already exists (pass overwrite to replace it)")
  with atomic_directory(directory, overwrite=overwrite) as tmp:
    write_params(os.path.join(tmp, PARAMS_DIR), params)
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
      json.dump(config_lib.to_dict(cfg), f, indent=2)
    if write_extra is not None:
      record.update(write_extra(tmp) or {})
    with open(os.path.join(tmp, METADATA_FILE), "w") as f:
      json.dump(record, f, indent=2)
  return directory


def check_params(params: Mapping[str, Any], cfg: config_lib.ModelConfig, where: str = "params") -> None:
  """Raises CheckpointError naming the first missing / unexpected / mis-shaped parameter."""
  check_shapes({p: tuple(np.shape(v)) for p, v in flatten(params).items()}, cfg, where)


def check_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: config_lib.ModelConfig, where: str) -> None:
  expected = param_shapes(cfg)
  for path, shape in expected.items():
    if path not in shapes:
      raise CheckpointError(f"{where}: missing parameter {path} (expected shape {list(shape)})")
    if tuple(shapes[path]) != shape:
      raise CheckpointError(f"{where}: parameter {path} has shape {list(shapes[path])}, "
                            f"config says {list(shape)}")
  for path in shapes:
    if path not in expected:
      raise CheckpointError(f"{where}: unexpected parameter {path} (shape {list(shapes[path])}) "
                            f"for a {cfg.family} model")


# ------------------------------------------------------------------------------------------------
# Reading: one resolution for every kind of model checkpoint
# ------------------------------------------------------------------------------------------------

# A training run (written by `qwen_audio_jax.train.checkpointing`):
#   WORKDIR/config.json                         {"config": run config, "model": model config, ...}
#   WORKDIR/checkpoints/<step>/{state,data,meta}  state = {"step", "rng", "params", ["lora"], "opt_state"}
#   WORKDIR/best/<step>/{params,meta,metrics}     params = {"params", ["lora"]}
# meta (JSON) = {"format": RUN_FORMAT, "model": config dict, "tokenizer": {...}, "lora": {...} | None,
#                "init": metadata of the checkpoint the run started from | None, "step": N}
RUN_LATEST, RUN_BEST, RUN_META, RUN_CONFIG = "checkpoints", "best", "meta", "config.json"
RUN_ITEMS = {RUN_LATEST: "state", RUN_BEST: "params"}
RUN_FORMAT = "qwen-audio-jax/run-checkpoint"
STEP_SELECTORS = ("best", "latest")
_COMMITTED = "_CHECKPOINT_METADATA"  # Orbax writes it last into a finished step folder


def merge_lora(params: Mapping, lora: Mapping, scale: float) -> dict:
  """Base params with every adapted kernel replaced by W + scale · A @ B (in W's dtype, fp32 math).

  The one definition: the training forward (`train.lora.merge`) and every reader of a LoRA run use it.
  Adapters mirror the kernel's path: `.../q/kernel` gets `.../q/lora_a` [..., in, r], `.../q/lora_b`
  [..., r, out] (a fused q|k|v kernel [..., in, 3, width]: lora_b [..., r, 3, width]).
  """
  if not lora:
    return params
  flat, adapters = flatten(params), flatten(lora)
  for path in [p for p in adapters if p.endswith("/lora_a")]:
    module = path[:-len("lora_a")]
    w = flat[module + "kernel"]
    a, b = jnp.asarray(adapters[path], jnp.float32), jnp.asarray(adapters[module + "lora_b"], jnp.float32)
    lead, out = b.shape[:a.ndim - 2], b.shape[a.ndim - 1:]  # B [..., r, *out] (fused q|k|v: out = (3, width))
    delta = jnp.einsum("...ir,...ro->...io", a, b.reshape(*lead, b.shape[a.ndim - 2], -1))
    delta = delta.reshape(w.shape)
    flat[module + "kernel"] = (jnp.asarray(w, jnp.float32) + scale * delta).astype(w.dtype)
  return unflatten(flat)


@contextlib.contextmanager
def _quiet_absl():
  """Orbax warns about a missing step-level metadata file when reading one item; not our concern."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _path(path) -> epath.Path:
  """Local paths made absolute; gs:// and other URLs kept (epath reads both)."""
  path = str(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


def _read_json(path, what: str) -> Any:
  try:
    return json.loads(epath.Path(path).read_text())
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path}: cannot read the {what} ({type(e).__name__}: {e})") from None


def run_steps(workdir, kind: str) -> list[int]:
  """Finished (committed) steps under WORKDIR/<kind> (`checkpoints` or `best`), ascending."""
  folder = _path(workdir) / kind
  if not folder.is_dir():
    return []
  return sorted(int(d.name) for d in folder.iterdir()
                if d.name.isdigit() and (d / _COMMITTED).exists() and (d / RUN_ITEMS[kind]).is_dir())


def best_rule(workdir) -> tuple[str, str]:
  """(metric, "min"|"max") that chose the run's best/ checkpoints: its config's eval.best_metric and
  eval.best_mode (e.g. a generation recipe's figure, see eval/during_training.py), else eval_loss, min."""
  config = _path(workdir) / RUN_CONFIG
  run_eval = (_read_json(config, "run config").get("config") or {}).get("eval") or {} if config.exists() else {}
  return str(run_eval.get("best_metric") or "eval_loss"), str(run_eval.get("best_mode") or "min")


def best_run_step(workdir) -> int | None:
  """The best evaluation step kept under WORKDIR/best by the run's `best_rule`; NaN never wins;
  None if there is none."""
  metric, mode = best_rule(workdir)
  scored = []
  for step in run_steps(workdir, RUN_BEST):
    metrics = _path(workdir) / RUN_BEST / str(step) / "metrics" / "metrics"
    if metrics.exists():
      value = float(_read_json(metrics, "best-checkpoint metrics").get(metric, np.nan))
      if not np.isnan(value):
        scored.append((value if mode == "min" else -value, step))
  return min(scored)[1] if scored else None


def is_run(path) -> bool:
  return (_path(path) / RUN_LATEST).is_dir() or (_path(path) / RUN_BEST).is_dir()


@dataclasses.dataclass(frozen=True)
class ModelCheckpoint:
  """A model's parameters on disk and what they are (made by `resolve`)."""

  path: str  # what was asked for (absolute)
  kind: str  # "converted" | "run-best" | "run-latest"
  tree_dir: str  # the Orbax PyTree directory holding the parameters
  prefix: str  # "" (converted) or "params/" (a run item {"params": ..., ["lora": ...], ...})
  step: int | None
  config: config_lib.ModelConfig
  metadata: dict[str, Any]

  @functools.cached_property
  def _tree(self) -> dict[str, tuple[tuple[int, ...], str]]:
    try:
      with _quiet_absl():
        meta = ocp.StandardCheckpointer().metadata(self.tree_dir)
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise CheckpointError(f"{self.tree_dir}: unreadable parameter metadata ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
    return {p: (tuple(m.shape), jnp.dtype(m.dtype).name) for p, m in flatten(tree).items()
            if hasattr(m, "shape")}

  def _part(self, prefix: str) -> dict[str, tuple[tuple[int, ...], str]]:
    return {p[len(prefix):]: v for p, v in self._tree.items() if p.startswith(prefix)}

  def stored(self) -> dict[str, tuple[tuple[int, ...], str]]:
    """{path: (shape, dtype)} of the model's parameters as stored (adapters not included)."""
    return self._part(self.prefix)

  def adapters(self) -> dict[str, tuple[tuple[int, ...], str]]:
    """{path: (shape, dtype)} of stored LoRA factors (empty unless a LoRA run)."""
    return self._part("lora/") if self.prefix else {}

  @property
  def lora_scale(self) -> float:
    return float((self.metadata.get("lora") or {}).get("scale", 0.0))

  def check(self) -> "ModelCheckpoint":
    check_shapes({p: s for p, (s, _) in self.stored().items()}, self.config, self.path)
    return self

  def _restore(self, args: dict[str, Any], items: dict[str, Any]) -> dict[str, Any]:
    try:
      with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr, _quiet_absl():
        tree = ckptr.restore(self.tree_dir, args=ocp.args.PyTreeRestore(
            item=unflatten(items), restore_args=unflatten(args), partial_restore=True))
    except Exception as e:  # pylint: disable=broad-exception-caught
      first = str(e).splitlines()[0][:200] if str(e) else ""
      raise CheckpointError(f"{self.tree_dir}: cannot read the parameters ({type(e).__name__}: {first}); "
                            "the checkpoint is damaged or incomplete") from None
    return flatten(tree)

  def _adapted(self, paths) -> dict[str, tuple[str, str]]:
    """{kernel path: (lora_a path, lora_b path)} for the requested kernels that carry adapters."""
    adapters = self.adapters()
    out = {}
    for p in paths:
      module = p[:-len("kernel")] if p.endswith("/kernel") else None
      if module is not None and module + "lora_a" in adapters:
        out[p] = ("lora/" + module + "lora_a", "lora/" + module + "lora_b")
    return out

  def read(self, paths: list[str]) -> dict[str, np.ndarray]:
    """Host numpy arrays of some parameters (adapters merged), e.g. to export one leaf at a time."""
    adapted = self._adapted(paths)
    wanted = [self.prefix + p for p in paths] + [x for pair in adapted.values() for x in pair]
    got = self._restore({p: ocp.RestoreArgs(restore_type=np.ndarray) for p in wanted},
                        {p: np.zeros(0) for p in wanted})
    out = {p: got[self.prefix + p] for p in paths}
    for p, (a, b) in adapted.items():
      module = p[:-len("kernel")]
      merged = merge_lora({p: out[p]}, {module + "lora_a": got[a], module + "lora_b": got[b]}, self.lora_scale)
      out[p] = np.asarray(flatten(merged)[p])
    return out

  def load(self, *, shardings: Any = None, dtype: Any = None, target: Any = None) -> dict[str, Any]:
    """The parameter tree as jax arrays, LoRA adapters merged.

    target: tree like params of `jax.ShapeDtypeStruct`s with shardings (what training restores into);
    else shardings (tree of `Sharding`, default: the first local device) and dtype (default: stored):
    one dtype for every parameter, or a params-shaped tree of dtypes / arrays (paths it lacks: stored).
    """
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    flat_target = flatten(target) if target is not None else {}
    flat_sh = flatten(shardings) if shardings is not None else {}
    per_path = ({p: jnp.dtype(getattr(d, "dtype", d)) for p, d in flatten(dtype).items()}
                if isinstance(dtype, Mapping) else None)
    args, items = {}, {}

    def add(full, shape, stored_dtype, sharding, want_dtype):
      dt = jnp.dtype(want_dtype if want_dtype is not None else stored_dtype)
      args[full] = ocp.ArrayRestoreArgs(sharding=sharding, dtype=dt, global_shape=shape)
      items[full] = jax.ShapeDtypeStruct(shape, dt, sharding=sharding)

    for p, (shape, stored_dtype) in self.stored().items():
      t = flat_target.get(p)
      add(self.prefix + p, shape, stored_dtype, t.sharding if t is not None else flat_sh.get(p, default),
          t.dtype if t is not None else per_path.get(p) if per_path is not None else dtype)
    adapted = self._adapted(list(self.stored()))
    for p, pair in adapted.items():
      kernel_sh = args[self.prefix + p].sharding
      rep = (jax.sharding.NamedSharding(kernel_sh.mesh, jax.sharding.PartitionSpec())
             if isinstance(kernel_sh, jax.sharding.NamedSharding) else kernel_sh)
      for full in pair:
        shape, stored_dtype = self._tree[full]
        add(full, shape, stored_dtype, rep, None)
    got = self._restore(args, items)
    params = unflatten({p: got[self.prefix + p] for p in self.stored()})
    if adapted:
      params = merge_lora(params, unflatten({full[len("lora/"):]: got[full] for pair in adapted.values()
                                            for full in pair}), self.lora_scale)
    return params


def _split_step(path: str, step) -> tuple[str, Any]:
  """`DIR@best|latest|N` -> (DIR, selector); an explicit `step` argument wins."""
  head, sep, tail = path.rpartition("@")
  if sep and (tail in STEP_SELECTORS or tail.isdigit()):
    return head, step if step is not None else tail
  return path, step


def _converted(path: epath.Path) -> ModelCheckpoint:
  cfg = config_lib.from_dict(_read_json(path / CONFIG_FILE, "model config"))
  if not (path / METADATA_FILE).exists():
    raise CheckpointError(f"{path}: not a model checkpoint ({METADATA_FILE} missing)")
  record = _read_json(path / METADATA_FILE, "checkpoint metadata")
  if record.get("format") != FORMAT or record.get("format_version", 0) > FORMAT_VERSION:
    raise CheckpointError(f"{path}/{METADATA_FILE}: format {record.get('format')!r} "
                          f"v{record.get('format_version')} is not {FORMAT} v<={FORMAT_VERSION}")
  if not (path / PARAMS_DIR).is_dir():
    raise CheckpointError(f"{path}: incomplete checkpoint ({PARAMS_DIR}/ missing)")
  return ModelCheckpoint(str(path), "converted", str(path / PARAMS_DIR), "", None, cfg, record)


def _pick_step(workdir: epath.Path, selector) -> tuple[str, int]:
  latest, best = run_steps(workdir, RUN_LATEST), run_steps(workdir, RUN_BEST)
  have = f"(kept: best {best or 'none'}, checkpoints {latest or 'none'})"
  if selector is None:
    selector = "best" if best_run_step(workdir) is not None else "latest"
  if selector == "best":
    step = best_run_step(workdir)
    if step is None:
      raise CheckpointError(f"{workdir}: no best checkpoint (the run never evaluated) {have}; use step=latest")
    return RUN_BEST, step
  if selector == "latest":
    if not latest:
      raise CheckpointError(f"{workdir}: the run has no finished checkpoint yet {have}")
    return RUN_LATEST, latest[-1]
  step = int(selector)
  if step in latest:
    return RUN_LATEST, step
  if step in best:
    return RUN_BEST, step
  raise CheckpointError(f"{workdir}: no finished checkpoint for step {step} {have}")


def _run(workdir: epath.Path, kind: str, step: int) -> ModelCheckpoint:
  folder = workdir / kind / str(step)
  meta_path = folder / RUN_META / "metadata"
  meta = _read_json(meta_path, "checkpoint meta") if meta_path.exists() else {}
  if "model" not in meta:  # runs written before the meta carried the model: the run's config.json
    if not (workdir / RUN_CONFIG).exists():
      raise CheckpointError(f"{folder}: no model config stored with the checkpoint nor in "
                            f"{workdir}/{RUN_CONFIG}")
    meta = {**_read_json(workdir / RUN_CONFIG, "run config"), **meta}
  try:
    cfg = config_lib.from_dict(meta["model"])
  except (KeyError, TypeError) as e:
    raise CheckpointError(f"{folder}: stored model config is not valid ({e})") from None
  init = meta.get("init") or {}
  record = {"format": RUN_FORMAT, "dtype": cfg.param_dtype, "sources": init.get("sources", []),
            "tokenizer": meta.get("tokenizer") or init.get("tokenizer") or {"family": cfg.family},
            "lora": meta.get("lora"), "init": init or None,
            "run": {"workdir": str(workdir), "step": step, "kind": kind}}
  return ModelCheckpoint(str(folder), f"run-{'best' if kind == RUN_BEST else 'latest'}",
                         str(folder / RUN_ITEMS[kind]), "params/", step, cfg, record)


def resolve(path: str, step: Any = None, bare_config: config_lib.ModelConfig | None = None) -> ModelCheckpoint:
  """Any model checkpoint -> `ModelCheckpoint` (one-line `CheckpointError` when it is none).

  path: a converted checkpoint (`conversion/convert.py` output), a training run's WORKDIR,
    WORKDIR/best/<step> or WORKDIR/checkpoints/<step>; `PATH@best|latest|N` selects a run's step.
  step: "best" | "latest" | N for a WORKDIR (default: the best evaluation, else the latest checkpoint).
  bare_config: also accept a bare Orbax save of a params tree, read as a model of this config.
  """
  raw, step = _split_step(str(path), step)
  path = _path(raw)
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such checkpoint directory")
  if (path / CONFIG_FILE).exists():
    if step is not None:
      raise CheckpointError(f"{path}: a converted checkpoint has no steps (got step={step})")
    return _converted(path)
  name, kind, workdir = path.name, path.parent.name, path.parent.parent
  if name.isdigit() and kind in RUN_ITEMS:
    if int(name) not in run_steps(workdir, kind):
      raise CheckpointError(f"{path}: unfinished or damaged checkpoint (no {_COMMITTED} or no "
                            f"{RUN_ITEMS[kind]}/ item)")
    return _run(workdir, kind, int(name))
  if is_run(path):
    if step is not None and str(step) not in STEP_SELECTORS and not str(step).isdigit():
      raise CheckpointError(f"step={step!r}: use best, latest or a step number")
    return _run(path, *_pick_step(path, None if step is None else str(step)))
  if (path / METADATA_FILE).exists() or (path / PARAMS_DIR).is_dir():
    raise CheckpointError(f"{path}: not a model checkpoint ({CONFIG_FILE} missing)")
  if bare_config is not None and (path / "_METADATA").exists():
    return ModelCheckpoint(str(path), "bare", str(path), "", None, bare_config, {"format": "bare"})
  raise CheckpointError(f"{path}: not a model checkpoint (expected a converted checkpoint with {CONFIG_FILE}, "
                        f"a training run with {RUN_LATEST}/ or {RUN_BEST}/, or one of their <step> folders)")


def read_config(path: str) -> config_lib.ModelConfig:
  return resolve(path).config


def read_metadata(path: str) -> dict[str, Any]:
  return resolve(path).metadata


def stored_shapes(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
  """{path: (shape, dtype)} of the model parameters as stored, from Orbax metadata only."""
  return resolve(path).stored()


def load_model_checkpoint(path: str, *, step: Any = None, shardings: Any = None, dtype: Any = None
                          ) -> tuple[config_lib.ModelConfig, dict[str, Any], dict[str, Any]]:
  """(config, params, metadata) of any checkpoint `resolve` accepts; params as jax arrays.

  shardings: a pytree like params of `jax.sharding.Sharding`; default: the first local device.
  dtype: cast on restore, either one dtype for every parameter or a params-shaped tree of dtypes / arrays
    (e.g. `model.abstract_params(cfg)` of a config with per-tower param dtypes; paths it lacks keep their
    stored dtype); default: the stored dtypes. A LoRA run's adapters are merged.
  Raises CheckpointError (one line) if the stored tree does not match the config.
  """
  ckpt = resolve(path, step).check()
  return ckpt.config, ckpt.load(shardings=shardings, dtype=dtype), ckpt.metadata


def read_params(path: str, paths: list[str]) -> dict[str, np.ndarray]:
  """Host numpy arrays of some parameters only ({path: array}), e.g. to export one leaf at a time."""
  return resolve(path).read(paths)
