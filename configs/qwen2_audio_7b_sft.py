"""Qwen2-Audio-7B supervised fine-tuning: audio encoder frozen; LLM and projector trained.
Prompts are Qwen2-Audio's natural-language ones (`prompts/natural.py`; a record's own `prompt` wins).
Data from the command line (there is no default data set):

  python -m qwen_audio_jax.train --config=configs/qwen2_audio_7b_sft.py --workdir=runs/q2a_sft \
      --config.train.init_params_dir=ckpt/qwen2-audio \
      --config.data.train_manifest=train.jsonl --config.data.eval_manifest=dev.jsonl
"""

from qwen_audio_jax.train import defaults


def get_config(arg=None):
  del arg
  c = defaults.base_config()
  c.model = defaults.model_block("qwen2-audio-7b", dtype="bfloat16", param_dtype="float32",
                                 remat_policy="full")
  c.data.family = "qwen2-audio"
  c.data.n_mels = 128
  c.train.freeze = (r"audio_encoder/.*",)
  c.train.total_steps = 8000
  c.train.batch_size = 128
  c.optim.lr = 1e-5
  c.optim.warmup_steps = 200
  c.mesh.ici = (1, -1, 1)
  c.mesh.dcn = (-1, 1, 1)
  c.data.seq_buckets = (1024, 2048)
  c.data.num_workers = 8
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 500
  c.lora.export_naming = "qwen2-audio"
  c.data.sources = []  # no default data: set data.train_manifest / data.corpus (see above)
  return c
