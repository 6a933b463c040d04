"""Local multi-host rehearsal: N `jax.distributed` processes on 127.0.0.1 (see runner.py)."""
