"""The mean-scale hyperprior of HiFiC on tensorflow-compression 2.x.

Minnen, Ballé, Toderici, "Joint Autoregressive and Hierarchical Priors for Learned Image
Compression", NeurIPS 2018 (mean and scale from a hyper-latent, without the context model), as
used by Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020.

y (latent at 1/16) --analysis--> z (at 1/64), coded with a factorized prior;
z_hat --synthesis_mean--> mu, --synthesis_scale--> scale index; y is coded with a Gaussian of
that mean and one of 64 log-spaced scales (0.11 to 256). The scale synthesis predicts a
continuous index into that table (tfc 2.x's LocationScaleIndexedEntropyModel), rounded to the
nearest table entry when coding; the official TF1 code predicted the scale itself.

Everything here runs in float32 whatever the global mixed-precision policy is: the encoder and
decoder must derive bit-identical scale indexes and means from z_hat, or the range decoder
desynchronises.

Rate control (Cui et al., "Asymmetric Gained Deep Image Compression With Continuous Rate
Adaptation", CVPR 2021): every entry point takes an optional per-channel `log_gain`. y is
multiplied by the gain before quantization and divided by it after, so the quantization step
of channel c is 1 / gain_c. z is analysed from y itself, and the mean and scale the
hyper-synthesis predicts for y are multiplied by the gain (a shift of the log-spaced scale
index), so the entropy model describes the gained y exactly: a gain of 1 is the model's own
rate, and any other gain codes correctly before gains are trained.
"""

import collections
import logging

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from hific_tf import geometry
from hific_tf.models.hific.layers import MirrorPad


class _OffsetHeuristicNotice(logging.Filter):
  """Drops tfc's notice about the quantization-offset heuristic inside a tf.function.

  The quantized-rate estimate in every training step needs the factorized prior's offsets,
  which move as the prior trains; recomputing them per step is intended here (cheap for a
  factorized prior), so the notice would only repeat on every trace.
  """

  def filter(self, record):
    return "offset heuristic" not in record.getMessage()


logging.getLogger("absl").addFilter(_OffsetHeuristicNotice())

# What a forward pass tells the loss: quantized latent (straight-through) and bits per image.
HyperpriorOutput = collections.namedtuple(
    "HyperpriorOutput", "y_hat y_bits_noisy z_bits_noisy y_bits_quantized z_bits_quantized")

# What a compression pass hands to the container: one string per image for y and for z.
Compressed = collections.namedtuple(
    "Compressed", "y_strings z_strings y_shape z_shape")


# z is at 1/4 of y: two stride-2 convs in HyperAnalysis.
DOWNSAMPLING_FACTOR = geometry.SIDE_DOWNSAMPLING


def inverse_rdft_basis(height, width):
  """(real, imaginary) matrices [height * (width // 2 + 1), height * width] that map a
  kernel's 2-D RDFT coefficients to the kernel, as tfc's RDFTParameter defines it: the inverse
  real DFT (numpy's, in float64) times sqrt(height * width)."""
  bins = height * (width // 2 + 1)
  unit = np.eye(bins).reshape(bins, height, width // 2 + 1)
  scale = np.sqrt(height * width)
  real = np.fft.irfft2(unit, s=(height, width)) * scale
  imaginary = np.fft.irfft2(1j * unit, s=(height, width)) * scale
  return (real.reshape(bins, -1).astype(np.float32),
          imaginary.reshape(bins, -1).astype(np.float32))


class SignalConv2D(tfc.SignalConv2D):
  """tfc's SignalConv2D, with an RDFT-parameterised kernel computed by two small matmuls.

  tfc computes such a kernel with tf.signal.irfft2d on every call: for the hyper-analysis of
  small-lo (128 channels throughout, 3x3 and 5x5) that took 95 ms of a 105 ms forward pass
  on a CPU (TensorFlow's FFT on a hundred thousand 5x5 transforms), in every
  encode and twice in every training step. The inverse RDFT of a k x k kernel is a fixed
  linear map, so it is applied as a matmul with its matrix: the same variables, the same
  kernel up to float rounding (tests/test_hyperprior.py), gradients included.
  """

  @property
  def kernel(self):
    parameter = self.kernel_parameter
    if type(parameter) is not tfc.RDFTParameter or parameter.shape.rank != 4:
      return super().kernel
    height, width, channels_in, channels_out = parameter.shape
    real, imaginary = (tf.constant(m) for m in inverse_rdft_basis(height, width))
    bins = real.shape[0]
    # The variables are [in, out, height, width // 2 + 1].
    flat = lambda v: tf.reshape(tf.cast(v, tf.float32), [-1, bins])
    kernel = (tf.linalg.matmul(flat(parameter.real), real) +
              tf.linalg.matmul(flat(parameter.imag), imaginary))
    kernel = tf.transpose(tf.reshape(kernel, [channels_in, channels_out, height, width]),
                          (2, 3, 0, 1))
    return tf.cast(kernel, self.compute_dtype)


def _signal_conv(filters, kernel, corr, stride, activation, name, padding="same_zeros",
                 **kwargs):
  """The SignalConv2D flavour of the official hyperprior (same_zeros padding, bias)."""
  direction = dict(strides_down=stride) if corr else dict(strides_up=stride)
  return SignalConv2D(filters, (kernel, kernel), corr=corr, padding=padding,
                      use_bias=True, activation=activation, name=name, dtype="float32",
                      **direction, **kwargs)


class DeepFactorizedWithLastFactor(tfc.DeepFactorized):
  """tfc's DeepFactorized with a tanh factor on its last layer as well.

  Ballé et al.'s density (ICLR 2018, appendix 6.1) as the PyTorch port of HiFiC implements it:
  every layer, the last included, adds factor * tanh(logits). tfc's leaves the last layer
  linear. Same variables otherwise (matrices, biases, factors), so weights map one to one.
  """

  def _make_variables(self):
    super()._make_variables()
    channels = self.batch_shape.num_elements()
    self._factors.append(tf.Variable(tf.zeros((channels, 1, 1), dtype=self.dtype),
                                     name=f"factor_{len(self.num_filters)}"))

  def _logits_cumulative(self, inputs):
    shape = tf.shape(inputs)
    logits = tf.transpose(tf.reshape(inputs, (-1, 1, self.batch_shape.num_elements())),
                          (2, 1, 0))
    for matrix, bias, factor in zip(self._matrices, self._biases, self._factors):
      logits = tf.linalg.matmul(tf.nn.softplus(matrix), logits) + bias
      logits += tf.math.tanh(factor) * tf.math.tanh(logits)
    return tf.reshape(tf.transpose(logits, (2, 1, 0)), shape)


def side_prior(channels, filters=(3, 3), last_factor=False):
  """The factorized prior on z, convolved with U(-1/2, 1/2): tfc's, or the port's variant."""
  if not last_factor:
    return tfc.NoisyDeepFactorized(batch_shape=(channels,), num_filters=tuple(filters))
  return tfc.UniformNoiseAdapter(
      DeepFactorizedWithLastFactor(batch_shape=(channels,), num_filters=tuple(filters)),
      name="NoisyDeepFactorized")


LIKELIHOODS = {"gaussian": tfc.NoisyNormal, "logistic": tfc.NoisyLogistic}


class HyperAnalysis(tf.keras.Sequential):
  """y -> z: 3x3 ReLU, 5x5/2 ReLU, 5x5/2 (z at 1/64 of the image).

  `padding` "reflect" reflect-pads the two stride-2 convs (the PyTorch port's); the first
  pads with zeros either way. The reflection is `layers.MirrorPad` before a valid conv rather
  than tfc's "same_reflect", which fails on sides of 2 or less (small images).
  """

  def __init__(self, filters, padding="zeros", name="hyper_analysis"):
    if padding == "reflect":
      strided = lambda name, activation: [
          MirrorPad(2, dtype="float32"),
          _signal_conv(filters, 5, True, 2, activation, name, padding="valid")]
    else:
      strided = lambda name, activation: [
          _signal_conv(filters, 5, True, 2, activation, name)]
    super().__init__([
        _signal_conv(filters, 3, True, 1, tf.nn.relu, "layer_0"),
        *strided("layer_1", tf.nn.relu),
        *strided("layer_2", None),
    ], name=name)


class HyperSynthesis(tf.keras.Sequential):
  """z_hat -> one parameter map for y: 5x5*2 ReLU, 5x5*2 ReLU, 3x3 (plain kernels, as released)."""

  def __init__(self, filters, out_channels, name):
    variable = dict(kernel_parameter="variable")
    super().__init__([
        _signal_conv(filters, 5, False, 2, tf.nn.relu, "layer_0", **variable),
        _signal_conv(filters, 5, False, 2, tf.nn.relu, "layer_1", **variable),
        _signal_conv(out_channels, 3, False, 1, None, "layer_2", **variable),
    ], name=name)


def _uniform_noise(shape, seed):
  """U(-0.5, 0.5) noise; with a seed, the same per example however the batch is split.

  Under tf.distribute each replica draws the noise of the whole global batch and keeps its own
  slice, so N replicas see exactly the noise one device would for the same global batch.
  """
  if seed is None:
    return tf.random.uniform(shape, -.5, .5)
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync if context is not None else 1
  if replicas == 1:
    return tf.random.stateless_uniform(shape, seed, -.5, .5)
  full = tf.concat([[shape[0] * replicas], shape[1:]], axis=0)
  start = tf.cast(context.replica_id_in_sync_group, tf.int32) * shape[0]
  return tf.random.stateless_uniform(full, seed, -.5, .5)[start:start + shape[0]]


class Hyperprior(tf.keras.layers.Layer):
  """Side information z and the conditional entropy model of y.

  In training mode the rate is estimated on noisy latents (differentiable) and on rounded ones
  (the rate-target switch looks at the latter). `build_coders()` makes the range-coding tables
  once, after training: they are then frozen variables, saved with the model, so that encoder
  and decoder use identical tables.
  """

  def __init__(self, latent_channels, hyper_filters, num_scales, scale_min, scale_max,
               hyper_padding="zeros", scale_parameterization="log_index",
               side_prior_filters=(3, 3), side_prior_last_factor=False,
               side_quantization="median", likelihood="gaussian", name="hyperprior",
               **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.latent_channels = latent_channels
    self.num_scales = num_scales
    self.scale_min = float(scale_min)
    self.scale_parameterization = scale_parameterization
    self.side_quantization = side_quantization
    self.likelihood = LIKELIHOODS[likelihood]
    self._log_scale_min = float(tf.math.log(float(scale_min)))
    self._log_scale_step = float(
        (tf.math.log(float(scale_max)) - tf.math.log(float(scale_min))) / (num_scales - 1.))
    # The table a predicted sigma is looked up in: float64 log-spacing rounded to float32,
    # as the port builds it, so that both pick the same entry.
    self._scale_table = tf.constant(np.exp(np.linspace(
        np.log(scale_min), np.log(scale_max), num_scales)).astype(np.float32))
    self.analysis = HyperAnalysis(hyper_filters, padding=hyper_padding)
    self.synthesis_mean = HyperSynthesis(hyper_filters, latent_channels, "hyper_synthesis_mean")
    self.synthesis_scale = HyperSynthesis(hyper_filters, latent_channels,
                                          "hyper_synthesis_scale")
    self.side_prior = side_prior(hyper_filters, side_prior_filters, side_prior_last_factor)
    self.side_coder = None
    self.latent_coder = None

  def scale_fn(self, index):
    return tf.math.exp(self._log_scale_min + self._log_scale_step * index)

  def coding_index(self, scale_output):
    """The scale table index y is coded with, as a float, from the scale synthesis' output.

    "log_index": the output rounded to the nearest entry; "sigma": the first entry at or
    above the predicted scale (the port's rule). Clipped to the table either way.
    """
    if self.scale_parameterization == "sigma":
      flat = tf.reshape(scale_output, [1, -1])
      below = tf.searchsorted(self._scale_table[None, :-1], flat, side="left")
      return tf.cast(tf.reshape(below, tf.shape(scale_output)), tf.float32)
    return tf.clip_by_value(tf.round(scale_output), 0., self.num_scales - 1.)

  def _side_model(self, compression=False):
    return tfc.ContinuousBatchedEntropyModel(
        self.side_prior, coding_rank=3, compression=compression, bottleneck_dtype=tf.float32,
        offset_heuristic=self.side_quantization == "median")

  def _latent_model(self, compression=False):
    return tfc.LocationScaleIndexedEntropyModel(
        self.likelihood, self.num_scales, self.scale_fn, coding_rank=3,
        compression=compression, bottleneck_dtype=tf.float32)

  def build_coders(self):
    """Builds the range-coding tables from the current prior (seconds; do it once)."""
    self.side_coder = self._side_model(compression=True)
    self.latent_coder = self._latent_model(compression=True)

  def _parameters(self, z_hat, y_shape, log_gain=None):
    """Mean and scale output of y (times the gain, when one is given) from z_hat, cropped to
    y's spatial shape."""
    loc = self.synthesis_mean(z_hat)[:, :y_shape[0], :y_shape[1], :]
    scale_output = self.synthesis_scale(z_hat)[:, :y_shape[0], :y_shape[1], :]
    if log_gain is None:
      return loc, scale_output
    loc = loc * tf.math.exp(log_gain)
    if self.scale_parameterization == "sigma":
      return loc, scale_output * tf.math.exp(log_gain)
    # The table is log-spaced: scaling sigma by the gain moves the index by log(gain) / step.
    return loc, scale_output + log_gain / self._log_scale_step

  def _noisy_bits(self, distribution, values, noise_seed):
    """Bits per image of values + U(-0.5, 0.5) under a noisy prior (the differentiable rate).

    tfc's entropy models draw this noise from the stateful global RNG; drawing it here from a
    stateless RNG keyed by `noise_seed` makes a training step a pure function of (weights,
    batch, step), so a resumed run continues exactly where a killed one stopped.
    """
    noisy = values + _uniform_noise(tf.shape(values), noise_seed)
    log_probs = distribution.log_prob(noisy)
    return noisy, tf.reduce_sum(log_probs, axis=[1, 2, 3]) / -tf.math.log(2.)

  def side_quantization_offset(self):
    """tfc's quantization offset of z under the current prior (where rounding is centred).

    tfc finds it with a while loop over the prior's CDF (tens of ms here); a training step
    computes it once, outside the gradient tape, and hands it to both of its forward passes.
    Zero with side_quantization "round".
    """
    if self.side_quantization == "round":
      return tf.zeros([self.side_prior.batch_shape.num_elements()])
    return tf.stop_gradient(self._side_model().quantization_offset)

  def call(self, y, training=False, noise_seed=None, z_offset=None, log_gain=None):
    """Quantizes y and estimates its rate and that of z (bits per image, both estimates).

    Args:
      y: latent from the encoder, [B, H/16, W/16, C].
      training: if True, the hyper-synthesis sees z with uniform noise (as in the paper);
        otherwise rounded z and rounded scale indexes, exactly what the coder will use.
      noise_seed: optional [2] int seed for the training noise (stateless, reproducible).
      z_offset: `side_quantization_offset()`, when the caller has it already.
      log_gain: optional per-channel log gain [C] (or [B, 1, 1, C]): the rate control.

    Returns:
      A `HyperpriorOutput`; y_hat is round(y - mu) + mu with a straight-through gradient (in
      y's own scale: divided by the gain again).
    """
    y = tf.cast(y, tf.float32)
    latent_model = self._latent_model()
    if z_offset is None:
      z_offset = self.side_quantization_offset()
    z_seed = y_seed = None
    if noise_seed is not None:
      z_seed = tf.random.experimental.stateless_fold_in(noise_seed, 1)
      y_seed = tf.random.experimental.stateless_fold_in(noise_seed, 2)
    z = self.analysis(y)
    y = _gained(y, log_gain)
    z_noisy, z_bits_noisy = self._noisy_bits(self.side_prior, z, z_seed)
    # What the coder sends for z (tfc's quantize and bits, with the offset given).
    z_rounded = tf.stop_gradient(tf.round(z - z_offset) + z_offset)
    z_bits_quantized = tf.reduce_sum(self.side_prior.log_prob(z_rounded),
                                     axis=[1, 2, 3]) / -tf.math.log(2.)
    z_hat = z_noisy if training else z_rounded
    loc, scale_output = self._parameters(z_hat, tf.shape(y)[1:3], log_gain)
    if self.scale_parameterization == "sigma":
      # The port's rate: the predicted scale itself, bounded below (gradient pushes back up).
      scale = tfc.lower_bound(scale_output, self.scale_min)
      scale_index = tf.stop_gradient(self.coding_index(scale_output))
    else:
      if not training:
        scale_output = tf.round(scale_output)
      # The index clipping of tfc's indexed models, with gradients that push back into range.
      scale_index = tfc.upper_bound(tfc.lower_bound(scale_output, 0.), self.num_scales - 1.)
      scale = self.scale_fn(scale_index)
    _, y_bits_noisy = self._noisy_bits(self.likelihood(loc=0., scale=scale), y - loc, y_seed)
    _, y_bits_quantized = latent_model(y, scale_index, loc=loc, training=False)
    y_hat = _ungained(latent_model.quantize(y, loc=loc), log_gain)
    return HyperpriorOutput(y_hat, y_bits_noisy, z_bits_noisy, y_bits_quantized,
                            z_bits_quantized)

  # --- The coder's integer view, in stock TensorFlow ops (for the split serving codec). ----
  # These reproduce what tfc's compress and decompress compute around the range coder, so a
  # server without tfc's ops and a client with them write the same bytes.

  def latent_coding_parameters(self, z_hat, y_shape, log_gain=None):
    """(loc, int32 scale indexes) of y, clipped to the table as tfc's indexed model clips."""
    loc, scale_output = self._parameters(z_hat, y_shape, log_gain)
    return loc, tf.cast(self.coding_index(scale_output), tf.int32)

  def coding_tables(self):
    """The range coder's tables, numpy, by name: all a client needs beside the symbols."""
    self._require_coders()
    side, latent = self.side_coder, self.latent_coder
    offset = side.quantization_offset
    if offset is None:  # z is rounded around integers: the zeros of side_quantization_offset.
      offset = self.side_quantization_offset()
    return {"z_cdf": side.cdf, "z_cdf_offset": side.cdf_offset,
            "z_quantization_offset": offset,
            "y_cdf": latent.cdf, "y_cdf_offset": latent.cdf_offset}

  def _require_coders(self):
    if self.side_coder is None:
      raise RuntimeError("range coders are not built: call build_coders() after training")

  def compress(self, y, log_gain=None):
    """Range-codes a batch of latents; returns `Compressed` and y_hat (what the decoder gets)."""
    self._require_coders()
    y = tf.cast(y, tf.float32)
    z = self.analysis(y)
    y_shape, z_shape = tf.shape(y)[1:3], tf.shape(z)[1:3]
    z_strings = self.side_coder.compress(z)
    z_hat = self.side_coder.quantize(z)
    loc, scale_output = self._parameters(z_hat, y_shape, log_gain)
    y = _gained(y, log_gain)
    y_strings = self.latent_coder.compress(y, self.coding_index(scale_output), loc=loc)
    y_hat = _ungained(self.latent_coder.quantize(y, loc=loc), log_gain)
    return Compressed(y_strings, z_strings, y_shape, z_shape), y_hat

  def estimate_bits(self, y, log_gain=None):
    """The entropy models' estimate of what `compress` writes (bits per image).

    Not part of `compress`: evaluating every latent's probability costs about as much as the
    range coding itself, and only diagnostics want it.
    """
    self._require_coders()
    y = tf.cast(y, tf.float32)
    z = self.analysis(y)
    loc, scale_output = self._parameters(self.side_coder.quantize(z), tf.shape(y)[1:3],
                                         log_gain)
    _, y_bits = self.latent_coder(_gained(y, log_gain), self.coding_index(scale_output),
                                  loc=loc, training=False)
    _, z_bits = self.side_coder(z, training=False)
    return y_bits + z_bits

  def decompress(self, y_strings, z_strings, y_shape, z_shape, log_gain=None):
    """Inverse of `compress`: strings and latent shapes -> y_hat."""
    self._require_coders()
    z_hat = self.side_coder.decompress(z_strings, z_shape)
    loc, scale_output = self._parameters(z_hat, y_shape, log_gain)
    y_hat = self.latent_coder.decompress(y_strings, self.coding_index(scale_output), loc=loc)
    return _ungained(y_hat, log_gain)


def _gained(y, log_gain):
  """y times the gain (the quantization step of each channel becomes 1 / gain)."""
  return y if log_gain is None else y * tf.math.exp(log_gain)


def _ungained(y_hat, log_gain):
  """A gained y_hat back in y's own scale, what the generator was trained on."""
  return y_hat if log_gain is None else y_hat * tf.math.exp(-log_gain)
