"""The mean-scale hyperprior on its own, in tfc's test style: an untrained prior, small
latents, round trips through the real range coder, clipping and straight-through gradients."""

import numpy as np
import pytest
import tensorflow as tf

from hific_tf.models.hific.hyperprior import Hyperprior

CHANNELS = 8


@pytest.fixture(scope="module")
def hyperprior():
  tf.keras.utils.set_random_seed(0)
  prior = Hyperprior(CHANNELS, 16, num_scales=64, scale_min=0.11, scale_max=256.)
  prior(tf.zeros([1, 8, 8, CHANNELS]))
  prior.build_coders()
  return prior


def _latents(seed=0, shape=(2, 8, 12, CHANNELS), scale=3.):
  return tf.random.stateless_normal(shape, [seed, 1]) * scale


def test_quantized_z_rate_is_tfcs(hyperprior):
  y = _latents()
  z = hyperprior.analysis(y)
  _, tfc_bits = hyperprior._side_model()(z, training=False)
  ours = hyperprior(y, training=False).z_bits_quantized
  np.testing.assert_allclose(ours.numpy(), tfc_bits.numpy(), rtol=1e-6)
  offset = hyperprior.side_quantization_offset()
  given = hyperprior(y, training=False, z_offset=offset).z_bits_quantized
  np.testing.assert_array_equal(given.numpy(), ours.numpy())


def test_range_coding_round_trip_gives_the_models_y_hat(hyperprior):
  # Small latents: the untrained prior's scales sit at the bottom of the table, and values
  # far out in its tails go through the coder's escape path, which no estimate bounds.
  y = _latents(1, shape=(1, 8, 12, CHANNELS), scale=0.2)
  compressed, y_hat = hyperprior.compress(y)
  decoded = hyperprior.decompress(compressed.y_strings, compressed.z_strings,
                                  compressed.y_shape, compressed.z_shape)
  np.testing.assert_allclose(decoded.numpy(), y_hat.numpy(), atol=1e-5)
  np.testing.assert_allclose(hyperprior(y, training=False).y_hat.numpy(), y_hat.numpy(),
                             atol=1e-5)
  # The estimate is the entropy models' information content; the coder's 16-bit tables and
  # its few bytes of flushing per string keep the real size near it.
  bits = 8 * (len(compressed.y_strings.numpy()[0]) + len(compressed.z_strings.numpy()[0]))
  estimate = float(hyperprior.estimate_bits(y)[0])
  assert estimate * 0.8 <= bits <= estimate * 1.05 + 64


def test_scale_indexes_are_clipped_to_the_table(hyperprior):
  z_hat = tf.random.stateless_normal([1, 2, 3, 16], [4, 5]) * 100.
  _, indexes = hyperprior.latent_coding_parameters(z_hat, tf.constant([8, 12]))
  assert indexes.dtype == tf.int32
  assert int(tf.reduce_min(indexes)) >= 0 and int(tf.reduce_max(indexes)) <= 63


def test_distortion_reaches_the_encoder_through_rounding():
  # y_hat = round(y - mu) + mu with a straight-through gradient: a loss on the reconstruction
  # alone (no rate term) must still move every encoder weight.
  from hific_tf import configs
  from hific_tf.models.hific.model import HiFiC
  model = HiFiC(configs.get_config("tiny-mselpips")).build_all(64)
  images = tf.cast(tf.random.stateless_uniform([1, 64, 64, 3], [6, 7], 0, 256, tf.int32),
                   tf.uint8)

  @tf.function
  def gradients():
    with tf.GradientTape() as tape:
      outputs = model(images, training=True)
      loss = tf.reduce_mean(tf.square(outputs["reconstruction"] - outputs["image"]))
    return tape.gradient(loss, model.encoder.trainable_variables)

  assert all(g is not None and float(tf.norm(g)) > 0 for g in gradients())


def test_training_rate_is_an_upper_bound_in_expectation(hyperprior):
  y = _latents(3, shape=(4, 8, 12, CHANNELS), scale=5.)
  out = hyperprior(y, training=True, noise_seed=tf.constant([1, 2], tf.int64))
  noisy = float(tf.reduce_sum(out.y_bits_noisy + out.z_bits_noisy))
  quantized = float(tf.reduce_sum(out.y_bits_quantized + out.z_bits_quantized))
  assert np.isfinite(noisy) and noisy > 0 and quantized > 0


@pytest.mark.parametrize("size", [3, 5])
def test_rdft_kernels_by_matmul_equal_tfcs_irfft_with_their_gradients(size):
  import tensorflow_compression as tfc

  from hific_tf.models.hific.hyperprior import SignalConv2D
  layer = SignalConv2D(6, (size, size), corr=True, strides_down=2, padding="same_zeros",
                       use_bias=True, dtype="float32")
  layer.build((1, 8, 8, 4))
  weights = tf.random.stateless_normal([size, size, 4, 6], [0, size])
  with tf.GradientTape(persistent=True) as tape:
    ours, theirs = layer.kernel, tfc.SignalConv2D.kernel.fget(layer)
    ours_loss, theirs_loss = (tf.reduce_sum(k * weights) for k in (ours, theirs))
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
  variables = [layer.kernel_parameter.real, layer.kernel_parameter.imag]
  for mine, reference in zip(tape.gradient(ours_loss, variables),
                             tape.gradient(theirs_loss, variables)):
    np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-5)
