"""Shared test fixtures and settings: fp32 reference numerics, the shipped speech clip."""

import os
import pathlib

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

ASSETS = pathlib.Path(__file__).parent / "assets"


@pytest.fixture(scope="session")
def jfk_path() -> str:
  """11 s of real speech, 44.1 kHz stereo FLAC (shipped with the repo)."""
  return str(ASSETS / "jfk.flac")
