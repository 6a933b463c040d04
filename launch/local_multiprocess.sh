#!/usr/bin/env bash
# N processes on this machine, talking over 127.0.0.1 (gloo CPU collectives), each with D simulated
# CPU devices: the multi-host code path (jax.distributed, per-host data, global arrays, sharded
# checkpoints) without a cluster.
#
#   launch/local_multiprocess.sh CONFIG WORKDIR [N=2] [D=2] [--config.key=value ...]
#   e.g. launch/local_multiprocess.sh configs/tiny_synthetic.py:20 /tmp/mp 2 2 \
#          --config.mesh.ici='(1,2,1)' --config.mesh.dcn='(2,1,1)'
#
# Only process 0 logs; its output goes to the terminal, the others' to WORKDIR/process_<i>.log.
# Any process failing makes the script exit non-zero.
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
N=2; D=2
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then N=$1; shift; fi
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then D=$1; shift; fi
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
mkdir -p "$WORKDIR"
pids=()
for ((i = 0; i < N; i++)); do
  cmd=("$PY" -m qwen_audio_jax.train "--config=$CONFIG" "--workdir=$WORKDIR"
       "--config.distributed.coordinator=127.0.0.1:$PORT" "--config.distributed.num_processes=$N"
       "--config.distributed.process_id=$i" "--config.distributed.cpu_devices=$D" "$@")
  if [[ $i -eq 0 ]]; then
    JAX_PLATFORMS=cpu "${cmd[@]}" & pids+=($!)
  else
    JAX_PLATFORMS=cpu "${cmd[@]}" >"$WORKDIR/process_$i.log" 2>&1 & pids+=($!)
  fi
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
