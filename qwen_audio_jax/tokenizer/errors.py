"""Tokenizer exceptions (each message is one line naming the file/token and the cause)."""


class TokenizerError(ValueError):
  """Base class of tokenizer errors."""


class VocabFileError(TokenizerError):
  """The vocabulary file is missing, unreadable or corrupt."""


class SpecialTokenError(TokenizerError):
  """An unknown special token was named, or a disallowed one appeared in the text."""
