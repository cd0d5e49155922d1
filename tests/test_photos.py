"""`hific data`'s readers: Qt resource bundles and Eet archives (checked against every offset),
GCompris's licence notes, VC-2 frames, and the rule for heavily compressed photos."""

import io
import json
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

from hific_tf.training import archives, photo_sources, photos


def _name(text):
  encoded = text.encode("utf-16-be")
  return struct.pack(">HI", len(text), 0) + encoded


def qres(files, version=2):
  """A Qt resource bundle (rcc's layout) of {name: bytes} in one folder, zlib-compressed."""
  names = _name("") + b""
  offsets = {}
  for name in files:
    offsets[name] = len(names)
    names += _name(name)
  data = b""
  data_offsets = {}
  for name, payload in files.items():
    data_offsets[name] = len(data)
    packed = struct.pack(">I", len(payload)) + zlib.compress(payload)
    data += struct.pack(">I", len(packed)) + packed
  tail = b"\0" * 8 if version >= 2 else b""
  tree = struct.pack(">IHII", 0, 0x02, len(files), 1) + tail  # The root: a folder.
  for name in files:
    tree += struct.pack(">IHHHI", offsets[name], 0x01, 0, 0, data_offsets[name]) + tail
  header = 20
  return (b"qres" + struct.pack(">4I", version, header, header + len(tree),
                                header + len(tree) + len(data)) + tree + data + names)


def eet(entries):
  """An Eet v2 archive of {name: bytes}, stored (not compressed)."""
  directory, strings, blobs = b"", b"", b""
  start = 12 + 24 * len(entries)
  names_at = start
  for name in entries:
    strings += name.encode() + b"\0"
  data_at = names_at + len(strings)
  name_offset = names_at
  for name, payload in entries.items():
    directory += struct.pack(">6i", data_at + len(blobs), len(payload), len(payload), name_offset,
                             len(name) + 1, 0)
    name_offset += len(name) + 1
    blobs += payload
  return struct.pack(">3i", 0x1EE70F42, len(entries), 0) + directory + strings + blobs


def test_qt_resources_read_back_and_hostile_bundles_fail_in_one_line(tmp_path):
  path = tmp_path / "a.rcc"
  path.write_bytes(qres({"cat.webp": b"meow" * 100, "README": b"Files: cat.webp"}))
  assert archives.read_qt_resources(path) == {"cat.webp": b"meow" * 100,
                                              "README": b"Files: cat.webp"}
  good = path.read_bytes()
  for name, blob in (("magic", b"qrez" + good[4:]), ("truncated", good[:len(good) - 30]),
                     ("version", good[:4] + struct.pack(">I", 9) + good[8:]),
                     ("empty", b"")):
    (tmp_path / name).write_bytes(blob)
    with pytest.raises(archives.ArchiveError) as error:
      archives.read_qt_resources(tmp_path / name)
    assert "\n" not in str(error.value)
  # A folder that lists itself as its own child: a cycle, not a hang.
  looped = bytearray(good)
  looped[20 + 10:20 + 14] = struct.pack(">I", 0)
  (tmp_path / "loop").write_bytes(bytes(looped))
  with pytest.raises(archives.ArchiveError, match="cycle"):
    archives.read_qt_resources(tmp_path / "loop")


def test_eet_archives_read_back_and_hostile_ones_fail_in_one_line(tmp_path):
  path = tmp_path / "a.edj"
  jpeg = b"\xff\xd8\xff" + b"x" * 50
  path.write_bytes(eet({"edje/images/0": jpeg, "script": b"collections {}"}))
  assert archives.read_eet(path) == {"edje/images/0": jpeg, "script": b"collections {}"}
  good = path.read_bytes()
  huge = good[:12] + struct.pack(">i", 1 << 30) + good[16:]  # An entry past the end.
  for name, blob in (("magic", b"\0\0\0\0" + good[4:]), ("huge", huge), ("short", b"1234")):
    (tmp_path / name).write_bytes(blob)
    with pytest.raises(archives.ArchiveError):
      archives.read_eet(tmp_path / name)


def test_gcompris_licence_notes_name_each_file():
  readme = ("Copyright: Someone\nLicense: CC-BY-SA 4.0\nFiles:\nkey.svg\negypt/egypt.svg\n\n"
            "Copyright: Kurt Kaiser\nLicense: CC0-1.0\nSource: https://example.org/x.jpg\n"
            "Files:\nbison.webp\n\nCopyright: No licence here\nFiles: orphan.webp\n")
  notes = photo_sources.gcompris_licences(readme)
  assert notes["bison.webp"] == ("Kurt Kaiser", "CC0-1.0")
  assert notes["egypt/egypt.svg"] == ("Someone", "CC-BY-SA 4.0")
  assert "orphan.webp" not in notes  # No licence: such a photo is refused, not guessed.


def test_vc2_frames_are_planar_green_blue_red():
  width, height = 4, 2
  planes = np.stack([np.full((height, width), value << 8, "<u2") for value in (20, 30, 10)])
  meta = json.dumps({"video_parameters": {"frame_width": width, "frame_height": height}})
  frame = photo_sources._vc2_frame(planes.tobytes(), meta)
  assert frame.shape == (2, 4, 3) and frame.dtype == np.uint8
  assert frame[0, 0].tolist() == [10, 20, 30]
  with pytest.raises(photo_sources.SourceError):
    photo_sources._vc2_frame(planes.tobytes()[:-2], meta)


def test_heavily_compressed_photos_are_downscaled_by_two():
  rng = np.random.default_rng(0)
  flat = np.full((64, 96, 3), 128, np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(flat).save(buffer, "WEBP", quality=5)
  smooth = photo_sources._photo("flat", buffer.getvalue(), "p", "o", "l", "c")
  assert smooth.stored_bpp < photo_sources.SMOOTHED_BPP and smooth.pixels.shape == (32, 48, 3)
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (64, 96, 3), np.uint8)).save(buffer, "PNG")
  detailed = photo_sources._photo("noise", buffer.getvalue(), "p", "o", "l", "c")
  assert detailed.pixels.shape == (64, 96, 3)
  with pytest.raises(photo_sources.SourceError, match="does not decode"):
    photo_sources._photo("bad", b"not an image", "p", "o", "l", "c")


def test_held_out_photos_are_spread_and_never_trained_on():
  assert len(photos.HELD_OUT) + len(photos.HELD_OUT_MORE) >= 40
  assert not set(photos.HELD_OUT) & set(photos.HELD_OUT_MORE)
  sources = {name.split("_")[0] for name in photos.HELD_OUT_MORE}
  assert len(sources) >= 8  # Spread over the packages, not one of them.
