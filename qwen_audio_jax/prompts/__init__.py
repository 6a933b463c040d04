"""Prompt building (task tags, ChatML, Qwen2-Audio chat), audio-span expansion, loss masks, parsers."""

from qwen_audio_jax.prompts.audio_spans import (
    AudioMismatchError,
    check_audio_spans,
    count_audio_slots,
    expand_audio,
    list_audio_paths,
)
from qwen_audio_jax.prompts.chatml import (
    DEFAULT_MAX_WINDOW,
    DEFAULT_SYSTEM,
    ChatContext,
    chat_stop_words,
    from_list_format,
    make_chat_context,
)
from qwen_audio_jax.prompts.loss_mask import SequenceTooLongError, TrainingExample, build_training_example
from qwen_audio_jax.prompts.parsers import (
    base_answer,
    chat_answer,
    format_note_analysis,
    format_word_timestamps,
    parse_note_analysis,
    parse_word_timestamps,
    strip_tags,
)
from qwen_audio_jax.prompts.qwen2_chat import make_qwen2_audio_context, render_qwen2_audio_chat
from qwen_audio_jax.prompts.qwen2_tasks import QWEN2_PROMPTS, qwen2_task_prompt
from qwen_audio_jax.prompts.tasks import (
    TASKS,
    PromptError,
    TaskFormat,
    s2tt_languages,
    task_fields,
    task_prompt,
    task_tags,
)

__all__ = [
    "AudioMismatchError",
    "ChatContext",
    "DEFAULT_MAX_WINDOW",
    "DEFAULT_SYSTEM",
    "PromptError",
    "QWEN2_PROMPTS",
    "SequenceTooLongError",
    "TASKS",
    "TaskFormat",
    "TrainingExample",
    "base_answer",
    "build_training_example",
    "chat_answer",
    "chat_stop_words",
    "check_audio_spans",
    "count_audio_slots",
    "expand_audio",
    "format_note_analysis",
    "format_word_timestamps",
    "from_list_format",
    "list_audio_paths",
    "make_chat_context",
    "make_qwen2_audio_context",
    "parse_note_analysis",
    "parse_word_timestamps",
    "qwen2_task_prompt",
    "render_qwen2_audio_chat",
    "s2tt_languages",
    "strip_tags",
    "task_fields",
    "task_prompt",
    "task_tags",
]
