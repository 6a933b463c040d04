"""Log-mel front end: our jitted, batched `log_mel_spectrogram` vs transformers' WhisperFeatureExtractor.

  python -m bench.mel_frontend [--quick] [--output FILE]

Inputs are 30 s clips at 16 kHz (the shipped JFK speech tiled with a different offset and gain per clip),
numpy in, features out. Ours is timed to `block_until_ready` after warm-up calls (the first compiles).
The reference runs through its public `__call__` in both of its paths: the default
torch path (`torch.stft`, chosen whenever torch is installed) and the numpy path (what it uses without
torch; selected here by hiding torch from the module). The three are called in turn, round after round
(a burst of load from other jobs hits all alike). Reported: median seconds per clip, ratio ref / ours of
the medians and of the minima (> 1: ours faster) and max |Δ| of the features (a sanity check).
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import transformers
from transformers.models.whisper import feature_extraction_whisper

from bench import common, rows
from qwen_audio_jax.assets import JFK_FLAC
from qwen_audio_jax.audio import N_SAMPLES, load_audio, log_mel_spectrogram

CLIP_SECONDS = 30


def make_clips(n: int) -> np.ndarray:
  """[n, 480000] float32: JFK speech tiled to 30 s, rolled and scaled differently per clip."""
  speech = load_audio(JFK_FLAC)
  tiled = np.resize(speech, N_SAMPLES)
  return np.stack([0.5 ** (i % 3) * np.roll(tiled, 7919 * i) for i in range(n)]).astype(np.float32)


@contextlib.contextmanager
def numpy_path():
  """Makes WhisperFeatureExtractor take its numpy path (as if torch were not installed)."""
  saved = feature_extraction_whisper.is_torch_available
  feature_extraction_whisper.is_torch_available = lambda: False
  try:
    yield
  finally:
    feature_extraction_whisper.is_torch_available = saved


def numpy_path_call(fn):
  def call():
    with numpy_path():
      return fn()
  return call


def run(quick: bool, batch: int | None = None, single: bool = True, repeats: int | None = None) -> dict:
  batch = batch or (4 if quick else 8)
  repeats = repeats or (10 if quick else 30)  # calls are short and this machine is noisy: many rounds
  clips = make_clips(batch)
  extractor = transformers.WhisperFeatureExtractor(feature_size=80)

  def ours(x):
    return lambda: log_mel_spectrogram(x).block_until_ready()

  def ref(x):
    items = list(x) if x.ndim == 2 else x
    return lambda: extractor(items, sampling_rate=16000, return_tensors="np")["input_features"]

  cases = {}
  for case, x in ((f"batch of {batch}", clips), ("1 clip", clips[0]))[:2 if single else 1]:
    n = batch if x.ndim == 2 else 1
    reps = repeats if n > 1 else 2 * repeats
    fns = {"ours": ours(x), "torch": ref(x), "numpy": numpy_path_call(ref(x))}
    t = common.time_interleaved(fns, reps, warmup=3)  # ours' first warm-up call compiles this shape
    with numpy_path():
      f_numpy = np.asarray(ref(x)()).reshape(n, 80, -1)
    f_ours = np.asarray(jax.device_get(log_mel_spectrogram(x))).reshape(n, 80, -1)
    f_torch = np.asarray(ref(x)()).reshape(n, 80, -1)
    cases[case] = {
        "clips": n,
        "ours_s_per_clip": t["ours"]["median_s"] / n,
        "ref_torch_s_per_clip": t["torch"]["median_s"] / n,
        "ref_numpy_s_per_clip": t["numpy"]["median_s"] / n,
        "ratio_torch_over_ours": t["torch"]["median_s"] / t["ours"]["median_s"],
        "ratio_numpy_over_ours": t["numpy"]["median_s"] / t["ours"]["median_s"],
        "min_ratio_torch_over_ours": t["torch"]["min_s"] / t["ours"]["min_s"],
        "min_ratio_numpy_over_ours": t["numpy"]["min_s"] / t["ours"]["min_s"],
        "max_abs_diff_vs_torch": float(np.max(np.abs(f_ours - f_torch))),
        "max_abs_diff_vs_numpy": float(np.max(np.abs(f_ours - f_numpy))),
        "cpu_ratio_torch_over_ours": t["torch"]["cpu_median_s"] / t["ours"]["cpu_median_s"],
        "ours_cpu_s_per_clip": t["ours"]["cpu_median_s"] / n,
        "repeats": reps,
    }
  return {"bench": "mel_frontend", "quick": quick, "clip_seconds": CLIP_SECONDS, "n_mels": 80,
          "jax_backend": jax.default_backend(),
          "timing": "interleaved rounds after 3 warm-up calls each; median (and min) per call",
          "cases": cases, "machine": common.machine()}


def stage_profile(clips: np.ndarray, repeats: int = 5) -> dict:
  """Where our log-mel time goes: jitted prefixes of the pipeline (framing + window; + rFFT and power;
  + mel projection; the whole function), timed in interleaved rounds; a stage = the difference."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.audio import mel  # pylint: disable=import-outside-toplevel
  x = jnp.asarray(clips)

  def frames(a):
    padded = jnp.pad(a, [(0, 0), (mel.N_FFT // 2, mel.N_FFT // 2)], mode="reflect")
    return padded[..., mel._frame_indices()] * mel._hann_window()  # pylint: disable=protected-access

  def power(a):
    spectrum = jnp.fft.rfft(frames(a), axis=-1)
    return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2

  def project(a):
    return jnp.einsum("mf,...tf->...mt", jnp.asarray(mel.mel_filters(80)), power(a),
                      precision=jax.lax.Precision.HIGHEST)

  prefixes = {"frame+window": jax.jit(frames), "+rfft+power": jax.jit(power), "+mel matmul": jax.jit(project),
              "+log, floor, scale (all)": log_mel_spectrogram}
  t = common.time_interleaved({k: (lambda f=f: f(x).block_until_ready()) for k, f in prefixes.items()}, repeats,
                              warmup=2)
  out, before = {}, 0.0
  for name in prefixes:
    out[name] = max(t[name]["median_s"] - before, 0.0) / len(clips)
    before = t[name]["median_s"]
  return out


def row(quick: bool) -> dict:
  """P1: 32 clips of 30 s (--quick: 4) against the extractor's default (torch) path."""
  batch = 4 if quick else 32
  result = run(quick, batch=batch, single=False, repeats=5 if quick else 7)
  c = result["cases"][f"batch of {batch}"]
  notes = []
  if not quick:
    result["stage_profile_s_per_clip"] = prof = stage_profile(make_clips(batch))
    notes.append("Profile (ms/clip, jitted prefixes, differences): " + ", ".join(
        f"{k} {1e3 * v:.1f}" for k, v in prof.items()) + ".")
  return {"ours": f"{1e3 * c['ours_s_per_clip']:.1f} ms/clip (jitted batch of {batch})",
          "reference": f"WhisperFeatureExtractor, torch path {1e3 * c['ref_torch_s_per_clip']:.1f} ms/clip "
                       f"(numpy path {1e3 * c['ref_numpy_s_per_clip']:.1f})",
          "value": c["ratio_torch_over_ours"], "met": c["ratio_torch_over_ours"] >= 5.0, "details": result,
          "notes": [f"{batch} × 30 s clips; ratio of medians over {c['repeats']} interleaved rounds; vs the numpy "
                    f"path {c['ratio_numpy_over_ours']:.2f}x; in process CPU time vs the torch path "
                    f"{c['cpu_ratio_torch_over_ours']:.2f}x ({1e3 * c['ours_cpu_s_per_clip']:.1f} CPU-ms/clip); max |Δ| "
                    f"of the features {c['max_abs_diff_vs_torch']:.1e}."] + notes}


rows.register(rows.Row("P1", "log-mel, 32 × 30 s clips vs WhisperFeatureExtractor", ">= 5x", row))


def print_result(result: dict) -> None:
  rows = []
  for case, c in result["cases"].items():
    rows.append([case, c["ours_s_per_clip"], c["ref_torch_s_per_clip"], c["ref_numpy_s_per_clip"],
                 f"{c['ratio_torch_over_ours']:.2f}x ({c['min_ratio_torch_over_ours']:.2f}x)",
                 f"{c['ratio_numpy_over_ours']:.2f}x ({c['min_ratio_numpy_over_ours']:.2f}x)",
                 f"{c['max_abs_diff_vs_torch']:.1e}", f"{c['max_abs_diff_vs_numpy']:.1e}"])
  common.print_table(
      f"log-mel, 30 s clips, 80 bins (load before: {result['machine']['loadavg_1m_at_start']}); median s/clip; "
      "ratio = ref / ours of medians (of minima)",
      ["case", "ours", "HF torch", "HF numpy", "torch/ours", "numpy/ours", "|Δ| torch", "|Δ| numpy"], rows)


def main(argv=None) -> dict:
  args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
  result = run(args.quick)
  print_result(result)
  common.emit(result, args.output)
  return result


if __name__ == "__main__":
  main()
