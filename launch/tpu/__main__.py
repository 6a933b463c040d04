"""CLI: `python -m launch.tpu ACTION --name=NAME --zone=ZONE --topology=v5p-64 [options] [-- PROGRAM flags...]`

ACTION: up (plan check, create, install, run, delete), create, install, run, delete.
PROGRAM: train | evaluate | infer (or any module), run as `.venv/bin/python -m qwen_audio_jax.PROGRAM` on
every worker of every slice, e.g.

  python -m launch.tpu up --name=qa --zone=us-east5-a --topology=v5p-64 --cache_root=gs://B/xla_cache \\
      -- train --config=configs/qwen_audio_7b_sft.py --workdir=gs://B/runs/sft

Before creating anything it runs `python -m qwen_audio_jax.plan` for the same config and topology (or
reads --plan_json) and refuses (exit 3) when the configuration does not fit. --dry-run prints every
command instead of running it. The slice is deleted at the end of `up` (also on failure) unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from launch.tpu import commands
from qwen_audio_jax.plan import topology

EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT = 2, 3
ACTIONS = ("up", "create", "install", "run", "delete")
REMOTE_ARCHIVE = "qwen-audio-jax-src.tar.gz"


class LaunchError(RuntimeError):
  def __init__(self, message: str, code: int = 1):
    super().__init__(message)
    self.code = code


class Shell:
  """Prints every command (`+ ...`); runs it unless dry-run. Output streams to this terminal."""

  def __init__(self, dry_run: bool):
    self.dry_run = dry_run

  def show(self, cmd: list[str], note: str = "") -> None:
    print("+ " + shlex.join(cmd) + (f"    # {note}" if note else ""), flush=True)

  def run(self, cmd: list[str], what: str, note: str = "") -> None:
    self.show(cmd, note)
    if self.dry_run:
      return
    code = subprocess.call(cmd)
    if code:
      raise LaunchError(f"launch.tpu: {what} failed with status {code}: {shlex.join(cmd)[:300]}", code)

  def output(self, cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()

  def parallel(self, cmds: list[list[str]], what: str) -> None:
    """Every command at once (one per slice); the first failure stops the others."""
    for c in cmds:
      self.show(c)
    if self.dry_run:
      return
    procs = [subprocess.Popen(c) for c in cmds]
    try:
      while True:
        codes = [p.poll() for p in procs]
        bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if bad:
          raise LaunchError(f"launch.tpu: {what} failed on slice {bad[0]} with status {codes[bad[0]]}", codes[bad[0]])
        if all(c == 0 for c in codes):
          return
        time.sleep(1)
    finally:
      for p in procs:
        if p.poll() is None:
          p.terminate()


def parse(argv):
  p = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("action", choices=ACTIONS)
  p.add_argument("--name", required=True, help="TPU VM / queued resource name (Multislice nodes: NAME-i)")
  p.add_argument("--zone", required=True)
  p.add_argument("--topology", required=True, help="v4-32, v5p-64, v5e-16 (= v5litepod-16), v6e-64, ...")
  p.add_argument("--num_slices", type=int, default=1, help="Multislice: this many slices (queued resources)")
  p.add_argument("--project", default="")
  p.add_argument("--provisioning", choices=("on-demand", "spot", "queued"), default="on-demand")
  p.add_argument("--source", choices=("local", "git"), default="local",
                 help="local: upload `git archive HEAD` of this checkout (committed files only); git: clone --repo")
  p.add_argument("--repo", default="", help="--source=git: repository URL")
  p.add_argument("--ref", default="", help="--source=git: branch, tag or commit (default HEAD)")
  p.add_argument("--remote_dir", default="qwen-audio-jax", help="project directory on each worker")
  p.add_argument("--cache_root", default="", help="persistent compilation cache root, e.g. gs://B/xla_cache "
                 "(a subdirectory per topology)")
  p.add_argument("--xla_flags", default=None, help="LIBTPU_INIT_ARGS for the workers (default: per generation)")
  p.add_argument("--plan_json", default="", help="a saved `plan --json` result to check instead of planning")
  p.add_argument("--skip_plan", action="store_true", help="do not check that the configuration fits")
  p.add_argument("--keep", action="store_true", help="up: do not delete the slice at the end")
  p.add_argument("--poll_s", type=float, default=30.0, help="queued resources: seconds between state checks")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print the commands only")
  argv = list(argv)
  cut = argv.index("--") if "--" in argv else len(argv)
  args = p.parse_args(argv[:cut])
  args.program = argv[cut + 1:]
  if args.action in ("up", "run") and not args.program:
    p.error(f"{args.action}: give the program after --, e.g. -- train --config=... --workdir=gs://...")
  if args.source == "git" and not args.repo:
    p.error("--source=git needs --repo")
  if args.num_slices > 1 and args.provisioning != "queued":
    p.error("--num_slices > 1 (Multislice) needs --provisioning=queued")
  return args


def program_args(program: list[str]) -> tuple[str, list[str]]:
  name, flags = program[0], list(program[1:])
  has_mode = any(f.startswith("--config.distributed.mode") for f in flags)
  if any(f.startswith("--config=") for f in flags) and not has_mode:
    flags.append("--config.distributed.mode=on")
  return name, flags


def plan_command(args, flags: list[str], json_path: str) -> list[str] | None:
  config = next((f for f in flags if f.startswith("--config=")), None)
  if config is None:
    return None
  overrides = [f for f in flags if f.startswith("--config.") and not f.startswith("--config.distributed.")]
  return [sys.executable, "-m", "qwen_audio_jax.plan", config, f"--topology={args.topology}",
          f"--num_slices={args.num_slices}", *overrides, f"--json={json_path}"]


def check_plan(result: dict, args, flags: list[str]) -> None:
  """Refuse a plan for another topology/config, or one that does not fit."""
  t = result.get("target", {})
  want = topology.parse(args.topology, args.num_slices)
  if (t.get("topology"), t.get("num_slices")) != (want.name, want.num_slices):
    raise LaunchError(f"launch.tpu: --plan_json is for {t.get('topology')} x{t.get('num_slices')}, not "
                      f"{want.name} x{want.num_slices}; re-run plan", EXIT_BAD_INPUT)
  config = next((f.split("=", 1)[1] for f in flags if f.startswith("--config=")), None)
  overrides = sorted(f for f in flags if f.startswith("--config.") and not f.startswith("--config.distributed."))
  if config is not None and (result.get("config") != config or sorted(result.get("overrides", [])) != overrides):
    raise LaunchError(f"launch.tpu: --plan_json planned {result.get('config')} {result.get('overrides')}, but the "
                      f"run is {config} {overrides}; re-run plan", EXIT_BAD_INPUT)
  if not result.get("fits"):
    raise LaunchError("launch.tpu: refusing to start: plan says the configuration does not fit\n"
                      + result.get("verdict", ""), EXIT_DOES_NOT_FIT)
  print(f"launch.tpu: plan: fits on {t.get('describe')} ({t.get('backend')})", flush=True)


def plan_gate(args, shell: Shell, flags: list[str]) -> None:
  if args.skip_plan:
    return
  if args.plan_json:
    with open(args.plan_json) as f:
      check_plan(json.load(f), args, flags)
    return
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "plan.json")
    cmd = plan_command(args, flags, path)
    if cmd is None:
      return
    shell.show(cmd, "local: does the configuration fit?")
    if shell.dry_run:
      return
    code = subprocess.call(cmd)
    if not os.path.exists(path):
      raise LaunchError(f"launch.tpu: plan failed (status {code}); fix the config or pass --skip_plan",
                        EXIT_BAD_INPUT if code == 2 else 1)
    with open(path) as f:
      check_plan(json.load(f), args, flags)


def create(args, spec: commands.Spec, shell: Shell) -> None:
  shell.run(commands.create(spec), "create")
  if not spec.queued:
    return
  shell.show(commands.queued_state(spec), "polled until ACTIVE")
  while not shell.dry_run:
    state = shell.output(commands.queued_state(spec))
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED"):
      raise LaunchError(f"launch.tpu: queued resource {spec.name} is {state}")
    time.sleep(args.poll_s)


def install(args, spec: commands.Spec, shell: Shell) -> None:
  archive = ""
  if args.source == "local":
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    local = os.path.join(tempfile.gettempdir(), REMOTE_ARCHIVE)
    shell.run(["git", "-C", root, "archive", "--format=tar.gz", "-o", local, "HEAD"], "git archive",
              "committed files only")
    for node in spec.nodes:
      shell.run(commands.scp(spec, node, local, REMOTE_ARCHIVE), f"upload to {node}")
    archive = REMOTE_ARCHIVE
  script = commands.install_script(spec, archive=archive, repo=args.repo, ref=args.ref)
  shell.parallel([commands.ssh(spec, node, script) for node in spec.nodes], "install")


def run(args, spec: commands.Spec, shell: Shell) -> None:
  name, flags = program_args(args.program)
  script = commands.run_script(spec, name, flags)
  shell.parallel([commands.ssh(spec, node, script) for node in spec.nodes], f"{name} on the workers")


def main(argv=None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  try:
    sl = topology.parse(args.topology, args.num_slices)
  except topology.TopologyError as e:
    print(f"launch.tpu: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  spec = commands.Spec(name=args.name, zone=args.zone, slice=sl, provisioning=args.provisioning,
                       project=args.project, remote_dir=args.remote_dir, cache_root=args.cache_root,
                       xla_flags=args.xla_flags)
  shell = Shell(args.dry_run)
  try:
    if args.action in ("up", "create") and args.program:
      plan_gate(args, shell, program_args(args.program)[1])
    if args.action == "create":
      create(args, spec, shell)
    elif args.action == "install":
      install(args, spec, shell)
    elif args.action == "run":
      run(args, spec, shell)
    elif args.action == "delete":
      shell.run(commands.delete(spec), "delete")
    else:
      create(args, spec, shell)
      try:
        install(args, spec, shell)
        run(args, spec, shell)
      finally:
        if args.keep:
          print(f"launch.tpu: --keep: {spec.name} left running; delete it with: "
                f"{shlex.join(commands.delete(spec))}", flush=True)
        else:
          try:
            shell.run(commands.delete(spec), "delete")
          except LaunchError as e:  # do not hide why the run stopped
            print(f"{e}\nlaunch.tpu: the slice may still exist: {shlex.join(commands.delete(spec))}",
                  file=sys.stderr, flush=True)
  except LaunchError as e:
    print(str(e), file=sys.stderr, flush=True)
    return e.code
  except KeyboardInterrupt:
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
