"""Files shipped with the package: `jfk.flac`, 11 s of real speech (44.1 kHz stereo) for demos and tests;
`synthetic_spm.model`, the compact SentencePiece vocabulary of the built-in synthetic tasks
(`qwen_audio_jax.data.synthetic.train_vocab` rebuilds it; a test checks they agree)."""

import pathlib

JFK_FLAC = pathlib.Path(__file__).parent / "jfk.flac"
SYNTHETIC_VOCAB = pathlib.Path(__file__).parent / "synthetic_spm.model"
