"""Readers for the two archive formats that hold packaged photographs: Qt resources and Eet.

Some of the photographs that `hific data` assembles ship inside application archives rather
than as loose files: GCompris keeps its pictures in compiled Qt resource bundles (`.rcc`),
Enlightenment its backgrounds in Eet archives (`.edj`). Neither format has a maintained Python
reader on the package index, and both are simple, documented, big-endian layouts, so they are
read here. Every offset and length is checked against the file, because a package is an input
like any other.

- Qt resources ("qres", versions 1-3), as written by Qt's rcc: a header of four offsets, a
  tree of 14-byte (v1) or 22-byte (v2, v3) nodes, a names table (UTF-16 names) and a data
  table of length-prefixed payloads, zlib-compressed when the node's flag says so.
- Eet v2 (magic 0x1ee70f42): a directory of (offset, size, data size, name offset, name size,
  flags) records, then a hash dictionary, then strings and data.
"""

import pathlib
import struct
import zlib

from hific_tf.errors import HificError


class ArchiveError(HificError):
  """An archive is not what its format says; the message is one line."""


_QT_COMPRESSED, _QT_DIRECTORY, _QT_ZSTD = 0x01, 0x02, 0x04


def _slice(blob, offset, length, what):
  if offset < 0 or length < 0 or offset + length > len(blob):
    raise ArchiveError(f"{what} runs past the end of the archive")
  return blob[offset:offset + length]


def read_qt_resources(path):
  """{path inside the bundle: bytes} for every file of a compiled Qt resource bundle."""
  blob = pathlib.Path(path).read_bytes()
  if blob[:4] != b"qres" or len(blob) < 20:
    raise ArchiveError(f"{path} is not a Qt resource bundle")
  version, tree, data, names = struct.unpack(">4I", blob[4:20])
  if version not in (1, 2, 3):
    raise ArchiveError(f"{path}: Qt resource version {version} is not supported")
  node_size = 14 if version == 1 else 22

  def node(index):
    return _slice(blob, tree + index * node_size, node_size, "a resource tree node")

  def name(offset):
    length, = struct.unpack(">H", _slice(blob, names + offset, 2, "a resource name"))
    raw = _slice(blob, names + offset + 6, 2 * length, "a resource name")
    return raw.decode("utf-16-be")

  found = {}
  pending = [(0, "")]
  visited = set()
  while pending:
    index, prefix = pending.pop()
    if index in visited:
      raise ArchiveError(f"{path}: the resource tree has a cycle")
    visited.add(index)
    entry = node(index)
    name_offset, flags = struct.unpack(">IH", entry[:6])
    label = name(name_offset) if index else ""
    full = f"{prefix}/{label}" if label else prefix
    if flags & _QT_DIRECTORY:
      count, first = struct.unpack(">II", entry[6:14])
      if count > len(blob) // node_size:
        raise ArchiveError(f"{path}: a resource directory claims {count} children")
      pending.extend((first + child, full) for child in range(count))
      continue
    data_offset, = struct.unpack(">I", entry[10:14])
    length, = struct.unpack(">I", _slice(blob, data + data_offset, 4, "a resource"))
    payload = _slice(blob, data + data_offset + 4, length, "a resource")
    if flags & _QT_ZSTD:
      raise ArchiveError(f"{path}: {full} is zstd-compressed (not supported)")
    if flags & _QT_COMPRESSED:
      try:
        payload = zlib.decompress(payload[4:])
      except zlib.error as error:
        raise ArchiveError(f"{path}: {full} does not inflate ({error})") from None
    found[full.lstrip("/")] = payload
  return found


_EET_MAGIC = 0x1EE70F42
_EET_COMPRESSED, _EET_CIPHERED = 0x01, 0x02


def read_eet(path):
  """{entry name: bytes} for the stored (uncompressed, unciphered) entries of an Eet archive.

  Enlightenment's backgrounds keep their JPEG copies stored, so compressed entries (Eet's
  own LZ4 or zlib, used for its edje scripts) are skipped rather than decoded.
  """
  blob = pathlib.Path(path).read_bytes()
  if len(blob) < 12:
    raise ArchiveError(f"{path} is not an Eet archive")
  magic, entries, dictionary = struct.unpack(">3i", blob[:12])
  if magic != _EET_MAGIC:
    raise ArchiveError(f"{path} is not an Eet v2 archive (magic {magic:#x})")
  if not 0 <= entries <= len(blob) // 24 or not 0 <= dictionary <= len(blob) // 20:
    raise ArchiveError(f"{path}: its directory sizes do not fit the file")
  found = {}
  for index in range(entries):
    record = _slice(blob, 12 + 24 * index, 24, "an Eet directory record")
    offset, size, data_size, name_offset, name_size, flags = struct.unpack(">6i", record)
    if flags & (_EET_COMPRESSED | _EET_CIPHERED) or size != data_size:
      continue
    label = _slice(blob, name_offset, name_size, "an Eet name").split(b"\0")[0]
    found[label.decode("utf-8", "replace")] = _slice(blob, offset, size, "an Eet entry")
  return found
