"""Inference: batched KV-cache generation (greedy, sampling, beam search) and the `infer` CLI.

  from qwen_audio_jax.infer import Pipeline
  pipe = Pipeline.from_checkpoint("ckpt/qwen-audio")
  [result] = pipe.generate(["clip.flac"], task="asr", language="en")
  print(result.text, result.finish_reason, result.duration_s)

Layers: `settings` (DecodeSettings), `logits` / `stopping` (per-step choices and stop rules), `search` /
`beam` (the on-device decode loops), `decode_fns` (model adapters), `engine` (buckets, compiles, memory
checks), `requests` (audio + prompts → rows), `results` (ids → text, words, stitched windows),
`pipeline` (the API), `__main__` (the CLI).
"""

from qwen_audio_jax.infer.engine import GenerationError, Generator, Prompt, RowOutput
from qwen_audio_jax.infer.pipeline import Pipeline
from qwen_audio_jax.infer.results import Result
from qwen_audio_jax.infer.settings import DecodeSettings, DecodeSettingsError

__all__ = ["DecodeSettings", "DecodeSettingsError", "GenerationError", "Generator", "Pipeline", "Prompt", "Result",
           "RowOutput"]
