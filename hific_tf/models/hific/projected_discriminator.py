"""A discriminator on frozen ImageNet features: the decoder stage's D on a CPU budget.

Sauer, Chitta, Müller, Geiger, "Projected GANs Converge Faster", NeurIPS 2021. D does not
learn its own features from pixels: it judges the feature maps of a frozen pretrained network,
each behind a fixed random 1x1 projection, with a small trainable head per scale. The maps are
the five AlexNet (or VGG) activations the LPIPS loss already computes for both the photo and
the reconstruction, so D adds only its heads to a step.

Why: HiFiC's conditional PatchGAN, learning from pixels, stayed at chance for hundreds of
decoder-stage steps on small-lo (spectrally normalised or not, with DiffAugment or without),
and alone on cached crops it needed 50+ steps before it told them apart. Heads on these
features separate held-out crops within 10 steps (bench/discriminators.py).

As in HiFiC's D, the head is conditional: y_hat, squeezed by a 1x1 convolution, is resized
(nearest) to each feature map and concatenated, so a patch is judged knowing what the bits
said about it. The caller stops y_hat's gradient.
"""

import math

import tensorflow as tf

PROJECTION_CHANNELS = 64
HEAD_CHANNELS = 128
LATENT_CHANNELS = 16
PROJECTION_SEED = 20211206  # Fixed: the projections are part of D's definition, not weights.


class _Head(tf.keras.layers.Layer):
  """One scale: fixed projection, y_hat beside it, 3x3 conv, 1x1 conv to logits."""

  def __init__(self, channels, index, **kwargs):
    super().__init__(dtype="float32", **kwargs)
    # Random but fixed (Projected GANs' cross-channel mixing without its training): the same
    # projection after every restart, so a resumed run's heads see what they were trained on.
    self.projection = tf.random.stateless_normal(
        [1, 1, channels, PROJECTION_CHANNELS], [PROJECTION_SEED, index]) / math.sqrt(channels)
    self.latent = tf.keras.layers.Conv2D(LATENT_CHANNELS, 1, dtype="float32", name="latent")
    self.hidden = tf.keras.layers.Conv2D(HEAD_CHANNELS, 3, padding="same", dtype="float32",
                                         name="hidden")
    self.to_logits = tf.keras.layers.Conv2D(1, 1, dtype="float32", name="logits")

  def call(self, feature, latent):
    net = tf.nn.conv2d(tf.cast(feature, tf.float32), self.projection, 1, "VALID")
    latent = tf.nn.leaky_relu(self.latent(latent), 0.2)
    latent = tf.image.resize(latent, tf.shape(net)[1:3], method="nearest")
    net = tf.nn.leaky_relu(self.hidden(tf.concat([net, latent], axis=-1)), 0.2)
    return self.to_logits(net)


class ProjectedDiscriminator(tf.keras.layers.Layer):
  """(feature maps, y_hat) -> a list of logit maps, one per feature scale."""

  def __init__(self, feature_channels, name="discriminator", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.heads = [_Head(channels, index, name=f"head_{index}")
                  for index, channels in enumerate(feature_channels)]

  def call(self, inputs, training=False):
    del training  # No state that differs between training and inference.
    features, latent = inputs
    latent = tf.cast(latent, tf.float32)
    return [head(feature, latent) for head, feature in zip(self.heads, features)]

  def build_for(self, latent_channels):
    """Creates the heads' variables from the channel counts alone (any spatial size)."""
    latent = tf.zeros([1, 2, 2, latent_channels])
    self(([tf.zeros([1, 4, 4, head.projection.shape[2]]) for head in self.heads], latent))
