"""Qwen-Audio's Table 2 suite (spec §7): every benchmark of the paper, read from local manifests in
Qwen-Audio's eval format ({"audio", "prompt", "gt", "source"}, as its eval_audio/*.jsonl files), with
the paper's reported numbers beside ours. Give the checkpoints and the manifests you have; datasets
without a path are skipped with a notice:

  python -m qwen_audio_jax.evaluate --config=configs/eval/qwen_audio_paper.py --workdir=sweeps/paper \
      --config.checkpoints=qwen-audio=ckpt/qwen-audio \
      --config.data_root=/data/qwen_audio_eval \
      --config.paths.librispeech_test_clean=librispeech_test_clean.jsonl \
      --config.paths.aishell1_test=aishell1_test.jsonl ...

Reference numbers are in the recipes' units: WER as a fraction, BLEU 0-100, accuracies as fractions,
AAS in seconds. Decoding as the official scripts: greedy, each task's max_new_tokens, batch invariant
here (spec §9 item 2). The official scripts silently cut audio at 30 s; this config does the same
explicitly (long_audio="truncate", recorded per sample).
"""

from qwen_audio_jax.eval import sweep_config


def _ds(name, task, recipe, reference, **fields):
  return dict(name=name, task=task, recipe=recipe, reference=reference, fields=fields,
              source=dict(name="eval_jsonl", path_key=name))


def get_config(arg=None):
  del arg
  c = sweep_config.base_config()
  c.long_audio = "truncate"
  wer, bleu = "asr_wer@qwen-audio-v1", "s2tt_bleu@qwen-audio-v1"
  datasets = [
      _ds("librispeech_dev_clean", "asr", wer, {"wer": 0.018}, lang="en"),
      _ds("librispeech_dev_other", "asr", wer, {"wer": 0.040}, lang="en"),
      _ds("librispeech_test_clean", "asr", wer, {"wer": 0.020}, lang="en"),
      _ds("librispeech_test_other", "asr", wer, {"wer": 0.042}, lang="en"),
      _ds("aishell1_dev", "asr", wer, {"wer": 0.012}, lang="zh"),
      _ds("aishell1_test", "asr", wer, {"wer": 0.013}, lang="zh"),
      _ds("aishell2_test_mic", "asr", wer, {"wer": 0.033}, lang="zh"),
      _ds("aishell2_test_ios", "asr", wer, {"wer": 0.031}, lang="zh"),
      _ds("aishell2_test_android", "asr", wer, {"wer": 0.033}, lang="zh"),
  ]
  for pair, score in (("en_de", 25.1), ("de_en", 33.9), ("en_zh", 41.5), ("zh_en", 15.7), ("es_en", 39.7),
                      ("fr_en", 38.5), ("it_en", 36.0)):
    datasets.append(_ds(f"covost2_{pair}", "s2tt", bleu, {"bleu": score}, tgt_lang=pair.split("_")[1]))
  datasets += [
      _ds("clotho_test", "aac", "aac_cider@qwen-audio-v1", {"CIDEr": 0.441}),
      _ds("cochlscene_test", "asc", "cls_acc@qwen-audio-v1", {"acc": 0.795}),
      _ds("tut2017_eval", "asc", "cls_acc@qwen-audio-v1", {"acc": 0.649}),
      _ds("meld_test", "ser", "cls_acc@qwen-audio-v1", {"acc": 0.557}),
      _ds("clothoaqa_test", "aqa", "aqa_acc@qwen-audio-v1", {"acc": 0.579, "binary_acc": 0.749}),
      _ds("vocalsound_test", "vsc", "cls_acc@qwen-audio-v1", {"acc": 0.9289}),
      _ds("nsynth_test", "mna", "mna@qwen-audio-v1", {"instrument_acc": 0.7882, "qualities_map": 0.4742}),
      _ds("industrial_srwt_test", "srwt", "srwt_aas@qwen-audio-v1", {"aas": 0.0515}, lang="zh"),
  ]
  c.datasets = datasets
  for d in datasets:
    c.paths[d["name"]] = ""
  return c
