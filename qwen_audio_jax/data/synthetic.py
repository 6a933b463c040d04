"""Built-in synthetic multi-task audio set: procedural, deterministic from a seed, no downloads.

Six tasks a small model can learn in minutes on CPU (clips 0.5 s to MAX_SECONDS = 1.9 s, 16 kHz, 16-bit WAV;
short, so that a 2 s mel window and 96 tokens hold every example), each
asked with its real Qwen-Audio hierarchical-tag prompt (`prompts/tasks.py`):
  asr   1-4 DTMF key tones                            -> "one four two"
  srwt  the same, with word timestamps                -> "<|0.00|><|sil|><|0.13|>one<|0.34|><|sil|><|0.45|>..."
  mna   a harmonic note (pitch, loudness, timbre, decay) -> "<|pitch|><|midi_pitch_60|><|velocity|>..."
  asc   white / pink / brown noise                    -> "white" | "pink" | "brown"
  aqa   a run of beeps + a question                   -> "three" (how many?) or "high"/"low" (pitch?)
  aac   2-3 events in a row                           -> "a rising chirp then silence"
Variation: random timing, gain (tones 0.2-0.6, notes by velocity, noise 0.02-0.2), phases, pitches, and a
faint noise floor. DTMF timings lie on the 10 ms grid of the time tokens, so SRWT references are exact:
a word or `<|sil|>` between consecutive time tokens, starting at the `<|0.00|>` the SRWT prompt forces.
Chance levels (`CHANCE`, the test split's 200 samples per task scored by the sweep's recipes): what
`blind_answer` gets, a listener that ignores the audio: ASR WER 0.903 (always "one"; a constant
digit word scores 0.89-0.91), SRWT AAS 127.6 ms (the right words at the average timing), ASC accuracy
0.315 (always "white"; 1/3 expected), AQA accuracy 0.34 ("three" to counting, "high" to pitch questions;
0.35 expected), MNA instrument accuracy 0.315 (always "sine"; 1/3 expected), AAC CIDEr-D 1.93 (always
"a rising chirp then silence").
Example `i` of (task, split, seed) is generated from its own RNG stream, so a `SyntheticSource` is a
random-access source: any index in any worker, same bytes every time.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import soundfile

from qwen_audio_jax.audio.lengths import SAMPLE_RATE
from qwen_audio_jax.data.records import make_record
from qwen_audio_jax.prompts.parsers import format_note_analysis, format_word_timestamps, parse_word_timestamps
from qwen_audio_jax.tokenizer.special_tokens import time_token

TASKS = ("asr", "srwt", "mna", "asc", "aqa", "aac")
SPLITS = ("train", "validation", "test")
MIN_SECONDS, MAX_SECONDS = 0.5, 1.9

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
_DTMF_COLS = (1209.0, 1336.0, 1477.0)
_DTMF_KEY = {1: (0, 0), 2: (0, 1), 3: (0, 2), 4: (1, 0), 5: (1, 1), 6: (1, 2), 7: (2, 0), 8: (2, 1),
             9: (2, 2), 0: (3, 1)}
INSTRUMENTS = ("sine", "organ", "reed")
VELOCITIES = (25, 50, 75, 100, 127)
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
COUNT_WORDS = DIGIT_WORDS
EVENTS = ("rising chirp", "falling chirp", "steady tone", "burst of noise", "silence")
AQA_COUNT_QUESTION = "how many beeps are there?"
AQA_PITCH_QUESTION = "are the beeps high or low?"
SIL = "<|sil|>"
# task -> (headline metric of its recipe, value of `blind_answer` on the test split, higher_is_better)
CHANCE = {"asr": ("wer", 0.9032, False), "srwt": ("aas", 0.1276, False), "asc": ("acc", 0.315, True),
          "aqa": ("acc", 0.34, True), "mna": ("instrument_acc", 0.315, True), "aac": ("CIDEr", 1.933, True)}


def _seconds(n: int | float) -> int:
  return int(round(n * SAMPLE_RATE))


def _tone(freqs, seconds: float, amplitude: float, rng: np.random.Generator) -> np.ndarray:
  """Sum of sines with random phases and a 5 ms fade in/out (no clicks)."""
  t = np.arange(_seconds(seconds)) / SAMPLE_RATE
  wave = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs) / len(freqs)
  fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
  return amplitude * wave * fade


def _silence(seconds: float) -> np.ndarray:
  return np.zeros(_seconds(seconds))


def _coloured_noise(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
  """Gaussian noise with power spectrum ~ 1/f^alpha, unit RMS."""
  spectrum = np.fft.rfft(rng.standard_normal(n))
  f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
  spectrum[1:] /= f[1:] ** (alpha / 2.0)
  spectrum[0] = 0.0
  noise = np.fft.irfft(spectrum, n)
  return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def _chirp(f0: float, f1: float, seconds: float, amplitude: float) -> np.ndarray:
  t = np.arange(_seconds(seconds)) / SAMPLE_RATE
  phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
  fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
  return amplitude * np.sin(phase) * fade


def _centiseconds(rng, low: float, high: float) -> float:
  """A duration in [low, high] s on the 10 ms grid of the time tokens (so SRWT times are exact)."""
  return int(rng.integers(round(low * 100), round(high * 100) + 1)) / 100


def _dtmf_digits(rng):
  """1-4 DTMF key tones with random timing and gain: (parts, words, [(start, end) s of each tone], end s)."""
  digits = rng.integers(0, 10, size=int(rng.integers(1, 5)))
  gain = rng.uniform(0.2, 0.6)
  t = _centiseconds(rng, 0.05, 0.25)
  parts, spans = [_silence(t)], []
  for d in digits:
    row, col = _DTMF_KEY[int(d)]
    tone, gap = _centiseconds(rng, 0.15, 0.25), _centiseconds(rng, 0.08, 0.15)
    parts += [_tone((_DTMF_ROWS[row], _DTMF_COLS[col]), tone, gain, rng), _silence(gap)]
    spans.append((t, round(t + tone, 2)))
    t = round(t + tone + gap, 2)
  if t < MIN_SECONDS:
    parts.append(_silence(MIN_SECONDS - t))
    t = MIN_SECONDS
  return parts, [DIGIT_WORDS[int(d)] for d in digits], spans, t


def _asr(rng):
  parts, words, _, _ = _dtmf_digits(rng)
  return parts, dict(text=" ".join(words), lang="en")


def srwt_text(words, spans, end: float) -> str:
  """Qwen-Audio's word-timestamp target: `<|0.00|><|sil|><|t|>word<|t|><|sil|><|t|>...<|sil|><|end|>`
  (a word or `<|sil|>` between consecutive 10 ms time tokens, boundaries shared; spec §5)."""
  items, t = [], 0.0
  for word, (start, stop) in zip(words, spans):
    if start > t:
      items.append({"word": SIL, "start": t, "end": start})
    items.append({"word": word, "start": start, "end": stop})
    t = stop
  if end > t:
    items.append({"word": SIL, "start": t, "end": end})
  return format_word_timestamps(items)


def _srwt(rng):
  parts, words, spans, end = _dtmf_digits(rng)
  return parts, dict(text=srwt_text(words, spans, end), lang="en")


def _mna(rng):
  pitch = int(rng.integers(48, 84))
  velocity = int(rng.choice(VELOCITIES))
  instrument = str(rng.choice(INSTRUMENTS))
  f0 = 440.0 * 2 ** ((pitch - 69) / 12)
  harmonics = {"sine": (1,), "organ": (1, 2, 3, 4), "reed": (1, 3, 5, 7)}[instrument]
  fast_decay = bool(rng.integers(0, 2))
  seconds = rng.uniform(0.5, 1.8)
  t = np.arange(_seconds(seconds)) / SAMPLE_RATE
  wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in harmonics)
  envelope = np.minimum(1.0, t / 0.01) * np.exp(-t * (8.0 if fast_decay else 0.5))
  note = 0.6 * (velocity / 127) * wave / max(1.0, np.max(np.abs(wave))) * envelope
  text = format_note_analysis(pitch, velocity, instrument, ["fast_decay"] if fast_decay else [])
  return [note], dict(text=text, lang="unknown")


def _asc(rng):
  colour = str(rng.choice(list(NOISE_COLOURS)))
  noise = _coloured_noise(_seconds(rng.uniform(0.5, 1.8)), NOISE_COLOURS[colour], rng)
  return [rng.uniform(0.02, 0.2) * noise], dict(text=colour, lang="unknown")


def _aqa(rng):
  count = int(rng.integers(1, 6))
  high = bool(rng.integers(0, 2))
  freq = rng.uniform(1200, 2000) if high else rng.uniform(300, 600)
  gain = rng.uniform(0.2, 0.6)
  parts = [_silence(rng.uniform(0.05, 0.2))]
  for _ in range(count):
    parts += [_tone((freq,), rng.uniform(0.08, 0.15), gain, rng), _silence(rng.uniform(0.08, 0.18))]
  if rng.integers(0, 2):
    question, answer = AQA_COUNT_QUESTION, COUNT_WORDS[count]
  else:
    question, answer = AQA_PITCH_QUESTION, "high" if high else "low"
  return parts, dict(text=answer, question=question, lang="unknown", text_lang="en")


def _event(name: str, rng) -> np.ndarray:
  seconds = rng.uniform(0.3, 0.6)
  if name == "rising chirp":
    return _chirp(rng.uniform(300, 600), rng.uniform(1500, 3000), seconds, 0.4)
  if name == "falling chirp":
    return _chirp(rng.uniform(1500, 3000), rng.uniform(300, 600), seconds, 0.4)
  if name == "steady tone":
    return _tone((rng.uniform(400, 1500),), seconds, 0.4, rng)
  if name == "burst of noise":
    return 0.2 * _coloured_noise(_seconds(seconds), 0.0, rng)
  return _silence(seconds)


def _aac(rng):
  names: list[str] = []
  for _ in range(int(rng.integers(2, 4))):
    choices = [e for e in EVENTS if not (names and e == names[-1])]  # no event twice in a row
    names.append(str(rng.choice(choices)))
  words = [n if n == "silence" else f"a {n}" for n in names]
  return [_event(n, rng) for n in names], dict(text=" then ".join(words), lang="unknown")


_GENERATORS = {"asr": _asr, "srwt": _srwt, "mna": _mna, "asc": _asc, "aqa": _aqa, "aac": _aac}


def wav_bytes(audio: np.ndarray) -> bytes:
  """16 kHz mono 16-bit PCM WAV file bytes (deterministic: no timestamps in the header)."""
  buffer = io.BytesIO()
  soundfile.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
  return buffer.getvalue()


def generate(task: str, index: int, *, split: str = "train", seed: int = 0) -> dict:
  """Record `index` of the synthetic `task`/`split` (see module docstring); pure function of its args."""
  if task not in _GENERATORS:
    raise KeyError(f"synthetic: unknown task {task!r}; known: {', '.join(TASKS)}")
  if split not in SPLITS:
    raise KeyError(f"synthetic: unknown split {split!r}; known: {', '.join(SPLITS)}")
  stream = [seed, zlib.crc32(f"{task}/{split}".encode()), int(index)]
  rng = np.random.default_rng(stream)
  parts, fields = _GENERATORS[task](rng)
  audio = np.concatenate(parts)
  if audio.shape[0] < _seconds(MIN_SECONDS):
    audio = np.pad(audio, (0, _seconds(MIN_SECONDS) - audio.shape[0]))
  audio = audio + 1e-3 * rng.standard_normal(audio.shape[0])  # faint floor: no all-zero frames
  return make_record(id=f"{task}-{split}-{index}", source=f"synthetic/{task}", task=task,
                     audio=wav_bytes(audio), **fields)


class SyntheticSource:
  """Random-access source (grain `RandomAccessDataSource` protocol) of `size` synthetic records."""

  def __init__(self, task: str, size: int, *, split: str = "train", seed: int = 0):
    generate(task, 0, split=split, seed=seed)  # validates task/split early, with a clear message
    self.task, self.size, self.split, self.seed = task, int(size), split, int(seed)

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.size:
      raise IndexError(f"synthetic/{self.task}: index {index} out of range [0, {self.size})")
    return generate(self.task, index, split=self.split, seed=self.seed)

  def __repr__(self) -> str:
    return f"SyntheticSource({self.task!r}, size={self.size}, split={self.split!r}, seed={self.seed})"


# A listener that ignores the audio: fixed answers (the AQA one reads the question), and for SRWT the
# right words at the corpus' average timing (so its AAS measures timing alone). Layout of an average
# DTMF clip: leading silence 0.15 s, tones 0.20 s, gaps 0.115 s (the midpoints of the ranges above).
BLIND = {"asr": "one", "asc": "white", "aac": "a rising chirp then silence",
         "mna": format_note_analysis(66, 75, "sine", [])}
_MEAN_LEAD, _MEAN_TONE, _MEAN_GAP = 0.15, 0.20, 0.115


def blind_answer(record: dict) -> str:
  """The answer of the audio-blind listener above, as the model would generate it (for SRWT: the
  continuation after the prompt's forced `<|0.00|>`)."""
  task = record["task"]
  if task == "aqa":
    return "three" if record["question"] == AQA_COUNT_QUESTION else "high"
  if task == "srwt":
    words = [w["word"] for w in parse_word_timestamps(record["text"]) if w["word"] != SIL]
    spans, t = [], _MEAN_LEAD
    for _ in words:
      spans.append((round(t, 2), round(t + _MEAN_TONE, 2)))
      t += _MEAN_TONE + _MEAN_GAP
    return srwt_text(words, spans, max(round(t, 2), MIN_SECONDS))[len(time_token(0.0)):]
  return BLIND[task]


VOCAB_RECORDS_PER_TASK = 200
VOCAB_SIZE = 4096  # an upper bound: SentencePiece stops when the corpus has no more merges (4,039 pieces)


def vocab_texts(per_task: int = VOCAB_RECORDS_PER_TASK) -> list[str]:
  """Answers and questions of the first `per_task` train records of every task (the vocabulary's corpus)."""
  texts = []
  for task in TASKS:
    for index in range(per_task):
      record = generate(task, index, split="train")
      texts += [record["text"]] + ([record["question"]] if record["question"] else [])
  return texts


def train_vocab(model_dir: str, family: str = "qwen-audio"):
  """The compact SentencePiece vocabulary of this corpus (the family's 3,522 specials, 256 byte pieces,
  <unk> and the corpus words) written to `model_dir/spm.model`; deterministic (same bytes every time)."""
  from qwen_audio_jax.tokenizer import train_sentencepiece  # pylint: disable=import-outside-toplevel
  return train_sentencepiece(vocab_texts(), VOCAB_SIZE, model_dir, family=family)
