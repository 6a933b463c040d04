"""CLI: `python -m launch.local [-n 2] [-d 2] [--logdir DIR] [--timeout S] -- PROGRAM [flags...]`

PROGRAM is a module run as `python -m PROGRAM` (a bare name means `qwen_audio_jax.<name>`), e.g.
  python -m launch.local -n 2 -d 2 -- train --config=configs/tiny_synthetic.py:20 --workdir=/tmp/mp \\
      --config.mesh.ici='(1,2,1)' --config.mesh.dcn='(2,1,1)'
Every multi-host code path (jax.distributed, per-host data, global arrays, sharded checkpoints) runs
on this machine. Exit status: 0 when every process succeeds; otherwise the failing process's status.
"""

from __future__ import annotations

import argparse
import os
import sys

from launch.local import runner


def parse(argv):
  p = argparse.ArgumentParser(prog="python -m launch.local", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("-n", "--processes", type=int, default=2, help="processes (hosts) to start (default 2)")
  p.add_argument("-d", "--devices", type=int, default=2, help="simulated CPU devices per process (default 2)")
  p.add_argument("--logdir", default=None, help="per-process logs (default: ./launch_local_logs)")
  p.add_argument("--timeout", type=float, default=0.0, help="stop everything after this many seconds (0: never)")
  p.add_argument("--python", default=sys.executable, help="interpreter for the processes (default: this one)")
  argv = list(argv)
  cut = argv.index("--") if "--" in argv else len(argv)
  args = p.parse_args(argv[:cut])
  args.program = argv[cut + 1:]
  prog = args.program
  if not prog:
    p.error("no program given: add -- PROGRAM [flags...], e.g. -- train --config=... --workdir=...")
  if args.processes < 1 or args.devices < 1:
    p.error("--processes and --devices must be >= 1")
  if "." not in prog[0]:
    prog = [f"qwen_audio_jax.{prog[0]}"] + prog[1:]
  args.program = prog
  return args


def main(argv=None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  logdir = args.logdir or os.path.join(os.getcwd(), "launch_local_logs")
  res = runner.run(args.program, args.processes, args.devices, logdir, python=args.python, timeout_s=args.timeout)
  if res.message:
    print(res.message, file=sys.stderr, flush=True)
  return res.code


if __name__ == "__main__":
  sys.exit(main())
