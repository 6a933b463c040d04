"""The built-in synthetic tasks scored with the real recipes (what `make run` prints).

  python -m qwen_audio_jax.evaluate --config=configs/eval/tiny_synthetic.py --workdir=sweeps/tiny \
      --config.checkpoints=tiny=workdir/quickstart-...@best

Arg: the split (default "test"; training uses "validation" to choose best/), e.g. `tiny_synthetic.py:validation`.
`--config.limit=N` caps the samples per task. Chance levels: `qwen_audio_jax.data.synthetic.CHANCE`.
Decoding is greedy with a 32-token budget for every task (the longest synthetic answer, SRWT with four
digits, is 19 tokens of the compact vocabulary) instead of each eval script's budget (256 for ASR and
SRWT), so that all six tasks share one compiled decode program per batch shape.
"""

from qwen_audio_jax.eval import sweep_config

SIZE = 200  # test samples per task
MAX_NEW_TOKENS = 32


def datasets(split: str = "test", size: int = SIZE) -> list[dict]:
  def ds(task, recipe, **fields):
    return dict(name=f"synthetic_{task}", task=task, recipe=recipe, fields=fields, reference={},
                source=dict(name="synthetic", split=split, tasks=[task], size=size))
  return [ds("asr", "asr_wer@qwen-audio-v1", lang="en"), ds("srwt", "srwt_aas@qwen-audio-v1", lang="en"),
          ds("asc", "cls_acc@qwen-audio-v1"), ds("aqa", "aqa_acc@qwen-audio-v1"), ds("mna", "mna@qwen-audio-v1"),
          ds("aac", "aac_cider@qwen-audio-v1")]


def get_config(arg=None):
  c = sweep_config.base_config()
  c.datasets = datasets(arg or "test")
  c.decode.batch_size = 16
  c.decode.max_new_tokens = MAX_NEW_TOKENS
  return c
