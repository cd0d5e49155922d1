"""The realism knob: one decoder for every trade-off between distortion and realism.

Agustsson, Minnen, Toderici, Mentzer, "Multi-Realism Image Compression with a Conditional
Generator" (MRIC), CVPR 2023. The realism R in [0, 1] enters the generator as Fourier features,
a small MLP and a per-channel bias added inside each residual block. Training draws R per
example and scales the adversarial term by R, so R = 0 is the distortion decoder (MSE +
LPIPS) and R = 1 the full GAN decoder; the bitstream never sees R, so one file decodes at any
R.

The last layer starts at zero: a decoder grown from a codec without the knob computes exactly
that codec's pixels at every R until training moves it.
"""

import math

import tensorflow as tf

NUM_FREQUENCIES = 8
HIDDEN_UNITS = 64


def fourier_features(realism, frequencies=NUM_FREQUENCIES):
  """[B] -> [B, 2F + 1]: R with sines and cosines at 2^k pi, so a small MLP can bend sharply."""
  realism = tf.cast(tf.reshape(realism, [-1, 1]), tf.float32)
  angles = realism * (math.pi * 2. ** tf.range(frequencies, dtype=tf.float32))[None]
  return tf.concat([realism, tf.sin(angles), tf.cos(angles)], axis=-1)


class RealismConditioning(tf.keras.layers.Layer):
  """R [B] -> per-channel biases [B, blocks, width] for G's residual blocks.

  Kept outside the generator so that a codec without the knob has the same generator weights
  (and stored keys) as one with it; float32 under any policy, it is a few thousand FLOPs.
  """

  def __init__(self, num_blocks, width, name="realism", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.num_blocks = num_blocks
    self.width = width
    self.hidden = [tf.keras.layers.Dense(HIDDEN_UNITS, activation="relu", dtype="float32",
                                         name=f"hidden_{i}") for i in range(2)]
    self.to_biases = tf.keras.layers.Dense(num_blocks * width, kernel_initializer="zeros",
                                           dtype="float32", name="to_biases")

  def call(self, realism):
    net = fourier_features(realism)
    for layer in self.hidden:
      net = layer(net)
    return tf.reshape(self.to_biases(net), [-1, self.num_blocks, self.width])

