"""The one exception type of the converter: its message is the one line the CLI prints."""


class ConversionError(Exception):
  """A source/checkpoint problem: missing/unexpected key, wrong shape, unreadable file, bad flag."""
