"""The HiFiC encoder E, generator G and conditional discriminator D.

Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020, Fig. 2 and
Appendix A.1. Widths scale with `num_filters_base` (60 in the paper) so that the tiny configs
keep the topology; see docs/ARCHITECTURE.md for the numbers.
"""

import tensorflow as tf

from hific_tf import geometry
from hific_tf.models.hific.layers import (
  ChannelNorm,
  ResidualBlock,
  SpectralConv2D,
  conv,
  transposed_conv,
)

NUM_DOWNSAMPLINGS = geometry.NUM_DOWNSAMPLINGS  # y lives at 1/16 of the image.
DOWNSAMPLING_FACTOR = geometry.LATENT_DOWNSAMPLING


# Margins, in latents, beyond which a window's edge cannot change the output: the tail's four
# 3x3 stride-2 transposed convs and its 7x7 conv see about 2.1 latents around an output pixel;
# the encoder's convs (7x7, four 3x3 stride 2, 3x3 at 1/16) see 34 pixels, about 2.2 latents.
# Both are rounded up with a latent to spare (tests/test_codec.py checks tiled against whole).
TAIL_HALO = 4
ENCODER_HALO = 4


class Encoder(tf.keras.Sequential):
  """E: image in [0, 1] (or [-1, 1]) -> latent y at 1/16 resolution (no norm on the output).

  `padding` is the config's conv_padding ("zeros" or the PyTorch port's "reflect").
  """

  def __init__(self, num_filters_base, latent_channels, padding="zeros", name="encoder",
               dtype=None, **kwargs):
    # A bfloat16 encoder (dtype="mixed_bfloat16") only changes which latents are chosen;
    # the bits it writes decode deterministically like any others.
    policy = dict(padding=padding) if dtype is None else dict(dtype=dtype, padding=padding)
    norm = {} if dtype is None else dict(dtype=dtype)
    layers = [conv(num_filters_base, 7, **policy), ChannelNorm(**norm),
              tf.keras.layers.ReLU(**norm)]
    for i in range(NUM_DOWNSAMPLINGS):
      layers += [conv(num_filters_base * 2 ** (i + 1), 3, strides=2, **policy),
                 ChannelNorm(**norm), tf.keras.layers.ReLU(**norm)]
    layers.append(conv(latent_channels, 3, **policy))
    super().__init__(layers, name=name, **kwargs)


class Generator(tf.keras.layers.Layer):
  """G: quantized latent y_hat -> image in [0, 1] scale (no output activation, as in the paper).

  `padding` and `alignment` are the config's conv_padding and transposed_alignment.

  Nearly all of HiFiC's parameters and FLOPs are in the residual blocks at 1/16 resolution;
  they are the part worth running in bfloat16 (pass `dtype="mixed_bfloat16"`).

  `lean` (coding only) keeps the convolution weights in the compute type instead of float32
  master copies: a mixed policy casts them to that type on every call anyway, so the pixels
  are the same, while a bfloat16 G holds half the bytes and no cast copies (the paper's G at
  2048x1536: 1.1 GB peak instead of 1.7 GB, bench/codec_speed.py). ChannelNorm's few weights
  stay float32, as its statistics are. Such a G cannot train: there is no float32 copy to
  update.
  """

  def __init__(self, num_filters_base, num_residual_blocks, padding="zeros",
               alignment="keras", lean=False, name="generator", **kwargs):
    super().__init__(name=name, **kwargs)
    policy = dict(dtype=self.dtype_policy)  # Keras does not pass a policy to sublayers.
    compute = self.dtype_policy.compute_dtype
    conv_policy = dict(dtype=tf.keras.mixed_precision.Policy(compute) if lean else
                       self.dtype_policy)
    width = num_filters_base * 2 ** NUM_DOWNSAMPLINGS
    self.head = tf.keras.Sequential(
        [ChannelNorm(**policy), conv(width, 3, padding=padding, **conv_policy),
         ChannelNorm(**policy)], name="head")
    self.blocks = tf.keras.Sequential(
        [ResidualBlock(width, padding=padding, conv_dtype=conv_policy["dtype"],
                       name=f"block_{i}", **policy)
         for i in range(num_residual_blocks)], name="residual_blocks")
    tail = []
    for i in reversed(range(NUM_DOWNSAMPLINGS)):
      tail += [transposed_conv(num_filters_base * 2 ** i, alignment, **conv_policy),
               ChannelNorm(**policy), tf.keras.layers.ReLU(**policy)]
    tail.append(conv(3, 7, padding=padding, **conv_policy))
    self.tail = tf.keras.Sequential(tail, name="tail")

  def trunk(self, latent, realism_biases=None):
    """The 1/16-resolution part: head and residual blocks (nearly all FLOPs, little memory).

    `realism_biases` [B, blocks, width] (realism.py) adds one bias per block and channel.
    """
    # The cast Keras' __call__ applies, so that trunk() on its own equals call().
    head = self.head(tf.cast(latent, self.compute_dtype))
    if realism_biases is None:
      return self.blocks(head) + head  # Skip connection over all blocks.
    if not self.blocks.built:  # The blocks run one by one below, not as the Sequential.
      self.blocks.build(head.shape)
    net = head
    for index, block in enumerate(self.blocks.layers):
      net = block(net, bias=realism_biases[:, index])
    return net + head

  def upsample(self, features):
    """The full-resolution tail. Its receptive field is under TAIL_HALO latents, so it can run
    on overlapping windows of the trunk's output (the tiled decoder bounds memory this way)."""
    return self.tail(tf.cast(features, self.compute_dtype))

  def call(self, latent, realism_biases=None):
    return self.upsample(self.trunk(latent, realism_biases))


def nearest_upsample(images, factor):
  """Nearest-neighbour upsampling by an integer factor, as a broadcast and a reshape.

  The same values as UpSampling2D(interpolation="nearest"), whose gradient
  (ResizeNearestNeighborGrad) has no XLA kernel; a broadcast's gradient is a sum, which XLA
  compiles, so the training step can run under jit_compile.
  """
  shape = tf.shape(images)
  tiled = tf.broadcast_to(images[:, :, None, :, None, :],
                          [shape[0], shape[1], factor, shape[2], factor, shape[3]])
  return tf.reshape(tiled, [shape[0], shape[1] * factor, shape[2] * factor, shape[3]])


class Discriminator(tf.keras.layers.Layer):
  """D: (image in [0, 1], y_hat) -> one logit per 8x8 patch; conditional, single scale.

  The latent is compressed to a few channels, nearest-upsampled to the image size and
  concatenated, so D judges a patch knowing what the bits said about it. The caller applies
  stop_gradient to y_hat: D must not shape the latent.
  """

  def __init__(self, filters_base=64, latent_channels=12, spectral_norm=True,
               name="discriminator", **kwargs):
    # float32 under any mixed-precision policy: the spectral-norm power iteration keeps its
    # state in float32 variables, and D is a small part of a training step's cost.
    super().__init__(name=name, dtype="float32", **kwargs)
    norm = dict(normalize=spectral_norm, dtype="float32")
    self.latent_conv = SpectralConv2D(latent_channels, 3, 1, name="latent", **norm)
    self.convs = [
        SpectralConv2D(filters_base, 4, 2, name="conv_0", **norm),
        SpectralConv2D(filters_base * 2, 4, 2, name="conv_1", **norm),
        SpectralConv2D(filters_base * 4, 4, 2, name="conv_2", **norm),
        SpectralConv2D(filters_base * 8, 4, 1, name="conv_3", **norm),
    ]
    self.to_logits = SpectralConv2D(1, 4, 1, name="logits", **norm)

  def call(self, inputs, training=False):
    image, latent = (tf.cast(t, tf.float32) for t in inputs)
    latent = tf.nn.leaky_relu(self.latent_conv(latent, training=training), 0.2)
    net = tf.concat([image, nearest_upsample(latent, DOWNSAMPLING_FACTOR)], axis=-1)
    for layer in self.convs:
      net = tf.nn.leaky_relu(layer(net, training=training), 0.2)
    return self.to_logits(net, training=training)
