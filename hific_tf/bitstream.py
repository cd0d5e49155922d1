"""The .hific container: a small header, the range-coded y and z strings, a CRC32.

See docs/FORMAT.md for the byte layout. Version 2 adds the rate the strings were coded at
(gains.py); a file at the model's own rate (0) is written as version 1, byte for byte what
earlier releases wrote, and every version-1 file decodes at rate 0. The header names the model (config name and a
fingerprint of its weights) so that a file is never decoded by a model that did not make it:
a different model would range-decode garbage without noticing.
"""

import dataclasses
import math
import struct
import zlib

from hific_tf import geometry
from hific_tf.errors import HificError
from hific_tf.images import ImageError, bits_per_pixel

MAGIC = b"HFIC"
VERSION = 2  # The newest version written and read; version 1 has no rate field.
VERSIONS = (1, 2)
_RATE = struct.Struct(">f")
# Rates beyond this scale y by more than 2^8: no model codes there, and a crafted header must
# not drive the gains to infinity.
MAX_RATE = 8.
MAX_NAME_BYTES = 22  # Keeps the container overhead at 64 bytes or less.
FINGERPRINT_BYTES = 8
_FIXED = struct.Struct(">II4HII")  # height, width, y h/w, z h/w, len(y), len(z).

# Decoding limits, like Pillow's decompression-bomb guard: decoding memory grows with the
# image's pixels (docs/FORMAT.md gives the formula), so a header may not ask for more than
# this unless the caller raises the limit (`--max_pixels`, `max_pixels=`).
DEFAULT_MAX_PIXELS = 50_000_000  # e.g. 8660x5773 (8K UHD is 33 M pixels).
MAX_SIDE = 65_535
# The architecture's defaults (HiFiC: y at 1/16, z at 1/64 of the padded image); SavedModels
# record their own in model_info.
DEFAULT_PAD_MULTIPLE = geometry.PAD_MULTIPLE
DEFAULT_LATENT_DOWNSAMPLING = geometry.LATENT_DOWNSAMPLING
latent_shapes = geometry.latent_shapes


class FormatError(HificError, ValueError):
  """A file that is not a valid .hific file; the message is one line for the CLI."""


@dataclasses.dataclass(frozen=True)
class HificFile:
  config_name: str
  fingerprint: bytes
  height: int
  width: int
  y_shape: tuple
  z_shape: tuple
  y_string: bytes
  z_string: bytes
  rate: float = 0.

  @property
  def version(self):
    return 1 if self.rate == 0 else 2

  def to_bytes(self):
    name = self.config_name.encode("ascii", "replace")[:MAX_NAME_BYTES]
    if len(self.fingerprint) != FINGERPRINT_BYTES:
      raise ValueError("fingerprint must be 8 bytes")
    rate = b"" if self.version == 1 else _RATE.pack(self.rate)
    body = b"".join([
        MAGIC, bytes([self.version, len(name)]), name, self.fingerprint, rate,
        _FIXED.pack(self.height, self.width, *self.y_shape, *self.z_shape,
                    len(self.y_string), len(self.z_string)),
        self.y_string, self.z_string])
    return body + struct.pack(">I", zlib.crc32(body))

  @property
  def overhead_bytes(self):
    return len(self.to_bytes()) - len(self.y_string) - len(self.z_string)

  @classmethod
  def from_bytes(cls, data):
    if len(data) < 6 or data[:4] != MAGIC:
      raise FormatError("not a .hific file (bad magic)")
    version = data[4]
    if version not in VERSIONS:
      raise FormatError(f"unsupported .hific format version {version} (this reads "
                        f"{' and '.join(map(str, VERSIONS))})")
    name_length = data[5]
    rate_at = 6 + name_length + FINGERPRINT_BYTES
    rate_bytes = _RATE.size if version == 2 else 0
    header_end = rate_at + rate_bytes + _FIXED.size
    if len(data) < header_end + 4:
      raise FormatError("truncated .hific file (header incomplete)")
    (crc,) = struct.unpack(">I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
      raise FormatError("corrupt .hific file (CRC32 mismatch: truncated or altered)")
    name = data[6:6 + name_length].decode("ascii", "replace")
    fingerprint = data[6 + name_length:rate_at]
    rate = _RATE.unpack(data[rate_at:rate_at + rate_bytes])[0] if rate_bytes else 0.
    height, width, yh, yw, zh, zw, y_length, z_length = _FIXED.unpack(
        data[header_end - _FIXED.size:header_end])
    if header_end + y_length + z_length + 4 != len(data):
      raise FormatError("corrupt .hific file (string lengths do not match the file size)")
    y_string = data[header_end:header_end + y_length]
    z_string = data[header_end + y_length:header_end + y_length + z_length]
    return cls(name, fingerprint, height, width, (yh, yw), (zh, zw), y_string, z_string, rate)

  def validate(self, max_pixels=DEFAULT_MAX_PIXELS, pad_multiple=DEFAULT_PAD_MULTIPLE,
               latent_downsampling=DEFAULT_LATENT_DOWNSAMPLING):
    """Checks the header against the model's geometry and the limits, before any decoding.

    A header is only data: with a recomputed CRC it can claim anything. The latent shapes
    must be exactly those the image size implies, so that the decoder never allocates for a
    shape the image does not need, and never returns an image of another size.
    """
    if self.height < 1 or self.width < 1:
      raise FormatError(f"invalid .hific header (image {self.width}x{self.height})")
    if max(self.height, self.width) > MAX_SIDE or self.height * self.width > max_pixels:
      raise FormatError(f"image {self.width}x{self.height} exceeds the decoding limit of "
                        f"{max_pixels} pixels and {MAX_SIDE} per side (raise it with "
                        "--max_pixels if the file is trusted)")
    y_shape, z_shape = latent_shapes(self.height, self.width, pad_multiple,
                                     latent_downsampling)
    if tuple(self.y_shape) != y_shape or tuple(self.z_shape) != z_shape:
      raise FormatError(f"invalid .hific header (latents {self.y_shape} and {self.z_shape} "
                        f"do not fit a {self.width}x{self.height} image)")
    if not self.y_string or not self.z_string:
      raise FormatError("invalid .hific header (empty latent string)")
    if not math.isfinite(self.rate) or abs(self.rate) > MAX_RATE:
      raise FormatError(f"invalid .hific header (rate {self.rate} outside "
                        f"[-{MAX_RATE:g}, {MAX_RATE:g}])")
    return self

  def bits_per_pixel(self):
    return bits_per_pixel(len(self.to_bytes()), self.height, self.width)


def check_image_size(height, width, max_pixels):
  """Refuses to compress an image the decoder would refuse under the same limit."""
  if height * width > max_pixels or max(height, width) > MAX_SIDE:
    raise ImageError(
        f"image {width}x{height} exceeds the limit of {max_pixels} pixels and "
        f"{MAX_SIDE} per side (raise it with --max_pixels)")


def check_fingerprint(hific_file, fingerprint, config_name, also_reads=()):
  """Another model would range-decode the strings into garbage without noticing.

  `also_reads`: earlier fingerprints of the same bitstream (a decoder retrained on frozen
  E, hyperprior and gains reads the files the codec it started from wrote).
  """
  if hific_file.fingerprint != fingerprint and hific_file.fingerprint not in also_reads:
    raise FormatError(
        f"file was made by model '{hific_file.config_name}' "
        f"({hific_file.fingerprint.hex()}), not by this one "
        f"('{config_name}', {fingerprint.hex()})")
