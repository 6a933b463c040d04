"""Conversion memory: a staging memmap's written pages leave the process's RSS and its data survives."""

import numpy as np

from qwen_audio_jax import checkpoint_io


def rss_file_mb() -> float:
  with open("/proc/self/status") as f:
    fields = dict(line.split(":", 1) for line in f)
  return (int(fields["RssFile"].split()[0]) + int(fields["RssShmem"].split()[0])) / 1024


def test_release_pages_drops_rss_and_keeps_data(tmp_path):
  arr = np.memmap(tmp_path / "staging.bin", dtype=np.float32, mode="w+", shape=(64, 1 << 18))  # 64 MiB
  values = np.random.default_rng(0).normal(size=arr.shape[1]).astype(np.float32)
  for i in range(arr.shape[0]):
    arr[i] = values + i
  before = rss_file_mb()
  checkpoint_io.release_pages(arr)
  after = rss_file_mb()
  print(f"file-backed RSS {before:.0f} MiB -> {after:.0f} MiB")
  assert before - after >= 60
  np.testing.assert_array_equal(arr[37], values + 37)  # read back through the mapping
  np.testing.assert_array_equal(np.fromfile(tmp_path / "staging.bin", np.float32).reshape(arr.shape)[63], values + 63)
  checkpoint_io.release_pages(np.zeros(3))  # plain arrays: nothing to do
