"""bench/run.py --quick executes every CPU row (no timed assertions); rows are selected by backend; the GPU
rows' step code runs (on CPU, at tiny widths)."""

import json
import os
import subprocess
import sys

import pytest

from bench import gpu_rows, rows, run, train_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rows_are_selected_by_backend():
  registry = rows.load()
  assert {"P1", "P2", "P3", "P4", "P5", "P6", "P7", "G1", "G2"} <= set(registry)
  cpu, skipped = rows.select(registry, "cpu")
  assert [r.id for r in cpu] == ["P1", "P2", "P3", "P4", "P5", "P6", "P7"]
  assert skipped == {"G1": "needs a GPU backend (this run: cpu)", "G2": "needs a GPU backend (this run: cpu)"}
  gpu, skipped = rows.select(registry, "gpu")
  assert [r.id for r in gpu] == ["P5", "P6", "P7", "G1", "G2"] and set(skipped) == {"P1", "P2", "P3", "P4"}
  assert [r.id for r in rows.select(registry, "cpu", ("P5",))[0]] == ["P5"]
  with pytest.raises(KeyError, match="unknown row"):
    rows.select(registry, "cpu", ("P9",))


def test_gpu_row_step_runs_at_tiny_widths():
  """The G rows' code path (config from a run config, device_step) on CPU with the tiny model."""
  assert gpu_rows.stage1_model().decoder_param_dtype == "bfloat16"
  assert gpu_rows.full_finetune_8x8().decoder.n_layers == 8
  r = gpu_rows.device_step(train_setup.tiny_config(), "stage1", dict(batch_size=2, seq_len=64, mel_frames=192),
                           repeats=1)
  assert r["step_s"] > 0 and 0 < r["mfu"] and r["peak_source"].startswith("measured")


def test_quick_run_executes(tmp_path):
  out = tmp_path / "report.json"
  proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", f"--json={out}",
                         f"--results={tmp_path / 'RESULTS.md'}"], cwd=REPO, capture_output=True, text=True,
                        timeout=1500, env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads(out.read_text())
  cpu_rows = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")
  assert [(r["id"], r["status"]) for r in report["rows"]] == [(i, "ok") for i in cpu_rows]
  assert set(report["skipped"]) == {"G1", "G2"}
  text = (tmp_path / "RESULTS.md").read_text()
  assert "## Machine" in text and "| P3 |" in text and "| P7 |" in text and "| G1 | skipped |" in text
  assert run.threads() == report["machine"]["threads"]


def test_unknown_row_is_one_line_exit_2():
  proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--rows=P1,P9"], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "unknown row" in proc.stderr


def test_encoder_adaptation_reads_budgets_and_router_lines_and_refuses_unknown_stages(capsys):
  from bench import encoder_adaptation as ea  # pylint: disable=import-outside-toplevel
  log = ("mesh data=1 fsdp=1 tensor=1; trainable params 4,160, frozen 835,648, LoRA: 4 adapted modules, "
         "4,096 adapter params\nstep 150/150 | loss 1.0 | mowe_aux 1.000 usage 0.56/0.44\n"
         "  mowe usage by task: asr 0.69/0.31\n")
  assert ea.trained_params(log) == "4,160 + LoRA 4,096"
  assert ea.trained_params("trainable params 131,904, frozen 707,904") == "131,904"
  assert ea.last_usage(log) == "1.000 usage 0.56/0.44"
  with pytest.raises(SystemExit) as e:
    ea.main(["--out=/nonexistent/x", "--stages=base,mowee"])
  assert e.value.code == 2 and "--stages: unknown ['mowee']" in capsys.readouterr().err
