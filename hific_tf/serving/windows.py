"""Windows over large images: what keeps coding memory proportional to a window.

HiFiC's transforms (Mentzer et al., NeurIPS 2020) are convolutional, so a window of the image
with a halo of a few latents around its core gives the core's latents (encoder) or pixels
(generator's tail) as the whole image would, up to float rounding. Both codecs that run
transforms in this process, the SavedModel's (codec.py) and the TFLite one (tflite.py), cut
images the same way here.
"""

import numpy as np

from hific_tf import geometry
from hific_tf.errors import UsageError
from hific_tf.models.hific import networks

# Tiling: images whose padded size is over AUTO_TILE_PIXELS are encoded and decoded in
# windows of DEFAULT_TILE pixels (plus halos), so that peak memory follows the window.
# Smaller images take the whole-image path, exactly as before tiling existed. 384 rather than
# 512: hific-lo's 2048x1536 decode peaks about 130 MB lower (under 2 GiB) for 5-15% more
# time (bench/codec_speed.py --memory_variants, docs/PERFORMANCE.md).
AUTO_TILE_PIXELS = 1 << 20
DEFAULT_TILE = 384


def tile_windows(length, core, halo):
  """[(core_start, core_end, window_start, window_end)] covering range(length), in latents."""
  spans = []
  for start in range(0, length, core):
    end = min(length, start + core)
    spans.append((start, end, max(0, start - halo), min(length, end + halo)))
  return spans


def checked_tile(tile):
  """`tile` if it is None, 0 or a positive multiple of the latent downsampling."""
  if tile is not None and (tile < 0 or tile % geometry.LATENT_DOWNSAMPLING):
    raise UsageError(f"tile must be 0 or a positive multiple of "
                     f"{geometry.LATENT_DOWNSAMPLING}, got {tile}")
  return tile


def tile_core(height, width, tile, pad_multiple, scale):
  """Core window side in latents for an image of this size, or None for one whole window.

  `tile` as SavedModelCodec's: None picks it from the image size, 0 never tiles.
  """
  if tile == 0:
    return None
  padded = [geometry.round_up(side, pad_multiple) for side in (height, width)]
  if tile is None and padded[0] * padded[1] <= AUTO_TILE_PIXELS:
    return None
  core = (tile or DEFAULT_TILE) // scale
  return None if max(padded) <= core * scale else core


def analyze_in_windows(padded, encode_window, core, scale):
  """y [1, h, w, C] of a padded image from `encode_window` (uint8 window -> numpy y) run on
  windows with ENCODER_HALO latents around each core."""
  rows, cols = padded.shape[0] // scale, padded.shape[1] // scale
  y = None
  for r0, r1, wr0, wr1 in tile_windows(rows, core, networks.ENCODER_HALO):
    for c0, c1, wc0, wc1 in tile_windows(cols, core, networks.ENCODER_HALO):
      part = encode_window(padded[wr0 * scale:wr1 * scale, wc0 * scale:wc1 * scale])
      if y is None:
        y = np.empty((1, rows, cols, part.shape[-1]), np.float32)
      y[:, r0:r1, c0:c1] = part[:, r0 - wr0:r1 - wr0, c0 - wc0:c1 - wc0]
  return y


def synthesize_in_windows(features, tail_window, core, scale):
  """The uint8 image (padded size) from G's trunk output, `tail_window` (features -> uint8
  pixels) run on windows with TAIL_HALO latents around each core; `core` None: one window."""
  rows, cols = features.shape[1:3]
  core = core or max(rows, cols)
  image = np.empty((rows * scale, cols * scale, 3), np.uint8)
  for r0, r1, wr0, wr1 in tile_windows(rows, core, networks.TAIL_HALO):
    for c0, c1, wc0, wc1 in tile_windows(cols, core, networks.TAIL_HALO):
      part = tail_window(features[:, wr0:wr1, wc0:wc1])
      image[r0 * scale:r1 * scale, c0 * scale:c1 * scale] = part[
          (r0 - wr0) * scale:(r1 - wr0) * scale, (c0 - wc0) * scale:(c1 - wc0) * scale]
  return image
