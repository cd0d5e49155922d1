"""A trained generator's colour cast, measured on training photos and taken out of its bias.

HiFiC (Mentzer et al., NeurIPS 2020) trains G against MSE, LPIPS and a GAN. LPIPS barely sees
a uniform shift of a colour channel and the GAN term pushes G's output around while D
adapts, so a stage-2 run ends with G's output off by a constant per channel, wherever the
last steps left it: the bundled rungs decoded every photo, training or held-out, with the same
sign of error (small-mi: about -6 levels of 255 in red and green; small-lo: about +5 in green
and blue), up to half the MSE of a photo. The paper's MSE weight is too small to pull it back
within a run of a few thousand steps.

G's last layer is a convolution with a bias, so a constant per channel is exactly what that
bias adds: the least-squares constant (the mean residual over the photos' pixels) goes into
it, and nothing else changes. Encoder, hyperprior and bitstreams stay as they were. It is
measured on training photos only; the held-out photos then judge it (bin/bundle_codec.py).
"""

import numpy as np
import tensorflow as tf

from hific_tf import images as images_lib
from hific_tf.errors import UsageError


def _decoded(model, image):
  """uint8 [H, W, 3] as the codec decodes it: the codec contract's own analyze, y quantized
  as it is coded at rate 0 (the gains included), and synthesize (G, cropped and rounded)."""
  y_hat = model.hyperprior(model.analyze(tf.constant(image)), training=False,
                           log_gain=model.log_gain()).y_hat
  return model.synthesize(y_hat, image.shape[:2]).numpy()


def colour_offset(model, image_files):
  """The mean of (photo - decoded photo) per channel over every pixel, in levels of 255."""
  total, pixels = np.zeros(3), 0
  for path in image_files:
    image = images_lib.load_rgb(path)
    residual = image.astype(np.float64) - _decoded(model, image)
    total += residual.reshape(-1, 3).sum(axis=0)
    pixels += residual.shape[0] * residual.shape[1]
  if not pixels:
    raise UsageError("no photos to measure the colour offset on")
  return total / pixels


def remove_colour_offset(model, offset):
  """Adds `offset` (levels of 255, per channel) to the bias of G's last convolution."""
  if model.config.input_range != "unit":
    raise UsageError("the colour offset goes into G's last bias only when G's output is the "
                     "image (input_range \"unit\")")
  bias = model.generator.tail.layers[-1].bias
  bias.assign_add(tf.cast(np.asarray(offset) / 255., bias.dtype))
