"""Training and eval data: sources, grain pipeline, deterministic process-count-independent resume.

Train:
  it = make_train_iterator(data_config, global_batch_size=G, seed=0)   # this process's rows
  batch = next(it)        # numpy dict, see below
  state = it.get_state()  # JSON; it.set_state(state) resumes exactly, on any process count
  it.metrics()            # tried / bad / empty / truncated counters, last bad example and cause
Batch (per process, B = G / process_count, S = a bucket of data_config.seq_buckets, A = max_audios):
  input_ids [B,S] int32, attention_mask [B,S] int32 (right padded), targets [B,S] int32
  (= input_ids shifted left by one), loss_mask [B,S] int32 (1 only where targets is an answer token
  or the final eod), audio_mel [B*A, n_mels, 3000] float32, audio_lengths [B*A] int32 (encoder frames
  T; 0 = no audio), example_mask [B] int32, audio_seconds [B] float32, num_tokens [B] int32,
  task_index [B] int32 (position in records.TASKS, -1 for conversations and other tasks).
Eval:
  records = make_eval_examples({"name": "eval_jsonl", "path": "librispeech_test_clean.jsonl"})
  for batch, rows in make_eval_batches(records, data_config, batch_size=8): ...   # left padded
`data_config` fields: see `qwen_audio_jax.data.config` (`default_config()` = built-in synthetic set).
"""

from qwen_audio_jax.data.batching import collate_eval, collate_train, pad_batch_to, pick_bucket
from qwen_audio_jax.data.config import DataConfigError, as_config, default_config
from qwen_audio_jax.data.eval import EvalRow, make_eval_batches, make_eval_examples, num_eval_batches
from qwen_audio_jax.data.examples import Encoded, ExampleEncoder
from qwen_audio_jax.data.manifests import ManifestError, infer_task, read_eval_jsonl, read_task_jsonl
from qwen_audio_jax.data.pipeline import DataQualityError, TrainIterator, make_train_iterator
from qwen_audio_jax.data.records import ManualDirError, RecordError, make_record
from qwen_audio_jax.data.synthetic import SyntheticSource

__all__ = [
    "DataConfigError",
    "DataQualityError",
    "Encoded",
    "EvalRow",
    "ExampleEncoder",
    "ManifestError",
    "ManualDirError",
    "RecordError",
    "SyntheticSource",
    "TrainIterator",
    "as_config",
    "collate_eval",
    "collate_train",
    "default_config",
    "infer_task",
    "make_eval_batches",
    "make_eval_examples",
    "make_record",
    "make_train_iterator",
    "num_eval_batches",
    "pad_batch_to",
    "pick_bucket",
    "read_eval_jsonl",
    "read_task_jsonl",
]
