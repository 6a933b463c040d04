"""Device mesh with axes (data, fsdp, tensor), built from a run config.

`ici` is the per-slice shape, `dcn` the across-slice (TPU; one slice = one unit however many hosts it
has) or, off TPU, across-process shape; one
entry of `ici` may be -1 to take all remaining devices. With more than one slice the mesh comes from
`mesh_utils.create_hybrid_device_mesh`, so slow DCN links only carry the outer axes.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from qwen_audio_jax.sharding.rules import MESH_AXES


class MeshConfigError(ValueError):
  """The mesh shape in the config does not fit the devices."""


def _fill(shape: Sequence[int], n_devices: int, what: str) -> tuple[int, ...]:
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise MeshConfigError(f"mesh.{what}={shape}: need {len(MESH_AXES)} sizes for axes {MESH_AXES}")
  if shape.count(-1) > 1:
    raise MeshConfigError(f"mesh.{what}={shape}: at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if known <= 0 or n_devices % known:
    raise MeshConfigError(f"mesh.{what}={shape} does not divide {n_devices} devices")
  shape = tuple(n_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != n_devices:
    raise MeshConfigError(f"mesh.{what}={shape} uses {math.prod(shape)} devices, but there are {n_devices}")
  return shape


def _granules(devices) -> tuple[str, int]:
  """The outer (DCN) unit: TPU slices (the hosts of one slice share its ICI, so a single slice is one
  unit), else processes (CPU/GPU hosts talk over the network)."""
  slices = {getattr(d, "slice_index", 0) for d in devices}
  if len(slices) > 1 or devices[0].platform == "tpu":
    return "slice_index", len(slices)
  return "process_index", len({d.process_index for d in devices})


def make_mesh(ici: Sequence[int] = (1, -1, 1), dcn: Sequence[int] = (1, 1, 1),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes `MESH_AXES`; total shape = ici × dcn, element-wise."""
  devices = list(jax.devices() if devices is None else devices)
  n_groups = _granules(devices)[1] if -1 in tuple(dcn) else math.prod(dcn)
  dcn = _fill(dcn, n_groups, "dcn")
  n_outer = math.prod(dcn)
  if len(devices) % n_outer:
    raise MeshConfigError(f"mesh.dcn={dcn}: {len(devices)} devices do not split into {n_outer} groups")
  ici = _fill(ici, len(devices) // n_outer, "ici")
  if n_outer == 1:
    grid = mesh_utils.create_device_mesh(ici, devices)
  else:
    attr, n_groups = _granules(devices)
    if n_groups != n_outer:
      raise MeshConfigError(f"mesh.dcn={dcn} wants {n_outer} groups, but devices span {n_groups} "
                            f"distinct {attr} values")
    grid = mesh_utils.create_hybrid_device_mesh(
        ici, dcn, devices, process_is_granule=(attr == "process_index"))
  return Mesh(np.asarray(grid), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_from_config(mesh_cfg) -> Mesh:
  """`mesh_cfg` has `ici` and `dcn` (sequences of 3 ints), e.g. a ConfigDict."""
  return make_mesh(tuple(mesh_cfg.ici), tuple(mesh_cfg.get("dcn", (1, 1, 1))))


def describe(mesh: Mesh) -> str:
  return " ".join(f"{n}={s}" for n, s in mesh.shape.items())
