"""Ahead-of-time plan of a run on a named TPU topology: per-device memory, FLOPs and step time of the real
compiled step(s), before renting the pod (`python -m qwen_audio_jax.plan --help`).

topology.py  slice names → chips, HBM, libtpu compile-only devices (or simulated CPU devices)
inputs.py    abstract batch / state / KV cache with the run's shardings
steps.py     registry of steps to plan ("train", "prefill"; `register` adds more)
analyse.py   lower + compile, XLA memory analysis, out-of-memory errors
search.py    remat x grad_accum_steps search when the train step does not fit
core.py, run.py, report.py, __main__.py   one plan, the whole plan, output, CLI
"""
