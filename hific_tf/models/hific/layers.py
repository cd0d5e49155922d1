"""Building blocks of the HiFiC transforms.

Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020: every conv of the
encoder and generator is followed by ChannelNorm, a per-pixel normalisation over channels that,
unlike instance or batch norm, does not depend on image size or batch and so keeps the
generator's output the same for a crop and for the full image.
"""

import contextlib

import tensorflow as tf


def channel_norm(inputs, gamma, beta, epsilon):
  """ChannelNorm's arithmetic in float32 (the official code's: variance over C-1, around a
  stop-gradient mean)."""
  x = tf.cast(inputs, tf.float32)
  channels = tf.cast(tf.shape(x)[-1], tf.float32)
  mean = tf.reduce_mean(x, axis=-1, keepdims=True)
  variance = tf.reduce_sum(
      tf.math.squared_difference(x, tf.stop_gradient(mean)), axis=-1,
      keepdims=True) / (channels - 1.)
  normalized = (x - mean) * tf.math.rsqrt(variance + epsilon)
  return normalized * gamma + beta


# The same arithmetic as one XLA kernel: unfused it is eight passes over the widest tensors of
# E and G's tail, fused one. Alone, a full-resolution 24-channel ChannelNorm and ReLU ran 2-3x
# faster so; within a whole training step the gain is small but steady (a Xeon with AMX, side
# by side: small-hific-lo step 2-6% faster in float32 and in bfloat16, bench/train_speed.py).
# Training traces its step once per run, so it uses it (`fused_norms`). Coding does not: XLA
# compiles each kernel for each new image size, which added 2-4 s to the first encode of a
# fresh `hific compress` for 0-5% afterwards (bench/codec_speed.py --norm_variants), and
# stock TF Serving and TFLite run no XLA kernels.
_fused_channel_norm = tf.function(channel_norm, jit_compile=True)
_FUSED = [False]


@contextlib.contextmanager
def fused_norms():
  """While tracing in this context, ChannelNorm runs as one XLA kernel (training steps)."""
  before = _FUSED[0]
  _FUSED[0] = True
  try:
    yield
  finally:
    _FUSED[0] = before


class ChannelNorm(tf.keras.layers.Layer):
  """Normalises each pixel over its channels, then applies a learned per-channel affine map.

  As in the official code: the variance divides by C-1 (unbiased) and is taken around a
  stop-gradient mean, epsilon is 1e-3. Statistics are computed in float32 even under a
  bfloat16 policy, because a sum of squares over 960 channels loses too much in 8 mantissa bits.
  In graphs traced under `fused_norms()` the arithmetic runs as one XLA kernel.
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
    # In graphs only (a training step is one); eagerly, every new image size would be a new
    # trace.
    fused = _FUSED[0] and not tf.executing_eagerly()
    normalize = _fused_channel_norm if fused else channel_norm
    outputs = normalize(inputs, tf.cast(self.gamma, tf.float32),
                        tf.cast(self.beta, tf.float32), self.epsilon)
    return tf.cast(outputs, self.compute_dtype)

  def get_config(self):
    return dict(super().get_config(), epsilon=self.epsilon)


def mirror_pad(inputs, top, bottom, left, right):
  """Reflection padding of [B, H, W, C] (torch's "reflect": the edge row is not repeated).

  tf.pad's REFLECT needs every pad to be smaller than the side; gathering with mirrored
  indexes gives the same values wherever it works and still pads a side of 1 (by repeating
  it), so a tiny image goes through a reflect-padded network instead of failing.
  """
  def indexes(size, before, after):
    period = tf.maximum(2 * (size - 1), 1)
    position = tf.math.floormod(tf.range(-before, size + after), period)
    return tf.where(position < size, position, period - position)

  shape = tf.shape(inputs)
  padded = tf.gather(inputs, indexes(shape[1], top, bottom), axis=1)
  return tf.gather(padded, indexes(shape[2], left, right), axis=2)


class MirrorPad(tf.keras.layers.Layer):
  """`mirror_pad` by `margin` on every side, as a layer (no variables)."""

  def __init__(self, margin, **kwargs):
    super().__init__(**kwargs)
    self.margin = margin

  def call(self, inputs):
    return mirror_pad(inputs, *(self.margin,) * 4)

  def get_config(self):
    return dict(super().get_config(), margin=self.margin)


class ReflectConv2D(tf.keras.layers.Conv2D):
  """A Conv2D on a reflect-padded input, as the PyTorch port of HiFiC pads E and G.

  Stride 1 pads (k - 1) / 2 on every side; stride 2 (E's 3x3 downsampling convs) pads one row
  at the top and one column at the right, where Keras' "same" pads zeros at the bottom and
  right. The variables are a Conv2D's, so weights and fingerprints do not depend on padding.
  """

  def __init__(self, filters, kernel_size, strides=1, **kwargs):
    super().__init__(filters, kernel_size, strides=strides, padding="valid", **kwargs)

  def call(self, inputs):
    if self.strides[0] == 1:
      margin = (self.kernel_size[0] - 1) // 2
      padded = mirror_pad(inputs, margin, margin, margin, margin)
    else:
      padded = mirror_pad(inputs, 1, 0, 0, 1)
    return super().call(padded)


def conv(filters, kernel_size, strides=1, padding="zeros", **kwargs):
  """The one conv of the encoder and generator: Keras' same padding, or `ReflectConv2D`."""
  if padding == "reflect":
    return ReflectConv2D(filters, kernel_size, strides=strides, **kwargs)
  return tf.keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", **kwargs)


class TorchAlignedConv2DTranspose(tf.keras.layers.Conv2DTranspose):
  """A 3x3 stride-2 transposed conv placed as torch's (padding=1, output_padding=1).

  Input i reaches outputs 2i - 1 .. 2i + 1 there, and 2i .. 2i + 2 in Keras' "same": the
  "valid" transposed conv (2n + 1 outputs, input i at 2i .. 2i + 2) without its first row and
  column is torch's. Same kernel variable ([3, 3, out, in]) as Conv2DTranspose.
  """

  def __init__(self, filters, **kwargs):
    super().__init__(filters, 3, strides=2, padding="valid", **kwargs)

  def call(self, inputs):
    return super().call(inputs)[:, 1:, 1:, :]


def transposed_conv(filters, alignment="keras", **kwargs):
  """G's 3x3 stride-2 upsampling conv, aligned as Keras' "same" or as torch's."""
  if alignment == "torch":
    return TorchAlignedConv2DTranspose(filters, **kwargs)
  return tf.keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", **kwargs)


class SubpixelConv2DTranspose(tf.keras.layers.Conv2DTranspose):
  """A 3x3 stride-2 same-padded transposed conv computed as a 2x2 conv and depth_to_space.

  The same layer as Keras' Conv2DTranspose(filters, 3, strides=2, padding="same"): the same
  kernel variable ([3, 3, filters, in]), the same bias, the same sums. TensorFlow runs a
  transposed conv as the input gradient of a conv, which in bfloat16 on a CPU without AMX
  runs at a fraction of a forward conv's speed (120->60 channels at 768x512: 6.7 s against
  0.86 s for this formulation, measured side by side with bench/transposed_conv.py of
  hific_tf 0.1.0). Each output pixel
  (2i + a, 2j + b) only sees inputs i - 1..i and j - 1..j, so a 2x2 conv over the input padded
  by one row and column at the top and left, with 4 x filters outputs (one group per phase
  (a, b)), followed by depth_to_space gives the same values in a different summation order:
  float rounding differs, the function does not.
  """

  def __init__(self, filters, **kwargs):
    super().__init__(filters, 3, strides=2, padding="same", **kwargs)

  @staticmethod
  def phase_kernel(kernel):
    """[3, 3, out, in] -> [2, 2, in, 4 * out]: phase (a, b) at tap (dy, dx) takes kernel row
    a + 2 (1 - dy), column b + 2 (1 - dx), or zeros where that falls outside the 3x3."""
    kernel = tf.transpose(kernel, [0, 1, 3, 2])  # [3, 3, in, out]
    zero = tf.zeros_like(kernel[0, 0])
    def tap(a, dy, b, dx):
      row, col = a + 2 * (1 - dy), b + 2 * (1 - dx)
      return kernel[row, col] if row < 3 and col < 3 else zero
    phases = tf.stack([tf.stack([tf.stack([tap(a, dy, b, dx) for a in (0, 1) for b in (0, 1)],
                                          axis=-2) for dx in (0, 1)]) for dy in (0, 1)])
    shape = tf.shape(kernel)
    return tf.reshape(phases, [2, 2, shape[2], 4 * shape[3]])

  @staticmethod
  def subpixel(x, phase_kernel):
    """The transposed conv's values from `phase_kernel(kernel)`: x padded by one row and
    column at the top and left, the 2x2 conv, then depth_to_space."""
    padded = tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]])
    return tf.nn.depth_to_space(tf.nn.conv2d(padded, phase_kernel, 1, "VALID"), 2)

  def call(self, inputs):
    kernel = tf.cast(self.kernel, inputs.dtype)

    @tf.custom_gradient
    def transposed_conv(x, k):
      y = self.subpixel(x, self.phase_kernel(k))

      def gradients(dy):
        # Those of the transposed conv itself (TensorFlow's Conv2DBackpropInput gradient):
        # a stride-2 forward conv for the input, a filter gradient for the kernel. Both run
        # fast; the 2x2 conv's own input gradient would be the slow op again.
        dx = tf.nn.conv2d(dy, k, 2, "SAME")
        dk = tf.raw_ops.Conv2DBackpropFilter(input=dy, filter_sizes=tf.shape(k),
                                             out_backprop=x, strides=[1, 2, 2, 1],
                                             padding="SAME")
        return dx, dk
      return y, gradients

    return tf.nn.bias_add(transposed_conv(inputs, kernel), tf.cast(self.bias, inputs.dtype))


class ResidualBlock(tf.keras.layers.Layer):
  """Conv-ChannelNorm-ReLU-Conv-ChannelNorm plus identity, at constant width."""

  def __init__(self, filters, padding="zeros", conv_dtype=None, **kwargs):
    """`conv_dtype`: the convolutions' own policy (Generator's `lean`), else the block's."""
    super().__init__(**kwargs)
    self.filters = filters
    self.padding = padding
    policy = dict(dtype=self.dtype_policy)  # Keras does not pass a policy to sublayers.
    conv_policy = dict(dtype=conv_dtype or self.dtype_policy)
    self.body = tf.keras.Sequential([
        conv(filters, 3, padding=padding, **conv_policy), ChannelNorm(**policy),
        tf.keras.layers.ReLU(**policy),
        conv(filters, 3, padding=padding, **conv_policy), ChannelNorm(**policy),
    ], name="body")

  def call(self, inputs, bias=None):
    """`bias` [B, C] (the realism knob's, realism.py) is added to the body's input."""
    if bias is None:
      return inputs + self.body(inputs)
    return inputs + self.body(inputs + tf.cast(bias, inputs.dtype)[:, None, None, :])

  def get_config(self):
    return dict(super().get_config(), filters=self.filters, padding=self.padding)


class SpectralConv2D(tf.keras.layers.Conv2D):
  """A same-padded Conv2D whose kernel is divided by its largest singular value.

  Miyato et al.'s spectral normalization as in compare_gan (which the official HiFiC code
  uses): sigma comes from one power iteration per training call, the gradient flows through
  kernel / sigma with u and v held constant. Keras' built-in SpectralNormalization instead
  assigns kernel / sigma back into the trainable kernel during the forward pass, which would
  make every call of D in training mode (including the generator's step) change D's weights.
  """

  def __init__(self, filters, kernel_size, strides=1, normalize=True, **kwargs):
    """`normalize` False: a plain conv with the same variables (the decoder stage's D, whose
    spectrally normalised version stayed at chance for hundreds of CPU steps)."""
    kwargs.setdefault("kernel_initializer", tf.keras.initializers.RandomNormal(stddev=0.02))
    super().__init__(filters, kernel_size, strides=strides, padding="same", **kwargs)
    self.normalize = normalize

  def build(self, input_shape):
    super().build(input_shape)
    # MEAN aggregation: every replica computes the same u from the same kernel.
    self.power_iteration_u = self.add_weight(
        name="power_iteration_u", shape=(1, self.filters),
        initializer=tf.keras.initializers.RandomNormal(), trainable=False,
        aggregation=tf.VariableAggregation.MEAN)

  def normalized_kernel(self, training):
    if not self.normalize:
      return self.kernel
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
