"""TFDS builders (array_record, no tensorflow needed) for the synthetic set and the manual corpora.

Each builder stores records (see `records.py`) with the audio embedded as the original file bytes, so
decoding/resampling happen later in grain workers. Verified with tensorflow-datasets 4.9.10 and no
tensorflow installed: `GeneratorBasedBuilder.download_and_prepare(file_format="array_record")` and
`as_data_source(split)` both work; only `tfds.features.Audio` imports tensorflow (its decoder calls
`tf.dtypes.as_dtype`), which is why audio is a bytes `Tensor` feature here. TFDS 4.9.10 also imports
the `importlib_resources` backport (not installed on Python >= 3.9) when locating a builder's code
for URL checksums; these builders download nothing, so `code_path = None` skips that lookup.

Manual corpora prepare every split whose folder exists in the manual dir (at least one must). Builder
names carry a `qaj_` prefix so they never collide with TFDS's own `librispeech`, `clotho`, ... builders.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from qwen_audio_jax.data import synthetic
from qwen_audio_jax.data.corpora import CORPORA
from qwen_audio_jax.data.records import TEXT_FIELDS, ManualDirError, check_record


def _features() -> tfds.features.FeaturesDict:
  spec = {key: tfds.features.Text() for key in TEXT_FIELDS}
  spec["audio"] = tfds.features.Tensor(shape=(), dtype=np.object_)  # encoded audio file bytes
  return tfds.features.FeaturesDict(spec)


def _with_audio_bytes(record: dict) -> dict:
  audio = record["audio"]
  if isinstance(audio, str):
    audio = pathlib.Path(audio).read_bytes()
  return {**record, "audio": audio}


def _split_key(split: str) -> str:
  return split.replace("-", "_")  # TFDS split names: "dev-clean" is stored as "dev_clean"


class _CorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builder of one manual corpus; subclasses set CORPUS (a key of `corpora.CORPORA`)."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # no URL checksums to look up (see module docstring)
  CORPUS = ""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the corpus under the manual dir in its published layout."

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=_features(), description=self.CORPUS)

  def _split_generators(self, dl_manager):
    module = CORPORA[self.CORPUS]
    splits = {}
    for split in module.SPLITS:
      try:
        splits[_split_key(split)] = module.scan(dl_manager.manual_dir, split)
      except ManualDirError:
        continue  # a split that is not on disk is simply not prepared
    if not splits:
      module.scan(dl_manager.manual_dir, module.SPLITS[0])  # raises the one-line layout error
    return {name: self._generate_examples(records) for name, records in splits.items()}

  def _generate_examples(self, records):
    for record in records:
      yield f"{record['source']}/{record['id']}", _with_audio_bytes(record)


class QajLibrispeech(_CorpusBuilder):
  CORPUS = "librispeech"


class QajAishell1(_CorpusBuilder):
  CORPUS = "aishell1"


class QajClotho(_CorpusBuilder):
  CORPUS = "clotho"


class QajCochlscene(_CorpusBuilder):
  CORPUS = "cochlscene"


class QajVocalsound(_CorpusBuilder):
  CORPUS = "vocalsound"


class QajMeld(_CorpusBuilder):
  CORPUS = "meld"


class QajSynthetic(tfds.core.GeneratorBasedBuilder):
  """The synthetic multi-task set materialised: `SIZES[split]` records per task, seed 0."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None
  SIZES = {"train": 2000, "validation": 100, "test": 200}
  SEED = 0

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=_features(), description="synthetic")

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, size) for split, size in self.SIZES.items()}

  def _generate_examples(self, split: str, size: int):
    for task in synthetic.TASKS:
      for index in range(size):
        record = synthetic.generate(task, index, split=split, seed=self.SEED)
        yield f"{task}/{index}", record


BUILDERS = {"librispeech": QajLibrispeech, "aishell1": QajAishell1, "clotho": QajClotho,
            "cochlscene": QajCochlscene, "vocalsound": QajVocalsound, "meld": QajMeld,
            "synthetic": QajSynthetic}


def prepare(name: str, data_dir, manual_dir=None) -> tfds.core.DatasetBuilder:
  """Prepares dataset `name` as array_record under `data_dir` (reads `manual_dir` for corpora)."""
  if name not in BUILDERS:
    raise KeyError(f"unknown TFDS dataset {name!r}; known: {', '.join(BUILDERS)}")
  builder = BUILDERS[name](data_dir=str(data_dir), file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=None if manual_dir is None else str(manual_dir))
  builder.download_and_prepare(download_config=config)
  return builder


class TfdsRecords:
  """Random-access records of a prepared split (text fields decoded from bytes to str)."""

  def __init__(self, name: str, split: str, data_dir):
    if name not in BUILDERS:
      raise KeyError(f"unknown TFDS dataset {name!r}; known: {', '.join(BUILDERS)}")
    builder = BUILDERS[name](data_dir=str(data_dir), file_format="array_record")
    if not builder.is_prepared():
      raise ManualDirError(f"{name}: no prepared TFDS data under {data_dir}/{builder.name}; run "
                           f"`python -m qwen_audio_jax.data.prepare {name} --data_dir {data_dir} "
                           "--manual_dir <dir>` first")
    key = _split_key(split)
    if key not in builder.info.splits:
      raise KeyError(f"{name}: split {split!r} was not prepared; prepared: "
                     f"{', '.join(sorted(builder.info.splits))}")
    self.name, self.split = name, split
    self._source = builder.as_data_source(split=key)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    return check_record(self._source[index])

  def __repr__(self) -> str:
    return f"TfdsRecords({self.name!r}, {self.split!r}, n={len(self)})"
