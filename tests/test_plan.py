"""`python -m qwen_audio_jax.plan`: topology names, the remat x micro-batch search, and end-to-end plans of
the tiny config on simulated CPU devices (a real compile of the real train step; libtpu not needed)."""

import json
import os
import subprocess
import sys

import pytest

from qwen_audio_jax.plan import analyse, search, topology
from qwen_audio_jax.train import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


@pytest.mark.parametrize("name,chips,shape,hbm,kind", [
    ("v5p-64", 32, (2, 4, 4), 95, "TPU v5"), ("v4-32", 16, (2, 2, 4), 32, "TPU v4"),
    ("v6e-64", 64, (8, 8), 32, "TPU v6 lite"), ("v5e-16", 16, (4, 4), 16, "TPU v5 lite"),
    ("v5litepod-16", 16, (4, 4), 16, "TPU v5 lite"), ("v5p-128", 64, (4, 4, 4), 95, "TPU v5")])
def test_topology_names(name, chips, shape, hbm, kind):
  sl = topology.parse(name)
  assert (sl.chips, sl.shape, sl.hbm_bytes, sl.generation.device_kind) == (chips, shape, hbm * GIB, kind)
  assert topology.parse(name, num_slices=3).chips == 3 * chips


def test_topology_libtpu_names_and_wrap():
  assert topology.parse("v5p-64").libtpu_topology == "v5:2x4x4" and topology.parse("v5p-64").wrap == (False,) * 3
  assert topology.parse("v5p-128").wrap == (True,) * 3  # a whole 4x4x4 cube is a torus
  assert topology.parse("v6e-128").wrap == (False, True, False)
  assert topology.parse("v6e-256").wrap == (True, True, False)
  assert topology.parse("v4-32").generation.chip_config == "megacore_dense"


@pytest.mark.parametrize("bad", ["v9-8", "v5p-63", "v5p-96", "v6e-48", "tpu", "v5e-16x2"])
def test_topology_bad_names(bad):
  with pytest.raises(topology.TopologyError, match="--topology"):
    topology.parse(bad)


def test_cpu_mesh_shape_covers_slices():
  sl = topology.parse("v5e-16", num_slices=2)
  assert topology.slice_mesh_shape((1, -1, 1), (-1, 1, 1), sl) == (2, 16, 1)
  assert topology.slice_mesh_shape((1, 8, 2), (2, 1, 1), sl) == (2, 8, 2)
  with pytest.raises(topology.TopologyError):
    topology.slice_mesh_shape((1, 3, -1), (1, 1, 1), topology.parse("v5e-16"))


def test_single_tpu_slice_is_one_dcn_unit():
  """dcn=-1 on one multi-host TPU slice must not turn its hosts into data-parallel groups (they share ICI)."""
  from types import SimpleNamespace
  from qwen_audio_jax.sharding import mesh as mesh_lib
  tpu = [SimpleNamespace(platform="tpu", slice_index=0, process_index=i // 4) for i in range(32)]
  assert mesh_lib._granules(tpu) == ("slice_index", 1)  # pylint: disable=protected-access
  two = [SimpleNamespace(platform="tpu", slice_index=i // 16, process_index=i // 4) for i in range(32)]
  assert mesh_lib._granules(two) == ("slice_index", 2)  # pylint: disable=protected-access
  cpu = [SimpleNamespace(platform="cpu", process_index=i // 2) for i in range(4)]
  assert mesh_lib._granules(cpu) == ("process_index", 2)  # pylint: disable=protected-access


def test_oom_message_parsed():
  msg = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
         "Used 21.95G of 15.48G hbm. Exceeded hbm capacity by 6.47G.")
  assert analyse.oom_usage(msg) == {"oom_needed": int(21.95 * GIB), "oom_available": int(15.48 * GIB)}
  msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (64.07G) "
         "exceeds available HBM (31.75G).")
  assert analyse.oom_usage(msg) == {"oom_needed": int(64.07 * GIB), "oom_available": int(31.75 * GIB)}
  assert analyse.oom_usage("RESOURCE_EXHAUSTED: something else") == {}


def test_remat_policies_follow_model_config_cheapest_first():
  assert search.remat_policies() == ("none", "minimal", "save_dot_except_mlpwi", "save_dot_except_mlp",
                                     "save_qkv_proj", "save_out_proj", "dots", "full")


def test_accum_options_keep_micro_batches_split_evenly():
  assert search.accum_options(512, 32) == [1, 2, 4, 8, 16]
  assert search.accum_options(48, 8) == [1, 2, 3, 6]


def test_search_bisects_to_the_fewest_micro_batches_of_the_cheapest_fitting_policy():
  # memory falls with accum; "none" never fits, "minimal" fits from accum 4 on, "full" from 2 on
  need = {"none": 1000, "minimal": 40, "full": 25}
  calls = []

  def try_one(remat, accum):
    calls.append((remat, accum))
    total = need[remat] / accum * 4
    return {"fits": total <= 50, "memory": {"total": total}}

  best, trials = search.search(try_one, ("none", "minimal", "full"), [1, 2, 4, 8, 16], log=lambda m: None)
  assert (best["remat"], best["grad_accum_steps"]) == ("minimal", 4)
  assert calls[0] == ("none", 16) and ("full", 16) not in calls  # cheapest first; stop at the first policy
  assert len(trials) == len(calls) <= 1 + 1 + 3


def test_hardware_flops_count_recompute():
  from qwen_audio_jax.model import config as model_config
  mcfg = model_config.get_config("qwen-audio-7b")
  shape = dict(tower_multipliers=[3, 2], tokens=4096, seq_len=2048, audio_rows=2, mel_frames=3000)
  none, minimal, full = (search.hardware_flops(mcfg, shape, r) for r in ("none", "minimal", "full"))
  assert none == metrics.step_flops(mcfg, 4096, 2048, 2, 3000, (3, 2))
  fwd = 4096 * metrics.decoder_flops_per_token(mcfg, 2048) + 2 * metrics.encoder_flops_per_clip(mcfg, 3000)
  assert full == pytest.approx(none + fwd, rel=1e-12)
  assert none < minimal < none + 0.25 * (full - none)  # minimal recomputes attention only


# ---- end to end: the CLI on the tiny config, simulated CPU devices ----

def _plan(tmp_path, name, *extra, config="configs/tiny_synthetic.py", topo="v5e-4"):
  out = tmp_path / f"{name}.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  proc = subprocess.run([sys.executable, "-m", "qwen_audio_jax.plan", f"--config={config}", f"--topology={topo}",
                         "--backend=cpu", f"--json={out}", *extra], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=1500)  # several compiles; generous for a loaded 2-core machine
  result = json.loads(out.read_text()) if out.exists() else None
  return proc, result


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
  return _plan(tmp_path_factory.mktemp("plan"), "tiny", "--steps=train,prefill", "--gen_new_tokens=32")


def test_tiny_plan_fits_and_reports_memory_flops_and_time(tiny_plan):
  proc, r = tiny_plan
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "SIMULATED on 4 CPU devices" in proc.stdout and "FITS" in proc.stdout
  assert r["target"]["backend"] == "cpu-simulated" and r["target"]["chips"] == 4
  assert r["target"]["hbm_bytes"] == 16 * GIB and r["target"]["peak_flops"] == 197e12
  assert r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  t = r["steps"]["train"]
  m = t["memory"]
  assert m["total"] == m["argument"] + m["output"] - m["alias"] + m["temp"] + m["code"]
  assert m["alias"] > 0  # the state is donated: its outputs reuse the argument buffers
  assert 0 < m["total"] < 16 * GIB and t["fits"]
  # tiny_synthetic: its batch, longest bucket, one mel window per row, both towers trained
  from configs import tiny_synthetic  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.train import model_fns  # pylint: disable=import-outside-toplevel
  cfg = tiny_synthetic.get_config()
  batch, seq, frames = cfg.train.batch_size, max(cfg.data.seq_buckets), cfg.train.mel_frames
  assert (t["batch"], t["seq_len"], t["audio_rows"], t["mel_frames"], t["remat"]) == (batch, seq, batch, frames, "none")
  mcfg = model_fns.resolve_model_config(cfg.model)
  flops = metrics.step_flops(mcfg, batch * seq, seq, batch, frames, (3, 3))
  assert t["model_flops"] == pytest.approx(flops, rel=1e-12)
  assert t["step_time_s"] == pytest.approx(flops / (4 * 197e12 * 0.4), rel=1e-12)
  p = r["steps"]["prefill"]
  assert (p["batch"], p["seq_len"], p["cache_len"]) == (4, seq, seq + 32) and p["fits"] and p["memory"]["total"] > 0


def test_too_small_hbm_is_reported_with_a_suggestion_that_fits(tmp_path, tiny_plan):
  first = tiny_plan[1]["steps"]["train"]["memory"]["total"]
  hbm = (first - 1) / GIB  # the config as it is no longer fits, a second micro-batch does
  proc, r = _plan(tmp_path, "tight", f"--hbm_gib={hbm!r}")
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "DOES NOT FIT" in proc.stdout and "SUGGESTION:" in proc.stdout
  best = r["search"]["best"]
  assert best["fits"] and best["memory"]["total"] <= r["target"]["hbm_bytes"] < first
  assert (best["remat"], best["grad_accum_steps"]) == ("none", 2)
  assert f"--config.train.grad_accum_steps=2" in proc.stdout


def test_nothing_fits_says_so(tmp_path):
  proc, r = _plan(tmp_path, "none", "--hbm_gib=0.0001")
  assert proc.returncode == 3 and r["search"]["best"] is None
  assert "no remat policy / grad_accum_steps fits" in proc.stdout
  from configs import tiny_synthetic  # pylint: disable=import-outside-toplevel
  most = search.accum_options(tiny_synthetic.get_config().train.batch_size, 4)[-1]  # 4 simulated chips
  assert {(t["remat"], t["grad_accum_steps"]) for t in r["search"]["trials"]} == {
      (policy, most) for policy in search.remat_policies()}


@pytest.mark.parametrize("args,needle", [
    (["--topology=v9-8"], "--topology='v9-8'"),
    (["--topology=v5e-32"], "train.batch_size=16 is not divisible by the mesh's data x fsdp = 32"),
    (["--topology=v5e-4", "--mfu=1.5"], "--mfu=1.5")])
def test_bad_input_one_line_exit_2(tmp_path, args, needle):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = tmp_path / "bad.json"
  proc = subprocess.run([sys.executable, "-m", "qwen_audio_jax.plan", "--config=configs/tiny_synthetic.py",
                         "--backend=cpu", f"--json={out}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("plan:")]
  assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
  assert not out.exists()
