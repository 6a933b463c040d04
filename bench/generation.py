"""Greedy generation: our compiled engine vs transformers `generate`, same weights, fp32, same threads.

  python -m bench.generation [--quick] [--output FILE]

A random `Qwen2AudioForConditionalGeneration` (hidden 512, 8 layers per tower, 8 heads, the real
156,032-token vocabulary; --quick: 2 layers, a 16k vocabulary, 32 new tokens) is written as a checkpoint
and converted with conversion/convert.py, so both sides hold the same numbers. A batch of 8 clips (3-6 s)
with their prompts is decoded greedily for 128 new tokens (the end token is suppressed on both sides so
every row runs the full length). Reported: median seconds per `generate` call (prefill included,
compile excluded), tokens/s and the ratio ours / transformers; the goal is >= 3x.
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np
import torch
import transformers

from bench import common, rows
from conversion import convert
from conversion.tiny_models import randomize
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.audio import lengths as L
from qwen_audio_jax.audio.mel import log_mel_spectrogram, pad_or_trim
from qwen_audio_jax.infer import DecodeSettings, Generator, Prompt

BATCH = 8


def reference_model(layers: int, vocab: int, width: int = 512, heads: int = 8):
  cfg = transformers.Qwen2AudioConfig(
      audio_config=dict(num_mel_bins=128, encoder_layers=layers, encoder_attention_heads=heads,
                        encoder_ffn_dim=4 * width, d_model=width, max_source_positions=1500),
      text_config=dict(model_type="qwen2", vocab_size=vocab, hidden_size=width, intermediate_size=4 * width,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       rms_norm_eps=1e-6, max_position_embeddings=4096, tie_word_embeddings=False),
      audio_token_index=vocab - 12)
  model = transformers.Qwen2AudioForConditionalGeneration._from_config(  # pylint: disable=protected-access
      cfg, attn_implementation="sdpa")
  return randomize(model, 0, std=0.02)


def inputs(vocab: int, audio_id: int, seed: int = 0):
  """Our Prompts and transformers' left-padded inputs for BATCH clips of 3-6 s."""
  rng = np.random.default_rng(seed)
  prompts, rows, feats, fmask = [], [], [], []
  for _ in range(BATCH):
    wave = (0.1 * rng.standard_normal(int(rng.uniform(3, 6) * 16000))).astype(np.float32)
    mel_len = L.mel_frames(wave.size, "qwen2-audio")
    t = L.encoder_frames(mel_len)
    ids = list(rng.integers(0, vocab - 100, 4)) + [audio_id] * L.pooled_frames(t) + list(rng.integers(0, 1000, 8))
    prompts.append(Prompt(ids=np.asarray(ids, np.int32), waveforms=[wave], encoder_frames=[t]))
    rows.append(ids)
    feats.append(np.asarray(log_mel_spectrogram(pad_or_trim(wave, L.N_SAMPLES), n_mels=128)))
    fmask.append((np.arange(L.N_FRAMES) < mel_len).astype(np.int64))
  width = max(map(len, rows))
  ids, mask = np.zeros((BATCH, width), np.int64), np.zeros((BATCH, width), np.int64)
  for r, row in enumerate(rows):
    ids[r, width - len(row):], mask[r, width - len(row):] = row, 1
  hf = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
            input_features=torch.tensor(np.stack(feats)), feature_attention_mask=torch.tensor(np.stack(fmask)))
  return prompts, hf


def run(quick: bool) -> dict:
  layers, vocab, new = (2, 16384, 32) if quick else (8, 156032, 128)
  threads = len(os.sched_getaffinity(0))  # what XLA's CPU client uses (bench/run.py threads())
  torch.set_num_threads(threads)
  model = reference_model(layers, vocab).eval()
  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(os.path.join(tmp, "hf"))
    convert.convert("hf-qwen2-audio", os.path.join(tmp, "hf"), os.path.join(tmp, "ckpt"), log=lambda *a: None)
    cfg, params, _ = checkpoint_io.load_model_checkpoint(os.path.join(tmp, "ckpt"))
  end = vocab - 1
  gen = Generator(cfg, params, max_batch=BATCH)
  settings = DecodeSettings(max_new_tokens=new, eos_ids=(end,), suppress_ids=(end,))
  prompts, hf = inputs(vocab, cfg.audio_pad_id)

  def ours():
    return gen.generate(prompts, settings)

  def reference():
    with torch.inference_mode():
      return model.generate(**hf, do_sample=False, max_new_tokens=new, min_new_tokens=new, eos_token_id=end,
                            pad_token_id=0)

  times = common.time_interleaved({"ours": ours, "transformers": reference}, repeats=3 if quick else 5)
  split = None
  if not quick:  # profile: prefill (audio encoder + prompt) = a call for 1 new token; the rest is decoding
    first = DecodeSettings(max_new_tokens=1, eos_ids=(end,), suppress_ids=(end,))

    def ref_first():
      with torch.inference_mode():
        return model.generate(**hf, do_sample=False, max_new_tokens=1, eos_token_id=end, pad_token_id=0)

    split = common.time_interleaved({"ours": lambda: gen.generate(prompts, first), "transformers": ref_first},
                                    repeats=3)
    split = {name: {"prefill_s": t["median_s"], "decode_ms_per_step":
                    1e3 * max(times[name]["median_s"] - t["median_s"], 0.0) / (new - 1)}
             for name, t in split.items()}
  ours_ids = [o.ids for o in ours()]
  ref_ids = reference()[:, hf["input_ids"].shape[1]:].tolist()
  tokens = BATCH * new
  row = {name: {**t, "tokens_per_s": tokens / t["median_s"]} for name, t in times.items()}
  return {"benchmark": "generation", "quick": quick, "layers": layers, "vocab": vocab, "batch": BATCH,
          "new_tokens": new, "threads": threads, "jax_devices": str(jax.devices()), **row,
          "speedup": times["transformers"]["median_s"] / times["ours"]["median_s"],
          "greedy_ids_equal": ours_ids == ref_ids, "ours_lengths": sorted({len(i) for i in ours_ids}),
          "profile": split, "machine": common.machine()}


def row(quick: bool) -> dict:
  """P3: greedy generation, batch 8 (full: 8+8 layers, 156k vocabulary, 128 new tokens), vs `generate`."""
  r = run(quick)
  ours, ref = r["ours"], r["transformers"]
  per_step = lambda t: 1e3 * t["median_s"] / r["new_tokens"]  # noqa: E731
  return {"ours": f"{ours['tokens_per_s']:.0f} tok/s ({ours['median_s']:.2f} s per call, "
                  f"{per_step(ours):.1f} ms/token step incl. prefill)",
          "reference": f"transformers generate (SDPA) {ref['tokens_per_s']:.0f} tok/s ({ref['median_s']:.2f} s, "
                       f"{per_step(ref):.1f} ms/step)",
          "value": r["speedup"], "met": r["speedup"] >= 3.0, "details": r,
          "notes": [f"Qwen2-Audio widths 512, {r['layers']}+{r['layers']} layers, vocabulary {r['vocab']}, fp32, batch "
                    f"{r['batch']} clips of 3-6 s, {r['new_tokens']} new tokens (end token suppressed on both sides); "
                    f"same converted weights; greedy ids equal: {r['greedy_ids_equal']}; in process CPU time "
                    f"{ref['cpu_median_s'] / ours['cpu_median_s']:.2f}x."] + _profile_note(r)}


def _profile_note(r: dict) -> list[str]:
  p = r.get("profile")
  if not p:
    return []
  o, t = p["ours"], p["transformers"]
  return [f"Profile (a call for 1 new token = prefill: audio encoder over the 30 s mel window + prompt): ours "
          f"prefill {o['prefill_s']:.2f} s + {o['decode_ms_per_step']:.1f} ms per decode step, transformers "
          f"{t['prefill_s']:.2f} s + {t['decode_ms_per_step']:.1f} ms; decode steps alone "
          f"{t['decode_ms_per_step'] / max(o['decode_ms_per_step'], 1e-9):.2f}x, prefill "
          f"{t['prefill_s'] / o['prefill_s']:.2f}x."]


rows.register(rows.Row("P3", "greedy generation (CPU, fp32) vs transformers generate", ">= 3x", row))


def main(argv=None) -> None:
  args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
  result = run(args.quick)
  common.print_table("greedy generation (batch 8)", ["contender", "median s", "tokens/s"],
                     [[n, result[n]["median_s"], result[n]["tokens_per_s"]] for n in ("ours", "transformers")])
  print(f"speedup ours / transformers: {result['speedup']:.2f}x (goal >= 3x); greedy ids equal: "
        f"{result['greedy_ids_equal']}")
  common.emit(result, args.output)


if __name__ == "__main__":
  main()
