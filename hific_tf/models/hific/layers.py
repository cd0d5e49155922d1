"""Building blocks of the HiFiC transforms.

Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020: every conv of the
encoder and generator is followed by ChannelNorm, a per-pixel normalisation over channels that,
unlike instance or batch norm, does not depend on image size or batch and so keeps the
generator's output the same for a crop and for the full image.
"""

import tensorflow as tf


class ChannelNorm(tf.keras.layers.Layer):
  """Normalises each pixel over its channels, then applies a learned per-channel affine map.

  As in the official code: the variance divides by C-1 (unbiased) and is taken around a
  stop-gradient mean, epsilon is 1e-3. Statistics are computed in float32 even under a
  bfloat16 policy, because a sum of squares over 960 channels loses too much in 8 mantissa bits.
  """

  def __init__(self, epsilon=1e-3, **kwargs):
    super().__init__(**kwargs)
    self.epsilon = epsilon

  def build(self, input_shape):
    channels = int(input_shape[-1])
    if channels < 2:
      raise ValueError("ChannelNorm needs at least 2 channels (variance divides by C-1)")
    self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
    self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
    super().build(input_shape)

  def call(self, inputs):
    x = tf.cast(inputs, tf.float32)
    channels = tf.cast(tf.shape(x)[-1], tf.float32)
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_sum(
        tf.math.squared_difference(x, tf.stop_gradient(mean)), axis=-1,
        keepdims=True) / (channels - 1.)
    normalized = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
    outputs = normalized * tf.cast(self.gamma, tf.float32) + tf.cast(self.beta, tf.float32)
    return tf.cast(outputs, self.compute_dtype)

  def get_config(self):
    return dict(super().get_config(), epsilon=self.epsilon)


def conv(filters, kernel_size, strides=1, **kwargs):
  """A same-padded Conv2D, the only kind the encoder and generator use."""
  return tf.keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", **kwargs)


class ResidualBlock(tf.keras.layers.Layer):
  """Conv-ChannelNorm-ReLU-Conv-ChannelNorm plus identity, at constant width."""

  def __init__(self, filters, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    policy = dict(dtype=self.dtype_policy)  # Keras does not pass a policy to sublayers.
    self.body = tf.keras.Sequential([
        conv(filters, 3, **policy), ChannelNorm(**policy), tf.keras.layers.ReLU(**policy),
        conv(filters, 3, **policy), ChannelNorm(**policy),
    ], name="body")

  def call(self, inputs):
    return inputs + self.body(inputs)

  def get_config(self):
    return dict(super().get_config(), filters=self.filters)


class SpectralConv2D(tf.keras.layers.Conv2D):
  """A same-padded Conv2D whose kernel is divided by its largest singular value.

  Miyato et al.'s spectral normalization as in compare_gan (which the official HiFiC code
  uses): sigma comes from one power iteration per training call, the gradient flows through
  kernel / sigma with u and v held constant. Keras' built-in SpectralNormalization instead
  assigns kernel / sigma back into the trainable kernel during the forward pass, which would
  make every call of D in training mode (including the generator's step) change D's weights.
  """

  def __init__(self, filters, kernel_size, strides=1, **kwargs):
    kwargs.setdefault("kernel_initializer", tf.keras.initializers.RandomNormal(stddev=0.02))
    super().__init__(filters, kernel_size, strides=strides, padding="same", **kwargs)

  def build(self, input_shape):
    super().build(input_shape)
    # MEAN aggregation: every replica computes the same u from the same kernel.
    self.power_iteration_u = self.add_weight(
        name="power_iteration_u", shape=(1, self.filters),
        initializer=tf.keras.initializers.RandomNormal(), trainable=False,
        aggregation=tf.VariableAggregation.MEAN)

  def normalized_kernel(self, training):
    matrix = tf.reshape(self.kernel, [-1, self.filters])
    v = tf.math.l2_normalize(tf.matmul(self.power_iteration_u, matrix, transpose_b=True))
    u = tf.math.l2_normalize(tf.matmul(v, matrix))
    u, v = tf.stop_gradient(u), tf.stop_gradient(v)
    if training:
      self.power_iteration_u.assign(u)
    sigma = tf.matmul(tf.matmul(v, matrix), u, transpose_b=True)[0, 0]
    return self.kernel / sigma

  def call(self, inputs, training=False):
    outputs = self.convolution_op(inputs, self.normalized_kernel(training))
    return tf.nn.bias_add(outputs, self.bias)
