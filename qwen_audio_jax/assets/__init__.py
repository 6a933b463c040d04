"""Files shipped with the package: `jfk.flac`, 11 s of real speech (44.1 kHz stereo) for demos and tests."""

import pathlib

JFK_FLAC = pathlib.Path(__file__).parent / "jfk.flac"
