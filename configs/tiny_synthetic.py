"""A small Qwen-Audio-architecture model on the built-in synthetic multi-task set (CPU, minutes).

`python -m qwen_audio_jax.train --config=configs/tiny_synthetic.py --workdir=/tmp/tiny`
Arg: `:steps` (default below), e.g. `configs/tiny_synthetic.py:60`.

Vocabulary: the compact SentencePiece model of the synthetic corpus (`qwen_audio_jax/assets/
synthetic_spm.model`: Qwen-Audio's 3,522 specials, 256 byte pieces and the corpus words; 4,038 ids)
instead of the 155,947-row Qwen-Audio vocabulary, whose lm_head would be most of every step's work on
a CPU; the prompts are the same hierarchical tags.
"""

from qwen_audio_jax.assets import SYNTHETIC_VOCAB
from qwen_audio_jax.tokenizer import get_tokenizer
from qwen_audio_jax.train import defaults

STEPS = 2000


WIDTH = 64  # decoder and encoder width; 2 layers each, 4 heads


def model_overrides(vocab_path: str = str(SYNTHETIC_VOCAB)) -> dict:
  """Vocabulary size and audio/pad ids of the tokenizer (the model must read what the data writes)."""
  tok = get_tokenizer("qwen-audio", vocab_path)
  return dict(audio_start_id=tok.audio_start_id, audio_end_id=tok.audio_end_id, audio_pad_id=tok.audio_pad_id,
              pad_id=tok.pad_id, decoder=dict(vocab_size=tok.vocab_size, d_model=WIDTH, n_layers=2, n_heads=4,
                                               n_kv_heads=4, head_dim=WIDTH // 4, mlp_dim=160),
              encoder=dict(d_model=WIDTH, n_heads=4, n_layers=2, mlp_dim=4 * WIDTH))


# Task mixture: word timings (srwt), digit sequences (asr) and notes (mna) need the most steps; noise colours
# the fewest.
WEIGHTS = {"asr": 4.0, "srwt": 6.0, "mna": 4.0, "asc": 1.0, "aqa": 2.0, "aac": 2.0}


def get_config(arg=None):
  c = defaults.base_config()
  c.model = defaults.model_block("tiny-qwen-audio", **model_overrides())
  c.data.vocab_path = str(SYNTHETIC_VOCAB)
  c.data.seq_buckets = (48, 80)
  c.data.sources = [dict(name="synthetic", weight=w, split="train", size=100000, tasks=[t])
                    for t, w in WEIGHTS.items()]
  c.train.total_steps = int(arg) if arg else STEPS
  c.train.batch_size = 16
  c.train.mel_frames = 200  # synthetic clips are <= 1.9 s (190 frames); longer ones raise
  # No SpecAugment: a masked band or stretch of frames can erase a DTMF component, a beep or a note's
  # partials, i.e. change the right answer (the corpus varies timing, gain, phase and noise instead).
  c.train.specaugment.enabled = False
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.01
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 1
  c.checkpoint.best_keep = 1
  c.eval.every_steps = 400
  c.eval.batches = 2
  c.eval.sweep = "configs/eval/tiny_synthetic.py:validation"  # decode + score while training ...
  c.eval.sweep_limit = 32  # validation clips per task
  c.eval.best_metric = "generate/mean_score"  # ... and keep the best by the recipes' figures
  c.eval.best_mode = "max"
  c.log.every_steps = 50
  return c
