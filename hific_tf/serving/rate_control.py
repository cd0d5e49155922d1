"""Coding a photo to a size: the rate that lands it on a bpp target or under a byte budget.

Every codec codes at a continuous rate (models/hific/gains.py), and a file's size grows with
it, about exponentially: log(bytes) is close to linear in the rate. So the search is a
safeguarded secant on log(bytes) (regula falsi with the Illinois step), inside a bracket that
always holds the answer: a few range codings of one y, which the encoder computes once.
JPEG's and WebP's quality searches in measure/classical.py do the same for the classical
codecs, on their integer quality scales.
"""

import dataclasses
import math

from hific_tf.errors import HificError, UsageError
from hific_tf.images import bits_per_pixel

# Range codings one photo may cost; 1% of a file's size is about 0.01 in rate, and the
# secant reaches that in 4-6 steps on photos.
MAX_PROBES = 24
# The searches aim at this share of the tolerance they promise, so that files land well
# inside it rather than on its edge; the promise itself is checked on what they found.
AIM = 0.5


class RateOutOfReachError(HificError):
  """The codec's range of rates cannot give this photo the size asked for."""


@dataclasses.dataclass
class _Probe:
  rate: float
  hific_file: object

  @property
  def size(self):
    return len(self.hific_file.to_bytes())


def _search(code, rate_range, goal_bytes, accept):
  """Probes until `accept(bytes)`; returns (the accepted probe or None, every probe)."""
  probes = []

  def probe(rate):
    probes.append(_Probe(rate, code(rate)))
    return probes[-1]

  low, high = probe(rate_range[0]), probe(rate_range[1])
  if accept(low.size) or goal_bytes <= low.size:
    return (low if accept(low.size) else None), probes
  if accept(high.size) or goal_bytes >= high.size:
    return (high if accept(high.size) else None), probes
  error = lambda p: math.log(p.size) - math.log(goal_bytes)
  low_error, high_error = error(low), error(high)
  side = 0
  while len(probes) < MAX_PROBES:
    rate = (low.rate * high_error - high.rate * low_error) / (high_error - low_error)
    if not low.rate < rate < high.rate:
      rate = (low.rate + high.rate) / 2.
    middle = probe(rate)
    if accept(middle.size):
      return middle, probes
    middle_error = error(middle)
    if middle_error < 0:
      low, low_error = middle, middle_error
      if side == -1:  # Illinois: the end that stayed put twice counts half.
        high_error /= 2.
      side = -1
    else:
      high, high_error = middle, middle_error
      if side == 1:
        low_error /= 2.
      side = 1
    if high.rate - low.rate < 1e-5:
      break
  return None, probes


def _coder(codec, image, effort):
  """rate -> HificFile of `image`: one encoding range-coded at each rate where the codec
  gives its latents (the codec SavedModel), else a whole compress per rate (the stock-op and
  TFLite clients). The rate is searched with E's latents; `effort` then runs once, at the
  rate found (`_with_effort`)."""
  if not codec.takes_rate:
    codec.checked_rate(1.)  # The one-line refusal of codecs fixed at one rate.
  if hasattr(codec, "code_latents"):
    y = codec.latents(image)
    return lambda rate: codec.code_latents(y, image.shape, rate)
  if effort:
    raise UsageError("--effort needs a codec with weights (it searches through the Keras model)")
  return lambda rate: codec.compress(image, rate=rate)


def _with_effort(codec, image, probe, effort, deadline, progress):
  """The file of the latent search at the probe's rate: it never has more bytes than E's
  (SavedModelCodec.compress), so a size the rate search met still holds."""
  if not effort:
    return probe.hific_file
  return codec.compress(image, effort=effort, deadline=deadline, progress=progress,
                        rate=probe.rate)


def compress_to_bpp(codec, image, target_bpp, tolerance=0.02, effort=0, deadline=None,
                    progress=None):
  """The file of `image` whose bits per pixel (container included) are within `tolerance`
  (relative) of `target_bpp`; RateOutOfReachError when the codec's rates cannot get there."""
  if not target_bpp > 0:
    raise UsageError("--target_bpp must be positive")
  height, width = image.shape[:2]
  goal = target_bpp * height * width / 8.
  found, probes = _search(_coder(codec, image, effort),
                          codec.rate_range, goal,
                          lambda size: abs(size - goal) <= AIM * tolerance * goal)
  closest = found or min(probes, key=lambda p: abs(p.size - goal))
  if abs(closest.size - goal) <= tolerance * goal:
    return _with_effort(codec, image, closest, effort, deadline, progress)
  reach = sorted(bits_per_pixel(p.size, height, width) for p in probes)
  if reach[0] < target_bpp < reach[-1]:
    raise RateOutOfReachError(
        f"{target_bpp:g} bpp: the nearest of {len(probes)} rates gives "
        f"{bits_per_pixel(closest.size, height, width):.4f} bpp, more than "
        f"{100 * tolerance:g}% away")
  raise RateOutOfReachError(
      f"{target_bpp:g} bpp is outside this codec's reach on this image "
      f"({reach[0]:.3f} to {reach[-1]:.3f} bpp over rates {codec.rate_range[0]:g} to "
      f"{codec.rate_range[1]:g})")


def compress_to_bytes(codec, image, max_bytes, tolerance=0.03, effort=0, deadline=None,
                      progress=None):
  """The largest file of `image` no larger than `max_bytes` (within `tolerance` of it when
  the codec's top rate is larger); RateOutOfReachError when even the lowest rate is over."""
  if not max_bytes > 0:
    raise UsageError("--max_bytes must be positive")
  found, probes = _search(_coder(codec, image, effort),
                          codec.rate_range, (1. - AIM * tolerance / 2) * max_bytes,
                          lambda size: (1. - AIM * tolerance) * max_bytes <= size <= max_bytes)
  if found is not None:
    return _with_effort(codec, image, found, effort, deadline, progress)
  fitting = [p for p in probes if p.size <= max_bytes]
  if not fitting:
    smallest = min(p.size for p in probes)
    raise RateOutOfReachError(
        f"{max_bytes} bytes is below this codec's smallest file for this image ({smallest} "
        f"bytes at rate {codec.rate_range[0]:g})")
  return _with_effort(codec, image, max(fitting, key=lambda p: p.size), effort, deadline,
                      progress)
