#!/usr/bin/env bash
# Train on every host of a Cloud TPU pod slice (or several slices with Multislice).
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#   e.g. launch/tpu_pod.sh my-v5p-128 us-east5-a configs/qwen_audio_7b_sft.py gs://bucket/runs/sft \
#          --config.data.train_manifest=/data/train.jsonl --config.data.eval_manifest=/data/dev.jsonl \
#          --config.train.init_params_dir=gs://bucket/init/qwen_audio
#
# Every host runs the same command; jax.distributed.initialize() finds the coordinator through the
# TPU metadata (distributed.mode=on). The repo must already be installed on every host, e.g.:
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command \
#     "git clone REPO qwen-audio-jax && cd qwen-audio-jax && pip install -c constraints.txt -e . 'jax[tpu]'"
# WORKDIR should be a gs:// path (all hosts write their checkpoint shards there). Re-running the same
# command resumes from the latest checkpoint in WORKDIR. A preempted host gets SIGTERM: every host
# saves at the same step and exits 0.
set -euo pipefail
TPU=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:?config file}; WORKDIR=${4:?workdir}; shift 4
REPO_DIR=${REPO_DIR:-qwen-audio-jax}
EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command \
  "cd $REPO_DIR && python3 -m qwen_audio_jax.train --config=$CONFIG --workdir=$WORKDIR \
   --config.distributed.mode=on $EXTRA 2>&1 | tee -a train_\$(hostname).log"
