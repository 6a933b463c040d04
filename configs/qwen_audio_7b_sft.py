"""Qwen-Audio-Chat stage 2 (supervised instruction fine-tuning): audio encoder frozen; LLM,
projector and audio bos/eos trained (spec §6). Starts from a converted (or stage-1 run's) checkpoint.
Conversations (chat SFT jsonl: Qwen-Audio sft_sample ChatML lines or `messages` objects;
qwen_audio_jax/data/conversations.py) are rendered in ChatML with the loss on the assistant turns; each
manifest's kind is detected from its fields. There is no default data set:

  python -m qwen_audio_jax.train --config=configs/qwen_audio_7b_sft.py --workdir=runs/sft \
      --config.train.init_params_dir=ckpt/qwen-audio \
      --config.data.train_manifest=conversations.jsonl,text_instructions.jsonl --config.data.train_weights=0.9,0.1 \
      --config.data.eval_manifest=dev_conversations.jsonl

Hyper-parameters of the paper are not public (a hub config hints at ~8000 iterations).
"""

from qwen_audio_jax.train import defaults


def get_config(arg=None):
  del arg
  c = defaults.base_config()
  # The frozen audio encoder is stored in bf16 (the compute dtype); the LLM and projector keep fp32 master weights.
  # remat "minimal" (layers.REMAT_POLICIES): keeps the q/k/v, attention-output and MLP-input matmul results,
  # recomputes attention and elementwise ops in the backward (a few % more FLOPs; "full" recomputes the whole
  # forward, ~1/3 more). Per example it keeps ~4 GB over 32+32 layers (bench/remat_policies.py: encoder
  # layer 33+4, LLM layer 76-84+8 MiB; "none" 11 GB, "save_dot_except_mlp" 1.9 GB, "full" 0.4 GB), i.e.
  # ~32 GB at 8 examples per device: fits 80+ GB devices (v5p, H100/H200); on 16-32 GB chips (v5e, v6e)
  # override with remat_policy="save_dot_except_mlp" or "full".
  c.model = defaults.model_block("qwen-audio-7b", dtype="bfloat16", param_dtype="float32",
                                 encoder_param_dtype="bfloat16", remat_policy="minimal",
                                 decoder=dict(vocab_pad_to=defaults.VOCAB_PAD_TO))
  c.train.freeze = (r"audio_encoder/.*",)
  c.train.total_steps = 8000
  c.train.batch_size = 128
  c.optim.lr = 1e-5
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 0.1
  c.mesh.ici = (1, -1, 1)
  c.mesh.dcn = (-1, 1, 1)
  c.data.seq_buckets = (1024, 2048)
  c.data.max_audios = 2  # audio slots per example (every slot costs an encoder pass, used or not)
  c.data.num_workers = 8
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 500
  # No default data: data.train_manifest / data.corpus from the command line (see above). Conversations
  # (chat format, loss on the assistant turns + their <|im_end|>) and text-only instruction data mix by weight.
  c.data.sources = []
  return c
