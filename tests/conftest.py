"""Shared test fixtures and settings: fp32 reference numerics, the shipped speech clip."""

import jax
import pytest

from qwen_audio_jax.assets import JFK_FLAC

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def jfk_path() -> str:
  """11 s of real speech, 44.1 kHz stereo FLAC (shipped with the package)."""
  return str(JFK_FLAC)
