"""The COCO-caption PTB tokenisation (Stanford PTBTokenizer 3.4.1 jar shipped in pycocoevalcap).

Same command and post-processing as `pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`
(`-preserveLines -lowerCase`, then its PUNCTUATIONS tokens dropped). The library's wrapper writes its
temporary file into its own package folder (fails on a read-only install) and pairs output lines with
inputs by position without checking the count; this one writes to the temp dir, forces UTF-8 and
fails loudly if the line count differs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from qwen_audio_jax.eval.recipes.base import RecipeDependencyError, require

JAR = "stanford-corenlp-3.4.1.jar"


def ptb_module(recipe: str):
  return require(recipe, "pycocoevalcap.tokenizer.ptbtokenizer", "pycocoevalcap")


def java_or_raise(recipe: str, what: str) -> str:
  java = shutil.which("java")
  if java is None:
    raise RecipeDependencyError(f"{recipe}: {what} needs `java` on PATH (Java 8+; e.g. apt-get install "
                                "default-jre-headless), as the official coco-caption tools do")
  return java


def ptb_tokenize(recipe: str, sentences: list[str]) -> list[str]:
  """Lower-cased PTB tokens joined by spaces, punctuation tokens removed; one output per input."""
  module = ptb_module(recipe)
  java = java_or_raise(recipe, "the PTB tokenizer")
  jar = os.path.join(os.path.dirname(os.path.abspath(module.__file__)), JAR)
  with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
    f.write("\n".join(s.replace("\n", " ") for s in sentences))
  try:
    out = subprocess.run([java, "-Dfile.encoding=UTF-8", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer",
                          "-preserveLines", "-lowerCase", f.name], capture_output=True, check=False)
  finally:
    os.unlink(f.name)
  if out.returncode != 0:
    err = out.stderr.decode("utf-8", "replace").strip().splitlines()
    raise RecipeDependencyError(f"{recipe}: PTBTokenizer ({jar}) failed with exit {out.returncode}: "
                                f"{err[-1] if err else 'no message'}")
  lines = out.stdout.decode("utf-8").split("\n")
  if lines and lines[-1] == "" and len(lines) == len(sentences) + 1:
    lines = lines[:-1]
  if len(lines) != len(sentences):
    raise RecipeDependencyError(f"{recipe}: PTBTokenizer returned {len(lines)} lines for {len(sentences)} "
                                "captions (a caption holds a line break Java splits on?)")
  drop = set(module.PUNCTUATIONS)
  return [" ".join(w for w in line.rstrip().split(" ") if w not in drop) for line in lines]
