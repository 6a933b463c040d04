"""Qwen-Audio stage 1 (multi-task pretraining): LLM frozen; audio encoder, projector and audio
bos/eos trained (spec §6). Starts from converted Whisper-large-v2 + Qwen-7B params (`convert.py
--source=compose`); data from the command line (there is no default data set):

  python -m qwen_audio_jax.train --config=configs/qwen_audio_7b_pretrain.py --workdir=runs/stage1 \
      --config.train.init_params_dir=ckpt/qwen_audio_init \
      --config.data.corpus=librispeech:/data/LibriSpeech:train-clean-100+train-clean-360 \
      --config.data.train_manifest=more_tasks.jsonl --config.data.train_weights=0.5,0.5 \
      --config.data.eval_corpus=librispeech:/data/LibriSpeech:dev-clean

Learning rates, batch sizes and step counts of the paper are not public (spec §6): values below are
starting points. `--print_config` lists every field.
"""

from qwen_audio_jax.train import defaults


def get_config(arg=None):
  del arg
  c = defaults.base_config()
  # The frozen LLM is stored in bf16 (the compute dtype: no per-step conversion, half the memory); the
  # trained encoder, projector and audio bos/eos keep fp32 master weights.
  # remat "full" (layers.REMAT_POLICIES): at batch 512 the plan (README "Scaling") finds "minimal" (keeps the
  # q/k/v, attention-output and MLP-input matmul results, ~4 GB per example over 32+32 layers) too large on
  # v4-32, v5p-64 and v6e-64 (16-32 examples per chip), while "full" (recomputes the forward, ~1/3 more
  # FLOPs, ~0.4 GB per example) fits; with fewer examples per chip on 80+ GB devices (H100/H200, v5p at
  # batch <= 256) override with remat_policy="minimal" (faster) and check it with `plan`.
  c.model = defaults.model_block("qwen-audio-7b", dtype="bfloat16", param_dtype="float32",
                                 decoder_param_dtype="bfloat16", remat_policy="full",
                                 decoder=dict(vocab_pad_to=defaults.VOCAB_PAD_TO))
  c.train.freeze = (r"decoder/.*",)
  c.train.total_steps = 100_000
  c.train.batch_size = 512
  c.train.grad_accum_steps = 1
  c.optim.lr = 5e-5
  c.optim.warmup_steps = 2000
  c.optim.weight_decay = 0.05
  c.mesh.ici = (1, -1, 1)  # FSDP over each slice
  c.mesh.dcn = (-1, 1, 1)  # data parallel across slices
  c.data.seq_buckets = (1024, 2048)
  c.data.num_workers = 8
  c.checkpoint.every_steps = 1000
  c.eval.every_steps = 2000
  c.log.every_steps = 10
  c.data.sources = []  # no default data: set data.train_manifest / data.corpus (see above)
  return c
