"""PyTorch checkpoints <-> the project's Orbax checkpoints: name maps, engine, CLIs (convert/export/verify).

This package may import torch/transformers; `qwen_audio_jax` never imports it.
"""
