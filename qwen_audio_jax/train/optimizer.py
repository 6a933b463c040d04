"""AdamW with linear warm-up + cosine decay and global-norm clipping, over the trainable tree only."""

from __future__ import annotations

import re

import jax
import optax

# Weight decay applies to matrices (and LoRA factors), never to norms or biases.
DEFAULT_DECAY_PATTERN = r".*/(kernel|embedding|lora_a|lora_b)"


def learning_rate(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine to `lr * final_lr_fraction` at `total_steps`."""
  warmup = int(optim_cfg.warmup_steps)
  decay_steps = max(int(total_steps), warmup + 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(optim_cfg.lr), warmup_steps=warmup, decay_steps=decay_steps,
      end_value=float(optim_cfg.lr) * float(optim_cfg.final_lr_fraction))


def _decay_mask(pattern: str):
  rx = re.compile(pattern)

  def mask(tree):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(rx.fullmatch("/".join(str(getattr(k, "key", k)) for k in path))), tree)
  return mask


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  """Clip (global norm over the trainable tree) → AdamW (fp32 moments) with the schedule."""
  parts = []
  if optim_cfg.clip_norm and float(optim_cfg.clip_norm) > 0:
    parts.append(optax.clip_by_global_norm(float(optim_cfg.clip_norm)))
  parts.append(optax.adamw(
      learning_rate(optim_cfg, total_steps), b1=float(optim_cfg.b1), b2=float(optim_cfg.b2),
      eps=float(optim_cfg.eps), weight_decay=float(optim_cfg.weight_decay),
      mask=_decay_mask(optim_cfg.get("decay_pattern", DEFAULT_DECAY_PATTERN)), mu_dtype="float32"))
  return optax.chain(*parts)
