"""Compiled memory of training steps, from abstract shapes only (nothing is allocated).

  python -m bench.step_memory [--quick] [--case NAME ...] [--output FILE]

Each case builds a run config, plans the state on one device and compiles the jitted train step with
`jax.jit(step).lower(abstract state, abstract batch).compile()`; `memory_analysis()` gives the bytes of
the arguments (state + batch), outputs, aliased (donated) outputs and XLA temporaries. We report
peak = arguments + outputs - aliased + temporaries, and the temporaries alone.

Cases (the 7B ones are the `configs/qwen_audio_7b_*` settings: bf16 compute, fp32 params, remat "full"):
* lora_7b: LoRA rank 8 on q,k,v,o,gate,up,down of qwen-audio-7b, everything else frozen;
* full_7b: full fine-tuning of qwen-audio-7b;
  both with a batch of 8 x 1024 tokens and one 30 s clip (3000 mel frames) per example;
* head_large_vocab: the tiny LLM (d_model 64, 2 layers) with the 155,947-row vocabulary and 8 x 1024
  tokens, where the lm_head/loss dominates (full [B, S, V] fp32 logits would be 5.1 GB).
--quick: only head_large_vocab, with 8 x 256 tokens.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections

from bench import common
from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import defaults, model_fns, optimizer, state as state_lib, step as step_lib

GB = 1e9
LORA_TARGETS = (r"decoder/layers/attn/(q|k|v|qkv|o)", r"decoder/layers/mlp/(gate|up|down)")


def run_config(case: str) -> ml_collections.ConfigDict:
  c = defaults.base_config()
  if case == "head_large_vocab":
    c.model = defaults.model_block("tiny-qwen")
    return c
  c.model = defaults.model_block("qwen-audio-7b", dtype="bfloat16", remat_policy="full")
  if case == "lora_7b":
    c.lora.enabled, c.lora.rank, c.lora.alpha, c.lora.targets = True, 8, 16.0, LORA_TARGETS
    c.train.freeze = (r".*",)
  return c


def abstract_batch(mcfg, batch: int, seq: int, mesh) -> dict:
  sharding = partition.batch_sharding(mesh)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  out = {k: spec((batch, seq), jnp.int32) for k in ("input_ids", "attention_mask", "targets", "loss_mask")}
  if mcfg.family in ("qwen-audio", "qwen2-audio"):
    out["audio_mel"] = spec((batch, mcfg.encoder.n_mels, mcfg.encoder.n_frames), jnp.float32)
    out["audio_lengths"] = spec((batch,), jnp.int32)
  return out


def measure(case: str, batch: int, seq: int) -> dict:
  cfg = run_config(case)
  mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  mcfg = model_fns.resolve_model_config(cfg.model)
  fns = model_fns.build(mcfg)
  plan = state_lib.make_plan(fns, optimizer.make_optimizer(cfg.optim, 10), mesh, cfg.train, cfg.lora)
  state = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                 plan.abstract, plan.shardings)
  step = step_lib.make_train_step(plan, cfg.train)
  t0 = time.perf_counter()
  with partition.activation_context(mesh):
    compiled = step.jitted.lower(state, abstract_batch(mcfg, batch, seq, mesh)).compile()
  m = compiled.memory_analysis()
  peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  return {"case": case, "batch": batch, "seq": seq, "compile_s": round(time.perf_counter() - t0, 1),
          "argument_gb": m.argument_size_in_bytes / GB, "output_gb": m.output_size_in_bytes / GB,
          "alias_gb": m.alias_size_in_bytes / GB, "temp_gb": m.temp_size_in_bytes / GB, "peak_gb": peak / GB}


def main(argv=None) -> None:
  p = common.parser(__doc__)
  p.add_argument("--case", action="append", choices=["lora_7b", "full_7b", "head_large_vocab"])
  args = p.parse_args(argv)
  cases = args.case or (["head_large_vocab"] if args.quick else ["head_large_vocab", "lora_7b", "full_7b"])
  rows = [measure(c, 8, 256 if args.quick and c == "head_large_vocab" else 1024) for c in cases]
  common.print_table("compiled train-step memory (GB, one device)",
                     ["case", "B x S", "peak", "temp", "arguments", "outputs", "aliased", "compile s"],
                     [[r["case"], f"{r['batch']} x {r['seq']}", r["peak_gb"], r["temp_gb"], r["argument_gb"],
                       r["output_gb"], r["alias_gb"], r["compile_s"]] for r in rows])
  common.emit({"bench": "step_memory", "results": rows, "machine": common.machine(),
               "jax": jax.__version__}, args.output)


if __name__ == "__main__":
  main()
