"""Every config mistake: one `error:` line on stderr, exit 2, nothing written, before any compile.

Table-driven over the real CLI (`python -m qwen_audio_jax.train`), starting from a shipped 7B config
made tiny on the command line, with a small manifest of wav clips.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import jax
import pytest

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.model import params as params_lib
from qwen_audio_jax.train import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT = "configs/qwen_audio_7b_sft.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad_config")
  paths = testing.write_user_manifests(str(root))
  broken = root / "broken.jsonl"
  lines = open(paths["train"]).read().splitlines()
  broken.write_text(lines[0] + "\n" + lines[1][:-5] + "\n")  # line 2 cut short
  rejected = root / "rejected.jsonl"  # every record points at a clip that is not there
  rejected.write_text("".join(json.dumps({**json.loads(x), "audio": f"gone/{i}.wav"}) + "\n"
                              for i, x in enumerate(lines)))
  other = model_config.get_config("tiny-qwen-audio")
  other = other.replace(decoder=other.decoder.__class__(**{**model_config.to_dict(other)["decoder"], "n_layers": 1,
                                                           "vocab_size": 4096}),
                        audio_start_id=4000, audio_end_id=4001, audio_pad_id=4002, pad_id=4003)
  other_model = str(root / "other_model")
  checkpoint_io.save_model_checkpoint(other_model, other, params_lib.init_params(other, jax.random.PRNGKey(0)))
  return {**paths, "broken": str(broken), "rejected": str(rejected), "other_model": other_model, "root": str(root)}


def base_flags(f: dict) -> list[str]:
  return ["--config.model.preset=tiny-qwen-audio", "--config.train.batch_size=2",
          "--config.train.allow_random_init=true",
          f"--config.data.train_manifest={f['train']}", f"--config.data.eval_manifest={f['dev']}",
          "--config.data.num_workers=0", "--config.eval.batch_size=2", "--config.eval.batches=1",
          "--config.train.mel_frames=400"]


CASES = {  # name: (flags replacing/adding to the base, text the one line must contain)
    "unknown key": (["--config.train.num_steps=3"], "nearest: train.grad_accum_steps, train.total_steps"),
    "missing config file": (["--config=configs/qwen_audio_7b_sfft.py"], "no such file"),
    "bad enum": (["--config.data.long_audio=foo"], "long_audio='foo'; use one of"),
    "bad model field": (["--config.model.dtype=bf16"], "model.dtype='bf16'; use one of float32"),
    "unparsable value": (["--config.train.total_steps=ten"], "--config.train.total_steps=ten"),
    "unknown preset": (["--config.model.preset=tiny-qwen-audoi"], "known: qwen-7b, qwen-audio-7b"),
    "list field from the command line": (["--config.data.sources.0.name=jsonl"], "data.sources is a list"),
    "mesh does not fit the devices": (["--config.mesh.ici=(2,1,1)"], "mesh.ici=(2, 1, 1)"),
    "batch vs accumulation": (["--config.train.batch_size=3", "--config.train.grad_accum_steps=2"],
                              "train.batch_size=3 is not divisible by train.grad_accum_steps=2"),
    "batch vs mesh": (["--config.distributed.cpu_devices=2", "--config.train.batch_size=3"],
                      "does not split over mesh data x fsdp = 2 devices"),
    "missing init checkpoint": (["--config.train.init_params_dir=/no/such/ckpt"],
                                "train.init_params_dir: /no/such/ckpt: no such checkpoint directory"),
    "init of another shape": (["--config.train.init_params_dir={other_model}"],
                              "decoder/embed/embedding has shape [4096, 64], config says [156672, 64]"),
    "fine-tuning random weights": (["--config.train.allow_random_init=false"], "allow_random_init=true"),
    "missing manifest": (["--config.data.train_manifest=/no/such.jsonl"], "/no/such.jsonl: manifest file not found"),
    "broken manifest line": (["--config.data.train_manifest={broken}"], "broken.jsonl:2: invalid JSON"),
    "weights vs manifests": (["--config.data.train_weights=0.5,0.5"], "train_weights has 2 value(s)"),
    "no eval data": (["--config.data.eval_manifest="], "no evaluation data"),
    "every example rejected": (["--config.data.train_manifest={rejected}"],
                               "all 2 examples of the first batch were rejected; last: "),
}


def _run(flags: list[str], workdir: str) -> tuple[subprocess.CompletedProcess, float]:
  config = [a for a in flags if a.startswith("--config=")] or [f"--config={SFT}"]
  cmd = [sys.executable, "-m", "qwen_audio_jax.train", config[-1], f"--workdir={workdir}",
         *[a for a in flags if not a.startswith("--config=")]]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  t0 = time.time()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  except subprocess.TimeoutExpired:
    pytest.fail(f"still running after 120 s (a mistake must stop before training): {' '.join(flags)}")
  return proc, time.time() - t0


@pytest.mark.parametrize("name", list(CASES))
def test_config_mistake_is_one_line_exit_2_nothing_written(files, name):
  extra, expected = CASES[name]
  workdir = os.path.join(files["root"], "w-" + name.replace(" ", "_"))
  overridden = {a.split("=", 1)[0] for a in extra}
  flags = [a for a in base_flags(files) if a.split("=", 1)[0] not in overridden] + [a.format(**files) for a in extra]
  proc, seconds = _run(flags, workdir)
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
  assert expected in lines[0], lines[0]
  assert "compiled" not in proc.stdout
  assert not os.path.exists(workdir)
  assert seconds < 30, f"{name}: {seconds:.1f} s"


def test_print_config_lists_every_field_and_writes_nothing(files):
  workdir = os.path.join(files["root"], "w-print")
  proc, _ = _run(["--config.model.decoder.n_layers=3", "--print_config"], workdir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for field in ("train_manifest:", "eval_manifest:", "corpus:", "allow_random_init:", "fork_from:", "n_layers: 3"):
    assert field in proc.stdout, field
  assert "'n_layers': 3" in proc.stdout and "'vocab_size': 155947" in proc.stdout  # resolved model (qwen-audio-7b)
  assert not os.path.exists(workdir)
  helped = subprocess.run([sys.executable, "-m", "qwen_audio_jax.train", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert "--print_config" in helped.stdout + helped.stderr


def test_a_workdir_without_checkpoints_may_take_another_model(files, tmp_path):
  """config.json alone describes no checkpoint, so a failed first attempt does not lock the workdir."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"model": {"family": "qwen-audio"}, "config": {}}))
  from qwen_audio_jax.train import preflight  # pylint: disable=import-outside-toplevel
  assert preflight.check_resume(str(workdir), {"model": {"family": "other"}}, "") == (False, {})
  shutil.rmtree(workdir)
