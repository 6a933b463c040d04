"""Training at pod scale: sharded state, jitted steps, checkpoints, the loop and its CLI.

`python -m qwen_audio_jax.train --config=configs/<name>.py[:arg] --workdir=DIR [--config.key=value ...]`
"""
