"""Evaluation: metric recipes (`qwen_audio_jax.eval.recipes`); the sweep runner builds on them."""
