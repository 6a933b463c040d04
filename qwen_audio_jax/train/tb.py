"""A dependency-free TensorBoard scalar writer (TFRecord-framed `Event` protos, hand-encoded).

Neither tensorboardX nor TensorFlow is needed; TensorBoard reads the file as usual
(`tensorboard --logdir WORKDIR/tensorboard`). Only scalars are written.
"""

from __future__ import annotations

import os
import socket
import struct
import time


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  c = 0xFFFFFFFF
  for b in data:
    c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  c = crc32c(data)
  return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    out.append(b | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
  return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int = 0, file_version: str | None = None,
           scalars: dict[str, float] | None = None) -> bytes:
  msg = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
  if file_version is not None:
    msg += _field_bytes(3, file_version.encode())
  if scalars:
    values = b"".join(
        _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(v)))
        for tag, v in scalars.items())
    msg += _field_bytes(5, values)
  return msg


def _record(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class ScalarWriter:
  """Appends scalar summaries to `logdir/events.out.tfevents.<time>.<host>`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")
    self._f.write(_record(_event(time.time(), file_version="brain.Event:2")))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    self._f.write(_record(_event(time.time(), step=int(step), scalars=values)))

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    self._f.close()


def read_scalars(path: str) -> list[tuple[int, dict[str, float]]]:
  """Parses a file written by ScalarWriter, checking every CRC (used by tests)."""
  out = []
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (n,) = struct.unpack("<Q", header)
    if struct.unpack("<I", data[pos + 8:pos + 12])[0] != _masked_crc(header):
      raise ValueError(f"{path}: bad length CRC at byte {pos}")
    body = data[pos + 12:pos + 12 + n]
    if struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] != _masked_crc(body):
      raise ValueError(f"{path}: bad data CRC at byte {pos}")
    pos += 16 + n
    out.append(_parse_event(body))
  return [e for e in out if e[1]]


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
  shift = n = 0
  while True:
    x = b[i]
    n |= (x & 0x7F) << shift
    i += 1
    shift += 7
    if not x & 0x80:
      return n, i


def _fields(b: bytes):
  i = 0
  while i < len(b):
    key, i = _read_varint(b, i)
    num, wire = key >> 3, key & 7
    if wire == 0:
      v, i = _read_varint(b, i)
    elif wire == 1:
      v, i = b[i:i + 8], i + 8
    elif wire == 5:
      v, i = b[i:i + 4], i + 4
    else:
      n, i = _read_varint(b, i)
      v, i = b[i:i + n], i + n
    yield num, v


def _parse_event(body: bytes) -> tuple[int, dict[str, float]]:
  step, scalars = 0, {}
  for num, v in _fields(body):
    if num == 2:
      step = v
    elif num == 5:
      for _, value in _fields(v):
        f = dict(_fields(value))
        scalars[f[1].decode()] = struct.unpack("<f", f[2])[0]
  return step, scalars
