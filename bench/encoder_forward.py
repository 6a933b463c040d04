"""Whisper encoder forward: our jitted JAX encoder vs transformers' WhisperEncoder, same weights, fp32.

  python -m bench.encoder_forward [--quick] [--output FILE]

A random transformers WhisperEncoder (presets whisper-tiny / whisper-base) is copied into our parameter
tree through the conversion name map (`conversion/maps/whisper.py` rules + `conversion/engine.py`), so
both sides hold the same numbers; max |Δ| of the outputs is reported as a sanity check. Input: a batch
of random log-mel windows [B, 80, 3000]. Ours: `jax.jit` of `Model.encode_audio`, timed after the compile
to `block_until_ready`. Reference: eager fp32 under `torch.inference_mode`, with eager attention (as
asked) and with SDPA (transformers' default). Median seconds per batch, ratio ref / ours (> 1: ours
faster) and achieved GFLOP/s from the analytic count (`encoder_flops`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import torch
import transformers
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from bench import common, rows
from conversion import engine
from conversion.maps import NameMap
from conversion.maps.whisper import encoder_rules
from conversion.readers import TensorInfo
from conversion.tiny_models import randomize
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model import Model, get_config

PRESETS = ("whisper-tiny", "whisper-base")


def encoder_flops(n_mels: int, d: int, layers: int, mlp: int, frames: int = 3000) -> int:
  """Matmul FLOPs of one clip (multiply-add = 2; norms, GELU, softmax and biases ignored).

  T = frames / 2 after the stride-2 conv2. conv1: 2·frames·3·n_mels·d; conv2: 2·T·3d·d; per layer:
  q, k, v, out projections 4·2·T·d², MLP 2·2·T·d·mlp, scores QKᵀ and weights·V 2·2·T²·d.
  """
  t = frames // 2
  per_layer = 8 * t * d * d + 4 * t * d * mlp + 4 * t * t * d
  return 2 * frames * 3 * n_mels * d + 2 * t * 3 * d * d + layers * per_layer


class _InMemorySource:
  """The slice of conversion.readers.TensorSource that engine.plan/fill use, over a state dict."""
  def __init__(self, state: dict):
    self.path = "<in-memory WhisperEncoder>"
    self._state = {k: v.detach().float().numpy() for k, v in state.items()}
    self.infos = {k: TensorInfo(k, tuple(v.shape), "float32", self.path) for k, v in self._state.items()}

  def read(self, name: str) -> np.ndarray:
    return self._state[name]


def reference_encoder(cfg, attn: str, seed: int = 0):
  """A random transformers WhisperEncoder with the dims of `cfg.encoder` (fp32, eval mode)."""
  e = cfg.encoder
  hf_cfg = transformers.WhisperConfig(num_mel_bins=e.n_mels, d_model=e.d_model, encoder_layers=e.n_layers,
                                      encoder_attention_heads=e.n_heads, encoder_ffn_dim=e.mlp_dim,
                                      max_source_positions=e.n_ctx)
  enc = WhisperEncoder._from_config(hf_cfg, attn_implementation=attn)  # pylint: disable=protected-access
  return randomize(enc, seed).float().eval()


def params_from_reference(enc, cfg) -> dict:
  """Our parameter tree with the weights of `enc`, mapped by the hf-whisper name-map rules."""
  name_map = NameMap(family="whisper", rules=encoder_rules("", "hf"))  # WhisperEncoder's own names
  shapes = checkpoint_io.param_shapes(cfg)
  plan = engine.plan(_InMemorySource(enc.state_dict()), name_map, cfg, shapes, "hf-whisper")
  arrays, filled = engine.allocate(shapes, np.dtype(np.float32), None), set()
  engine.fill(plan, arrays, filled)
  engine.check_filled(arrays, filled)
  return checkpoint_io.unflatten(arrays)


def bench_preset(name: str, batch: int, repeats: int, n_ctx: int | None = None) -> dict:
  cfg = get_config(name).replace(text_decoder=None)  # the encoder only (the presets carry Whisper's text decoder)
  if n_ctx:  # a shorter window (quick runs); both sides get the same positions table length
    cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, n_ctx=n_ctx))
  e = cfg.encoder
  mel = np.random.default_rng(0).uniform(-1.0, 1.5, (batch, e.n_mels, e.n_frames)).astype(np.float32)

  eager = reference_encoder(cfg, "eager")
  params = jax.device_put(params_from_reference(eager, cfg))
  encode = jax.jit(lambda p, x: Model(cfg).apply({"params": p}, x, method=Model.encode_audio))
  mel_jax = jax.device_put(mel)
  run_ours = lambda: encode(params, mel_jax).block_until_ready()  # noqa: E731
  out_ours = np.asarray(run_ours())

  sdpa = reference_encoder(cfg, "sdpa")
  sdpa.load_state_dict(eager.state_dict())
  mel_torch = torch.from_numpy(mel)
  refs = {"eager": lambda: eager(mel_torch).last_hidden_state, "sdpa": lambda: sdpa(mel_torch).last_hidden_state}
  with torch.inference_mode():
    timings = common.time_interleaved({"ours": run_ours, **refs}, repeats)  # ours was compiled above
    diffs = {attn: float(np.max(np.abs(fn().numpy() - out_ours))) for attn, fn in refs.items()}
  t_ours = timings.pop("ours")

  flops = batch * encoder_flops(e.n_mels, e.d_model, e.n_layers, e.mlp_dim, e.n_frames)
  result = {"preset": name, "batch": batch, "input_shape": list(mel.shape), "gflop_per_batch": flops / 1e9,
            "ours_s": t_ours["median_s"], "ours_gflops": flops / 1e9 / t_ours["median_s"], "repeats": repeats,
            "output_max_abs": float(np.max(np.abs(out_ours)))}
  for attn, t in timings.items():
    result[f"ref_{attn}_s"] = t["median_s"]
    result[f"ref_{attn}_gflops"] = flops / 1e9 / t["median_s"]
    result[f"ratio_{attn}_over_ours"] = t["median_s"] / t_ours["median_s"]
    result[f"min_ratio_{attn}_over_ours"] = t["min_s"] / t_ours["min_s"]
    result[f"cpu_ratio_{attn}_over_ours"] = t["cpu_median_s"] / t_ours["cpu_median_s"]
    result[f"max_abs_diff_vs_{attn}"] = diffs[attn]
  return result


def run(quick: bool) -> dict:
  batch, repeats = (1, 3) if quick else (4, 5)
  presets = PRESETS[:1] if quick else PRESETS
  return {"bench": "encoder_forward", "quick": quick, "dtype": "float32", "jax_backend": jax.default_backend(),
          "torch_threads": torch.get_num_threads(),
          "timing": "interleaved rounds after one warm-up call each; median (and min) per call",
          "flops_formula": ("2*F*3*n_mels*d + 2*T*3*d*d + L*(8*T*d*d + 4*T*d*mlp + 4*T*T*d) per clip, "
                            "F=3000 mel frames, T=1500"),
          "results": [bench_preset(p, batch, repeats) for p in presets], "machine": common.machine()}


def attention_core(batch: int, frames: int, heads: int, head_dim: int, chunk: int, repeats: int = 5) -> dict:
  """One layer's attention core alone (no projections): our chunked attention vs torch SDPA, fp32."""
  from qwen_audio_jax.model.attention_chunked import chunked_attention  # pylint: disable=import-outside-toplevel
  q = np.random.default_rng(1).normal(size=(batch, frames, heads, head_dim)).astype(np.float32)
  qj = jax.device_put(q)
  ours = jax.jit(lambda q: chunked_attention(q, q * 0.5, q * 0.25, None, False, None, head_dim**-0.5, chunk))
  tq = torch.from_numpy(q).transpose(1, 2).contiguous()
  with torch.inference_mode():
    sdpa = torch.nn.functional.scaled_dot_product_attention
    t = common.time_interleaved({"ours": lambda: ours(qj).block_until_ready(),
                                 "sdpa": lambda: sdpa(tq, tq * 0.5, tq * 0.25)}, repeats)
  return {"ours_s": t["ours"]["median_s"], "sdpa_s": t["sdpa"]["median_s"], "ours_cpu_s": t["ours"]["cpu_median_s"],
          "sdpa_cpu_s": t["sdpa"]["cpu_median_s"], "gflop": 4 * batch * heads * frames**2 * head_dim / 1e9}


def cost_analysis(preset: str, batch: int) -> dict:
  """XLA's own count for our compiled encoder: FLOPs, bytes accessed, transcendentals (details only: XLA
  counts the body of a loop once, so the chunked attention's key/query loops are under-counted)."""
  cfg = get_config(preset)
  dummy = np.zeros((1, cfg.encoder.n_mels, 8), np.float32)
  params = jax.eval_shape(lambda: Model(cfg).init(jax.random.PRNGKey(0), dummy, method=Model.encode_audio))["params"]
  mel = jax.ShapeDtypeStruct((batch, cfg.encoder.n_mels, cfg.encoder.n_frames), np.float32)
  fn = jax.jit(lambda p, x: Model(cfg).apply({"params": p}, x, method=Model.encode_audio))
  costs = fn.lower(params, mel).compile().cost_analysis()
  costs = costs[0] if isinstance(costs, (list, tuple)) else costs
  return {k: float(costs[k]) for k in ("flops", "bytes accessed", "transcendentals") if k in costs}


def row(quick: bool) -> dict:
  """P2: whisper-base (--quick: whisper-tiny, 5 s window), batch 4 (1), fp32, vs WhisperEncoder SDPA/eager."""
  preset, batch, n_ctx = ("whisper-tiny", 1, 250) if quick else ("whisper-base", 4, None)
  r = bench_preset(preset, batch, 5, n_ctx)
  from qwen_audio_jax.model import attention  # pylint: disable=import-outside-toplevel
  impl = attention.choose(get_config(preset).attention, jax.default_backend(), np.float32,
                          n_ctx or get_config(preset).encoder.n_ctx, get_config(preset).attention_chunk, False)[0]
  notes = []
  if not quick:
    e = get_config(preset)
    core = attention_core(batch, e.encoder.n_ctx, e.encoder.n_heads, e.encoder.head_dim, e.attention_chunk)
    costs = cost_analysis(preset, batch)
    r.update(attention_core=core, xla_cost_analysis=costs)
    layers = e.encoder.n_layers
    notes.append(f"Profile: one layer's attention core (batch {batch}, {e.encoder.n_ctx} frames, {core['gflop']:.1f} "
                 f"GFLOP): ours (chunked) {1e3 * core['ours_s']:.0f} ms ({1e3 * core['ours_cpu_s']:.0f} CPU-ms) vs torch "
                 f"SDPA's fused CPU kernel {1e3 * core['sdpa_s']:.0f} ms ({1e3 * core['sdpa_cpu_s']:.0f} CPU-ms); over "
                 f"{layers} layers that is {layers * core['ours_s']:.2f} s of our {r['ours_s']:.2f} s against "
                 f"{layers * core['sdpa_s']:.2f} s of SDPA's {r['ref_sdpa_s']:.2f} s.")
  return {"ours": f"{r['ours_s']:.3f} s/batch ({r['ours_gflops']:.0f} GFLOP/s, attention {impl!r})",
          "reference": f"WhisperEncoder SDPA {r['ref_sdpa_s']:.3f} s ({r['ref_sdpa_gflops']:.0f} GFLOP/s), "
                       f"eager {r['ref_eager_s']:.3f} s",
          "value": r["ratio_sdpa_over_ours"], "met": r["ratio_sdpa_over_ours"] >= 1.3, "details": r,
          "notes": [f"{preset}, batch {batch} × {2 * (n_ctx or 1500)} mel frames, fp32; vs eager attention "
                    f"{r['ratio_eager_over_ours']:.2f}x; in process CPU time (all threads) vs SDPA "
                    f"{r['cpu_ratio_sdpa_over_ours']:.2f}x, vs eager {r['cpu_ratio_eager_over_ours']:.2f}x; max |Δ| "
                    f"of the outputs {max(r['max_abs_diff_vs_eager'], r['max_abs_diff_vs_sdpa']):.1e}."] + notes}


rows.register(rows.Row("P2", "Whisper encoder forward (CPU, fp32) vs transformers WhisperEncoder", ">= 1.3x vs SDPA",
                       row))


def print_result(result: dict) -> None:
  rows = []
  for r in result["results"]:
    rows.append([r["preset"], r["batch"], f"{r['gflop_per_batch']:.0f}", r["ours_s"], r["ref_eager_s"],
                 r["ref_sdpa_s"], f"{r['ratio_eager_over_ours']:.2f}x ({r['min_ratio_eager_over_ours']:.2f}x)",
                 f"{r['ratio_sdpa_over_ours']:.2f}x ({r['min_ratio_sdpa_over_ours']:.2f}x)",
                 f"{r['ours_gflops']:.0f}", f"{r['ref_eager_gflops']:.0f}", f"{r['ref_sdpa_gflops']:.0f}",
                 f"{max(r['max_abs_diff_vs_eager'], r['max_abs_diff_vs_sdpa']):.1e}"])
  common.print_table(
      f"Whisper encoder fp32, [B, 80, 3000] (load before: {result['machine']['loadavg_1m_at_start']}); "
      "median s/batch; ratio = ref / ours of medians (of minima)",
      ["preset", "B", "GFLOP", "ours", "HF eager", "HF sdpa", "eager/ours", "sdpa/ours", "GFLOP/s ours",
       "eager", "sdpa", "max |Δ|"], rows)


def main(argv=None) -> dict:
  args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
  result = run(args.quick)
  print_result(result)
  common.emit(result, args.output)
  return result


if __name__ == "__main__":
  main()
