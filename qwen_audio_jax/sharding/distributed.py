"""Multi-process start-up: `jax.distributed.initialize` before any other JAX call.

On Cloud TPU (and SLURM / Open MPI clusters) JAX finds the coordinator itself; elsewhere pass
`coordinator` ("host:port"), `num_processes` and `process_id` (config `distributed.*`, or the
environment variables JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
On CPU, cross-process collectives use gloo.

A process that dies (kill -9, OOM, lost host) stops sending heartbeats; after `heartbeat_timeout_s` the
coordination service reports it and every other process exits with an error instead of waiting forever
in a collective (JAX's default is 100 s; the run config's `distributed.heartbeat_timeout_s` sets it).
A process that is alive but stuck is the hang watchdog's job (train/watchdog.py).
"""

from __future__ import annotations

import logging
import os

import jax


def _env_int(name: str):
  v = os.environ.get(name)
  return int(v) if v not in (None, "") else None


def initialize(mode: str = "auto", coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 300, cpu_devices: int | None = None,
               heartbeat_timeout_s: int = 100) -> None:
  """`mode`: "auto" (initialize when a coordinator is given or a TPU pod / cluster is detected),
  "on" (always), "off" (never, e.g. conversion scripts on one host)."""
  coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  if cpu_devices:
    jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  if mode == "off" or jax.distributed.is_initialized():
    return
  explicit = coordinator is not None
  on_pod = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))  # multi-host TPU VM
  on_cluster = "SLURM_JOB_ID" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ
  if mode == "auto" and not (explicit or on_pod or on_cluster):
    return
  if mode not in ("auto", "on"):
    raise ValueError(f"distributed.mode={mode!r}: expected 'auto', 'on' or 'off'")
  if explicit:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id, initialization_timeout=timeout_s,
                             heartbeat_timeout_seconds=int(heartbeat_timeout_s))
  logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
