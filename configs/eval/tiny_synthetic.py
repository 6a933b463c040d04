"""The built-in synthetic tasks' test split, scored with the real recipes (what `make run` prints).

  python -m qwen_audio_jax.evaluate --config=configs/eval/tiny_synthetic.py --workdir=sweeps/tiny \
      --config.checkpoints=tiny=workdir/quickstart-.../best

Arg: the split (default "test"; training uses "validation" for choosing best/), e.g. `tiny_synthetic.py:validation`.
`--config.limit=N` caps the samples per task. Chance levels are stated in qwen_audio_jax/data/synthetic.py.
"""

from qwen_audio_jax.eval import sweep_config

SIZE = 200  # test samples per task


def datasets(split: str = "test", size: int = SIZE) -> list[dict]:
  def ds(task, recipe, **fields):
    return dict(name=f"synthetic_{task}", task=task, recipe=recipe, fields=fields, reference={},
                source=dict(name="synthetic", split=split, tasks=[task], size=size))
  return [ds("asr", "asr_wer@qwen-audio-v1", lang="en"), ds("asc", "cls_acc@qwen-audio-v1"),
          ds("aqa", "aqa_acc@qwen-audio-v1"), ds("mna", "mna@qwen-audio-v1"),
          ds("aac", "aac_cider@qwen-audio-v1")]


def get_config(arg=None):
  c = sweep_config.base_config()
  c.datasets = datasets(arg or "test")
  c.decode.batch_size = 16
  return c
