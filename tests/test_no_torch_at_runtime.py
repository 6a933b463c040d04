"""torch and transformers are only for conversion and parity tests: no runtime module may import them."""

import pkgutil
import subprocess
import sys

import qwen_audio_jax


def test_runtime_modules_do_not_import_torch_or_transformers():
  names = sorted(m.name for m in pkgutil.walk_packages(qwen_audio_jax.__path__, "qwen_audio_jax.")
                 if not m.name.endswith("__main__"))
  assert len(names) > 40, names  # the walk really found the package
  code = ("import importlib, sys\n"
          f"for name in {names!r}:\n"
          "  importlib.import_module(name)\n"
          "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'})\n"
          "print(','.join(bad))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "", f"runtime imports pulled in: {out.stdout.strip()}"
