"""The exceptions that mean "the request is wrong" (one line, exit 2), not "the program is broken"."""

from __future__ import annotations

import json

from qwen_audio_jax.audio import AudioError
from qwen_audio_jax.checkpoint_io import CheckpointError
from qwen_audio_jax.infer.engine import GenerationError
from qwen_audio_jax.infer.settings import DecodeSettingsError
from qwen_audio_jax.model import AudioPlaceholderError
from qwen_audio_jax.prompts import AudioMismatchError, PromptError, SequenceTooLongError
from qwen_audio_jax.tokenizer import TokenizerError

USER_ERRORS = (AudioError, CheckpointError, GenerationError, DecodeSettingsError, AudioPlaceholderError,
               AudioMismatchError, PromptError, SequenceTooLongError, TokenizerError, FileNotFoundError,
               PermissionError, IsADirectoryError, json.JSONDecodeError, ValueError)
