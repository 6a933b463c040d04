"""Remat policies compared: train-step time on CPU (tiny and medium models) and compiled activation
memory per layer at Qwen-Audio-7B widths (compile only, nothing allocated).

  python -m bench.remat_policies [--quick] [--parts cpu|7b|all] [--output FILE]

CPU timing: the trainer's jitted step (bench/train_setup.py), median of 5 after a warm-up step.
7B memory: the activation bytes one layer at Qwen-Audio-7B widths keeps for its backward pass under each
policy (the residuals of `jax.vjp`, found by tracing only: exact, nothing compiled or allocated), per
example, bf16 compute: encoder layer over 1500 frames, decoder layer over 1024 tokens, each trained or
frozen (a frozen layer between the loss and a trained one still keeps what d(input) needs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bench import common, train_setup
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.model.audio_encoder import EncoderLayer
from qwen_audio_jax.model.decoder import DecoderLayer
from qwen_audio_jax.model.layers import remat

POLICIES = ("none", "full", "minimal", "save_dot_except_mlpwi", "save_dot_except_mlp", "save_qkv_proj",
            "save_out_proj", "dots")
POLICIES_7B = ("none", "minimal", "save_dot_except_mlp", "save_qkv_proj", "full")


def time_policies(name: str, make_cfg, shapes: dict, policies, repeats: int) -> list[dict]:
  """Steps of every policy called in turn, round after round (load bursts hit all alike)."""
  steps = {policy: train_setup.make_step(make_cfg(remat_policy=policy), "full", **shapes) for policy in policies}
  timings = common.time_interleaved({p: train_setup.run_fn(s) for p, s in steps.items()}, repeats)
  rows = []
  for policy, s in steps.items():
    rows.append({"model": name, "policy": policy, "step_s": timings[policy]["median_s"],
                 "min_step_s": timings[policy]["min_s"], "step_cpu_s": timings[policy]["cpu_median_s"],
                 "temp_mb": s.compiled_temp_bytes() / 2**20})
    print(f"  {name} {policy:22s} {rows[-1]['step_s']:.3f} s (min {rows[-1]['min_step_s']:.3f}, "
          f"CPU {rows[-1]['step_cpu_s']:.3f} s)  temp {rows[-1]['temp_mb']:.0f} MiB", flush=True)
  return rows


def saved_bytes(fn, params, x, wrt_params: bool) -> int:
  """Bytes of the activations `fn(params, x)` keeps for its backward pass (jax.vjp residuals that are
  not the inputs themselves); with wrt_params=False the params are frozen (gradient for x only)."""
  if wrt_params:
    closed = jax.make_jaxpr(lambda p, x: jax.vjp(fn, p, x))(params, x)
  else:
    closed = jax.make_jaxpr(lambda p, x: jax.vjp(lambda x: fn(p, x), x))(params, x)
  jaxpr = closed.jaxpr
  inputs = {id(v) for v in jaxpr.invars}
  outs = jaxpr.outvars[1:]  # [0] is the layer's output
  residuals = {id(v): v for v in outs if hasattr(v, "aval") and type(v).__name__ != "Literal" and id(v) not in inputs}
  return int(sum(np.prod(v.aval.shape) * np.dtype(v.aval.dtype).itemsize for v in residuals.values()))


def layer_residuals_7b(policies) -> list[dict]:
  """Activation bytes one 7B-width layer keeps per example for the backward, per policy (bf16 compute):
  the encoder layer (T = 1500 frames, trained in stage 1, frozen in SFT) and the decoder layer (1024
  tokens, frozen in stage 1, trained in SFT). A frozen layer still keeps what d(input) needs."""
  base = model_config.get_config("qwen-audio-7b").replace(dtype="bfloat16", param_dtype="bfloat16")
  rows = []
  for policy in policies:
    cfg = base.replace(remat_policy=policy)
    enc = remat(EncoderLayer, policy)(cfg)
    dec = remat(DecoderLayer, policy)(cfg)
    x_enc = jax.ShapeDtypeStruct((1, 1500, cfg.encoder.d_model), jnp.bfloat16)
    x_dec = jax.ShapeDtypeStruct((1, 1024, cfg.decoder.d_model), jnp.bfloat16)
    dh = cfg.decoder.head_dim
    tables = [jax.ShapeDtypeStruct((1, 1024, dh), jnp.float32)] * 2
    dec_extra = (*tables, jax.ShapeDtypeStruct((1, 1024), jnp.float32), jax.ShapeDtypeStruct((1, 1024), jnp.bool_),
                 jax.ShapeDtypeStruct((), jnp.int32), None)
    p_enc = jax.eval_shape(lambda: enc.init(jax.random.PRNGKey(0), jnp.zeros(x_enc.shape, x_enc.dtype), None))
    p_dec = jax.eval_shape(lambda: dec.init(jax.random.PRNGKey(0), jnp.zeros(x_dec.shape, x_dec.dtype),
                                            *[jnp.zeros(a.shape, a.dtype) if a is not None else None
                                              for a in dec_extra]))
    f_enc = lambda p, x: enc.apply(p, x, None)[0]  # noqa: E731
    f_dec = lambda p, x: dec.apply(p, x, *[jnp.zeros(a.shape, a.dtype) if a is not None else None  # noqa: E731
                                           for a in dec_extra])[0]
    row = {"policy": policy,
           "encoder_trained_mb": saved_bytes(f_enc, p_enc, x_enc, True) / 2**20,
           "encoder_frozen_mb": saved_bytes(f_enc, p_enc, x_enc, False) / 2**20,
           "decoder_trained_mb": saved_bytes(f_dec, p_dec, x_dec, True) / 2**20,
           "decoder_frozen_mb": saved_bytes(f_dec, p_dec, x_dec, False) / 2**20}
    rows.append(row)
    print(f"  7B layer, {policy:22s} encoder trained/frozen {row['encoder_trained_mb']:.0f}/"
          f"{row['encoder_frozen_mb']:.0f} MiB, decoder trained/frozen {row['decoder_trained_mb']:.0f}/"
          f"{row['decoder_frozen_mb']:.0f} MiB per example", flush=True)
  return rows


def run(quick: bool, parts: str) -> dict:
  policies = ("none", "full", "minimal") if quick else POLICIES
  repeats = 2 if quick else 7
  out = {"bench": "remat_policies", "quick": quick, "cpu": []}
  if parts in ("cpu", "all"):
    out["cpu"] += time_policies("tiny", train_setup.tiny_config,
                                dict(batch_size=8, seq_len=128, mel_frames=400), policies, repeats)
  if parts in ("cpu", "all") and not quick:
    out["cpu"] += time_policies("medium", train_setup.medium_config, dict(batch_size=4, seq_len=256, mel_frames=1000),
                                ("none", "full", "minimal", "save_dot_except_mlp", "save_qkv_proj"), repeats)
  if parts in ("7b", "all"):
    out["7b"] = layer_residuals_7b(POLICIES_7B[:2] if quick else POLICIES)
  out["machine"] = common.machine()
  return out


def main(argv=None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--parts", choices=("cpu", "7b", "all"), default="all",
                 help="cpu: step times of tiny/medium models; 7b: compile-only memory at 7B widths")
  args = p.parse_args(argv)
  result = run(args.quick, args.parts)
  common.emit(result, args.output)
  return result


if __name__ == "__main__":
  main()
