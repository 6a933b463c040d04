"""The compiled greedy decode program updates the KV cache in place: no cache-sized copy inside the loop.

Inspects the optimised HLO of the engine's executable (tiny-qwen, bf16 cache). A `lax.cond` around the
model step, or the layer scan re-stacking every layer's cache as its outputs, made XLA copy the whole
cache once or more per generated token.
"""

import re

import jax
import numpy as np
import pytest

from qwen_audio_jax.infer import DecodeSettings, Generator, Prompt
from qwen_audio_jax.model import get_config, init_params


@pytest.fixture(scope="module")
def compiled():
  cfg = get_config("tiny-qwen", dtype="bfloat16")
  gen = Generator(cfg, init_params(cfg, jax.random.PRNGKey(0)), max_batch=2)
  prompts = [Prompt(ids=np.arange(5, 12, dtype=np.int32)), Prompt(ids=np.arange(5, 10, dtype=np.int32))]
  out = gen.generate(prompts, DecodeSettings(max_new_tokens=12, eos_ids=(cfg.pad_id,), suppress_ids=(cfg.pad_id,)))
  (executable,) = gen._compiled.values()  # pylint: disable=protected-access
  return cfg, executable.as_text(), out


def computations(hlo: str) -> dict[str, list[str]]:
  out, name = {}, None
  for line in hlo.splitlines():
    if line and not line.startswith((" ", "}")) and line.rstrip().endswith("{"):
      name = " ".join(line.split()[:2]) if line.startswith("ENTRY") else line.split()[0]
      out[name] = []
    elif name is not None:
      out[name].append(line.strip())
  return out


def test_cache_is_bf16_and_never_copied_inside_the_loop(compiled):
  cfg, hlo, out = compiled
  d = cfg.decoder
  cache = re.compile(rf"bf16\[{d.n_layers},2,{d.n_kv_heads},\d+,{d.head_dim}\]")
  assert cache.search(hlo), "no bf16 [L, B, KVH, S, Dh] cache in the program"
  assert " while(" in hlo
  copies = {name: [op for op in ops if cache.search(op.split(" copy(")[0]) and " copy(" in op]
            for name, ops in computations(hlo).items() if not name.startswith("ENTRY")}
  assert not any(copies.values()), {k: v for k, v in copies.items() if v}
  assert all(len(o.ids) == 12 for o in out)


def test_fp32_decode_step_reads_the_cache_without_a_transpose():
  """The cache is [L, B, KVH, S, Dh], the order attention's matmuls read: in the decode loop no op makes a
  transposed or copied per-layer slice of it (with [L, B, S, KVH, Dh] two such copies per layer and step
  were ~40% of a CPU decode step)."""
  cfg = get_config("tiny-qwen")
  gen = Generator(cfg, init_params(cfg, jax.random.PRNGKey(0)), max_batch=2)
  prompts = [Prompt(ids=np.arange(5, 12, dtype=np.int32)), Prompt(ids=np.arange(5, 10, dtype=np.int32))]
  gen.generate(prompts, DecodeSettings(max_new_tokens=4, eos_ids=(cfg.pad_id,), suppress_ids=(cfg.pad_id,)))
  (executable,) = gen._compiled.values()  # pylint: disable=protected-access
  d, hlo = cfg.decoder, executable.as_text()
  dims = set(re.findall(rf"f32\[{d.n_layers},2,(\d+),(\d+),{d.head_dim}\]", hlo))  # the cache, either order
  (s_max,) = {n for pair in dims for n in pair if int(n) != d.n_kv_heads}
  layer_slice = re.compile(rf"f32\[2,({s_max},{d.n_kv_heads}|{d.n_kv_heads},{s_max}),{d.head_dim}\]")
  moved = [op for name, ops in computations(hlo).items() for op in ops
           if re.search(r"= \S+ (transpose|copy)\(", op) and layer_slice.search(op.split(" = ")[1].split(" ")[0])]
  assert not moved, moved
