"""TPU slice names (v4-32, v5p-64, v5e-16 / v5litepod-16, v6e-64) → chips, physical shape, HBM, and the
devices to compile for.

Cloud TPU names count TensorCores for v4 and v5p (two per chip: v5p-64 = 32 chips) and chips for v5e
and v6e. With `libtpu` installed the devices are libtpu's compile-only devices for the named topology
(`jax.experimental.topologies.get_topology_desc`), so XLA compiles for the real chip; without it they
are simulated CPU devices (the memory figures are then XLA:CPU's, only an approximation).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Generation:
  name: str
  device_kind: str  # what JAX reports (train/metrics.py PEAK_FLOPS is keyed by it)
  hbm_gib: float  # per chip, nominal (XLA keeps a little for itself)
  cores_per_name_unit: int  # 2: the name counts TensorCores (v4, v5p); 1: it counts chips
  topology_prefix: str  # libtpu's topology name prefix
  chip_config: str  # libtpu chip_config_name
  dims: int  # 3-D torus (v4, v5p) or 2-D (v5e, v6e)


# Sources: Cloud TPU system-architecture pages (v4 32 GiB HBM2, v5e 16 GB HBM2, v5p 95 GB HBM2e,
# v6e 32 GB HBM) and MaxText's accelerator_to_spec_map (libtpu topology/chip_config names).
GENERATIONS = {
    "v4": Generation("v4", "TPU v4", 32, 2, "v4", "megacore_dense", 3),
    "v5p": Generation("v5p", "TPU v5", 95, 2, "v5", "megacore", 3),
    "v5e": Generation("v5e", "TPU v5 lite", 16, 1, "v5e", "default", 2),
    "v6e": Generation("v6e", "TPU v6 lite", 32, 1, "v6e", "default", 2),
}
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e"}

# Slice shapes in chips (Cloud TPU "types and topologies" pages); larger 3-D slices are whole 4x4x4 cubes.
SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}


class TopologyError(ValueError):
  """The topology name (or slice count) is not one this tool knows."""


@dataclasses.dataclass(frozen=True)
class Slice:
  """One named slice type, `num_slices` times (Multislice over DCN)."""

  name: str
  generation: Generation
  chips_per_slice: int
  shape: tuple[int, ...]
  num_slices: int = 1

  @property
  def chips(self) -> int:
    return self.chips_per_slice * self.num_slices

  @property
  def hbm_bytes(self) -> int:
    return int(self.generation.hbm_gib * GIB)

  @property
  def libtpu_topology(self) -> str:
    return f"{self.generation.topology_prefix}:{'x'.join(map(str, self.shape))}"

  @property
  def wrap(self) -> tuple[bool, bool, bool]:
    """Torus wrap-around links: whole cubes (3-D) or full 16-chip rings (2-D)."""
    if self.generation.dims == 3:
      return (self.chips_per_slice >= 64,) * 3
    return tuple(s == 16 for s in self.shape) + (False,)

  def describe(self) -> str:
    slices = f" x {self.num_slices} slices" if self.num_slices > 1 else ""
    return f"{self.name}{slices} ({self.chips} chips {self.generation.device_kind}, {self.libtpu_topology})"


def parse(name: str, num_slices: int = 1) -> Slice:
  """`v5p-64` → Slice; raises TopologyError with the known names."""
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name.strip().lower())
  gen_name = ALIASES.get(m.group(1), m.group(1)) if m else None
  if not m or gen_name not in GENERATIONS:
    raise TopologyError(f"--topology={name!r}: expected <generation>-<size> with generation one of "
                        f"{', '.join(sorted(GENERATIONS))} (e.g. v5p-64, v6e-64, v4-32, v5e-16)")
  gen = GENERATIONS[gen_name]
  units = int(m.group(2))
  if units % gen.cores_per_name_unit:
    raise TopologyError(f"--topology={name!r}: {gen.name} sizes count TensorCores (2 per chip); use an even size")
  chips = units // gen.cores_per_name_unit
  shapes = SHAPES_3D if gen.dims == 3 else SHAPES_2D
  if chips not in shapes:
    sizes = ", ".join(f"{gen.name}-{c * gen.cores_per_name_unit}" for c in shapes)
    raise TopologyError(f"--topology={name!r}: no {gen.name} slice of {chips} chips; known: {sizes}")
  if int(num_slices) < 1:
    raise TopologyError(f"--num_slices={num_slices}: must be >= 1")
  return Slice(name=f"{gen.name}-{units}", generation=gen, chips_per_slice=chips, shape=shapes[chips],
               num_slices=int(num_slices))


def libtpu_available() -> bool:
  return bool(os.environ.get("TPU_LIBRARY_PATH")) or importlib.util.find_spec("libtpu") is not None


def tpu_devices(sl: Slice) -> list:
  """libtpu's compile-only devices for the slice(s); nothing is allocated, no TPU needed."""
  # libtpu reads these at load time; on a machine without TPUs they would only produce warnings.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", sl.name)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip to guard
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  hosts = (2, 2, 1) if sl.chips_per_slice >= 4 else (1, 1, 1)
  return list(topologies.get_topology_desc(
      platform="tpu", topology_name=sl.libtpu_topology, chip_config_name=sl.generation.chip_config,
      chips_per_host_bounds=hosts, num_slices=sl.num_slices, wrap=sl.wrap).devices)


def cpu_devices(sl: Slice) -> list:
  """`sl.chips` simulated CPU devices (must run before JAX initialises its CPU backend)."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    jax.config.update("jax_num_cpu_devices", sl.chips)
  except RuntimeError:  # backend already up (e.g. in-process callers): use what is there
    pass
  devices = jax.devices("cpu")
  if len(devices) < sl.chips:
    raise TopologyError(f"{sl.describe()}: only {len(devices)} CPU devices in this process; run the plan in a "
                        f"fresh process (python -m qwen_audio_jax.plan) so it can simulate {sl.chips}")
  return devices[:sl.chips]


def slice_mesh_shape(ici, dcn, sl: Slice) -> tuple[int, ...]:
  """Total mesh shape (ici × dcn, -1 resolved) for a CPU simulation of `sl`."""
  def fill(shape, n, what):
    shape = [int(s) for s in shape]
    known = math.prod(s for s in shape if s != -1)
    if shape.count(-1) > 1 or known <= 0 or n % known:
      raise TopologyError(f"config mesh.{what}={tuple(shape)} does not divide {n} ({sl.describe()})")
    return [n // known if s == -1 else s for s in shape]
  d = fill(dcn, sl.num_slices, "dcn")
  i = fill(ici, sl.chips_per_slice, "ici")
  if math.prod(d) != sl.num_slices or math.prod(i) != sl.chips_per_slice:
    raise TopologyError(f"config mesh.ici={tuple(ici)} / mesh.dcn={tuple(dcn)} do not cover {sl.describe()}")
  return tuple(a * b for a, b in zip(i, d))
