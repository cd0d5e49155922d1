"""Classical codecs to compare HiFiC against, each searched to land on a requested bitrate.

JPEG, WebP and AVIF through Pillow; HEIC through pillow-heif with x265 (HEVC intra, the nearest
relative of BPG, which the HiFiC paper compares against and no package index carries); JPEG XL
through imagecodecs (libjxl). Rates are real: 8 x encoded file bytes / pixels.

Rate matching rule (per image and codec): every codec has one quality knob whose rate is
monotone in it. A bisection over the knob (integers, or 1/100 steps for JPEG XL's distance)
finds the two settings that bracket the requested bpp; the one whose rate is nearer the target
wins. A result further than 10% from the target is kept but flagged `in_range=False` (the codec
cannot reach that rate on that image, e.g. JPEG below ~0.2 bpp).
"""

import dataclasses
import io

import numpy as np
from PIL import Image

from hific_tf import images as images_lib
from hific_tf.errors import UsageError

RATE_TOLERANCE = 0.10


@dataclasses.dataclass(frozen=True)
class ClassicalCodec:
  name: str
  low: float           # Knob value giving the lowest rate.
  high: float          # Knob value giving the highest rate.
  step: float          # Resolution of the knob.
  encode_fn: callable
  decode_fn: callable

  @property
  def positions(self):
    """Number of knob steps from the lowest-rate setting to the highest."""
    return int(round(abs(self.high - self.low) / self.step))

  def knob_at(self, position):
    """Knob value `position` steps from the lowest-rate end."""
    return self.low + (1 if self.high > self.low else -1) * position * self.step

  def encode(self, image, knob):
    return self.encode_fn(np.ascontiguousarray(image), knob)

  def decode(self, data):
    return np.asarray(self.decode_fn(data))[..., :3]


def _pillow(format_name, **options):
  def encode(image, quality):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format_name, quality=int(round(quality)),
                                **options)
    return buffer.getvalue()

  def decode(data):
    with Image.open(io.BytesIO(data)) as decoded:
      return np.asarray(decoded.convert("RGB"))
  return encode, decode


def _heic():
  import pillow_heif

  def encode(image, quality):
    heif = pillow_heif.from_bytes(mode="RGB", size=(image.shape[1], image.shape[0]),
                                  data=image.tobytes())
    buffer = io.BytesIO()
    heif.save(buffer, quality=int(round(quality)), chroma=420)
    return buffer.getvalue()

  def decode(data):
    decoded = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    return np.asarray(decoded.to_pillow().convert("RGB"))
  return encode, decode


def _jxl():
  import imagecodecs

  def encode(image, distance):
    return bytes(imagecodecs.jpegxl_encode(image, distance=float(distance), effort=7))

  def decode(data):
    return imagecodecs.jpegxl_decode(data)
  return encode, decode


def get_codec(name):
  """The codec called `name` (jpeg, webp, avif, heic, jxl)."""
  if name == "jpeg":
    return ClassicalCodec("jpeg", 1, 95, 1, *_pillow("JPEG", subsampling="4:2:0"))
  if name == "webp":
    return ClassicalCodec("webp", 0, 100, 1, *_pillow("WEBP", method=6))
  if name == "avif":
    return ClassicalCodec("avif", 0, 100, 1, *_pillow("AVIF", speed=6))
  if name == "heic":
    return ClassicalCodec("heic", 0, 100, 1, *_heic())
  if name == "jxl":
    return ClassicalCodec("jxl", 25., 0.1, 0.01, *_jxl())  # Butteraugli distance: lower=better.
  raise UsageError(f"unknown codec '{name}' (known: {', '.join(CODECS)})")


CODECS = ("jpeg", "webp", "avif", "heic", "jxl")


@dataclasses.dataclass
class RateMatch:
  codec: str
  knob: float
  data: bytes
  bpp: float
  target_bpp: float

  @property
  def in_range(self):
    return abs(self.bpp - self.target_bpp) <= RATE_TOLERANCE * self.target_bpp


def _encode_at(codec, image, position, target_bpp):
  knob = float(codec.knob_at(position))
  data = codec.encode(image, knob)
  bpp = images_lib.bits_per_pixel(len(data), *image.shape[:2])
  return position, RateMatch(codec.name, knob, data, bpp, target_bpp)


def _bisect(codec, image, target_bpp):
  """(position, RateMatch) nearest to `target_bpp`, positions counted from the lowest rate."""
  a, lo = _encode_at(codec, image, 0, target_bpp)
  b, hi = _encode_at(codec, image, codec.positions, target_bpp)
  if lo.bpp >= target_bpp:
    return a, lo
  if hi.bpp <= target_bpp:
    return b, hi
  while b - a > 1:
    middle, result = _encode_at(codec, image, (a + b) // 2, target_bpp)
    if result.bpp <= target_bpp:
      a, lo = middle, result
    else:
      b, hi = middle, result
  return min(((a, lo), (b, hi)), key=lambda pair: abs(pair[1].bpp - target_bpp))


def match_rate(codec, image, target_bpp):
  """Bisects `codec`'s knob for the encoding of `image` nearest to `target_bpp`."""
  return _bisect(codec, image, target_bpp)[1]


def match_size(codec, image, max_bytes):
  """The highest-quality encoding no larger than `max_bytes` (for same-file-size pictures)."""
  target_bpp = images_lib.bits_per_pixel(max_bytes, *image.shape[:2])
  position, match = _bisect(codec, image, target_bpp)
  while len(match.data) > max_bytes and position > 0:
    position, match = _encode_at(codec, image, position - 1, target_bpp)
  return match


def at_equal_size(image, max_bytes, names):
  """{name: (decoded image, file bytes)}: each codec's best encoding no larger than max_bytes.

  What "the same number of bytes" means everywhere a picture is shown beside HiFiC's (the
  demo, the web page): the classical codec may not spend more than HiFiC's whole file.
  """
  results = {}
  for name in names:
    codec = get_codec(name)
    match = match_size(codec, image, max_bytes)
    results[name] = (codec.decode(match.data), len(match.data))
  return results
