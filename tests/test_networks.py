"""ChannelNorm against float64 numpy, network shapes, parameter counts of the paper's model."""

import contextlib

import numpy as np
import pytest
import tensorflow as tf

from hific_tf import configs
from hific_tf.cli import commands
from hific_tf.models.hific import layers, networks
from hific_tf.models.hific.layers import ChannelNorm, SpectralConv2D, SubpixelConv2DTranspose
from hific_tf.models.hific.model import HiFiC


def _channel_norm_reference(x, gamma, beta, eps=1e-3):
  mean = x.mean(-1, keepdims=True)
  variance = ((x - mean) ** 2).sum(-1, keepdims=True) / (x.shape[-1] - 1)
  return (x - mean) / np.sqrt(variance + eps) * gamma + beta


def _channel_norm_gradient_reference(x, gamma, weights, eps=1e-3):
  """d sum(w * CN(x)) / dx with the mean held constant inside the variance (float64)."""
  channels = x.shape[-1]
  centered = x - x.mean(-1, keepdims=True)
  r = 1. / np.sqrt((centered ** 2).sum(-1, keepdims=True) / (channels - 1) + eps)
  a = weights * gamma                                   # dL/d(normalized), per channel.
  direct = (a - a.mean(-1, keepdims=True)) * r          # Through (x - mean).
  through_variance = -(a * centered).sum(-1, keepdims=True) * r ** 3 * centered / (channels - 1)
  return direct + through_variance


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "xla"])
def test_channel_norm_matches_float64_reference_values_and_gradient(fused):
  # Traced under fused_norms (as `hific train` traces its step) ChannelNorm is one XLA
  # kernel; otherwise plain ops. Both against float64 numpy.
  rng = np.random.default_rng(0)
  x = rng.normal(2., 3., size=(2, 5, 7, 16))
  layer = ChannelNorm()
  layer.build(x.shape)
  gamma, beta = rng.normal(size=16), rng.normal(size=16)
  layer.set_weights([gamma.astype(np.float32), beta.astype(np.float32)])
  x_tf = tf.constant(x, tf.float32)
  weights = tf.constant(rng.normal(size=x.shape), tf.float32)

  def value_and_gradient(inputs):
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      out = layer(inputs)
      objective = tf.reduce_sum(out * weights)
    return out, tape.gradient(objective, inputs)

  traced = tf.function(value_and_gradient)
  with layers.fused_norms() if fused else contextlib.nullcontext():
    graph = traced.get_concrete_function(x_tf).graph.as_graph_def()
  compiled = [f for f in graph.library.function if "_XlaMustCompile" in f.attr]
  assert bool(compiled) == fused
  out, gradient = traced(x_tf)
  np.testing.assert_allclose(out.numpy(), _channel_norm_reference(x, gamma, beta), atol=2e-5)
  np.testing.assert_allclose(gradient.numpy(),
                             _channel_norm_gradient_reference(x, gamma, weights.numpy()),
                             atol=2e-5)


def test_channel_norm_uses_unbiased_variance():
  x = tf.constant([[[[0., 2.]]]])  # Mean 1; biased variance 1, unbiased 2.
  out = ChannelNorm(epsilon=0.)(x).numpy().ravel()
  np.testing.assert_allclose(out, [-1 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-6)


def test_channel_norm_in_bfloat16_keeps_float32_statistics():
  x = tf.cast(tf.cast(tf.random.normal([1, 4, 4, 960], 5., 1.), tf.bfloat16), tf.float32)
  full = ChannelNorm()(x)
  half = ChannelNorm(dtype="mixed_bfloat16")(x)
  assert half.dtype == tf.bfloat16
  # Only the output is rounded to bfloat16 (8 bits: 1/64 steps for |v| < 4).
  np.testing.assert_allclose(tf.cast(half, tf.float32).numpy(), full.numpy(), atol=1 / 64)


@pytest.mark.parametrize("name", ["tiny-hific", "hific-lo"])
def test_shapes(name):
  config = configs.get_config(name)
  model = HiFiC(config)
  images = tf.zeros([2, 128, 192, 3], tf.uint8)
  outputs = model(images, training=True)
  assert outputs["y_hat"].shape == (2, 8, 12, config.latent_channels)
  assert outputs["reconstruction"].shape == (2, 128, 192, 3)
  z = model.hyperprior.analysis(outputs["y_hat"])
  assert z.shape[1:3] == (2, 3)  # 1/64 of the image.
  logits = model.discriminator((outputs["reconstruction"], outputs["y_hat"]))
  assert logits.shape == (2, 16, 24, 1)  # One logit per 8x8 patch.
  assert outputs["bpp_noisy"].shape == (2,) and outputs["bpp_quantized"].shape == (2,)


def test_parameter_counts_of_the_paper_model():
  model = HiFiC(configs.get_config("hific-lo")).build_all()
  expected = {"encoder": 7.4e6, "generator": 157e6, "hyperprior": 17e6}
  for part, count in expected.items():
    effective, _ = commands.parameter_counts(model.codec_modules[part])
    assert abs(effective - count) / count < 0.03, (part, effective)
  effective, _ = commands.parameter_counts(model.discriminator)
  assert abs(effective - 2.8e6) / 2.8e6 < 0.03
  blocks = sum(int(np.prod(v.shape)) for v in model.generator.blocks.trainable_variables)
  assert abs(blocks - 149e6) / 149e6 < 0.03


def test_spectral_conv_has_unit_spectral_norm_and_updates_only_in_training():
  # Seeded: with an unlucky random kernel whose top two singular values are close, 30 power
  # iterations do not reach 1e-3 (seen once in about 30 unseeded runs).
  tf.keras.utils.set_random_seed(0)
  layer = SpectralConv2D(8, 3)
  x = tf.random.normal([1, 8, 8, 4])
  layer(x)
  u_before = layer.power_iteration_u.numpy().copy()
  layer(x, training=False)
  np.testing.assert_array_equal(layer.power_iteration_u.numpy(), u_before)
  for _ in range(30):
    kernel = layer.normalized_kernel(training=True)
  sigma = np.linalg.svd(kernel.numpy().reshape(-1, 8), compute_uv=False)[0]
  assert sigma == pytest.approx(1., abs=1e-3)


def test_bfloat16_generator_runs_every_sublayer_in_bfloat16():
  generator = networks.Generator(8, 2, dtype="mixed_bfloat16")
  generator(tf.zeros([1, 4, 4, 32]))
  layers = [layer for layer in generator.submodules
            if isinstance(layer, (tf.keras.layers.Conv2D, ChannelNorm))]
  assert len(layers) == 1 + 2 + 2 * 2 * 2 + 4 * 2 + 1  # Head, 2 blocks, tail.
  assert {layer.compute_dtype for layer in layers} == {"bfloat16"}


def test_lean_bfloat16_generator_keeps_bfloat16_weights_and_the_same_pixels():
  """A lean G (coding) stores its conv weights in bfloat16 and computes exactly what the
  mixed-precision G computes from float32 weights, which it casts to bfloat16 on each call."""
  tf.keras.utils.set_random_seed(3)
  mixed = networks.Generator(8, 2, dtype="mixed_bfloat16")
  lean = networks.Generator(8, 2, lean=True, dtype="mixed_bfloat16")
  latent = tf.random.stateless_normal([1, 3, 5, 32], [1, 2]) * 3
  mixed(latent), lean(latent)
  for source, target in zip(mixed.weights, lean.weights):
    target.assign(tf.cast(source, target.dtype))
  convs = [w for w in lean.weights if "kernel" in w.name or "bias" in w.name]
  norms = [w for w in lean.weights if "gamma" in w.name or "beta" in w.name]
  assert len(convs) == 2 * (1 + 2 * 2 + 4 + 1) and len(norms) == 2 * (2 + 2 * 2 + 4)
  assert {w.dtype for w in convs} == {tf.bfloat16}
  assert {w.dtype for w in norms} == {tf.float32}  # ChannelNorm's statistics stay float32.
  assert {w.dtype for w in mixed.weights} == {tf.float32}
  np.testing.assert_array_equal(tf.cast(lean(latent), tf.float32).numpy(),
                                tf.cast(mixed(latent), tf.float32).numpy())
  float32 = networks.Generator(8, 2, lean=True)  # Lean changes nothing in float32.
  float32(latent)
  assert {w.dtype for w in float32.weights} == {tf.float32}


def _transposed_conv_reference(x, kernel, bias):
  """3x3 stride-2 'same' transposed conv in float64 numpy: out[2i + t] += x[i] k[t]."""
  batch, height, width, _ = x.shape
  out = np.zeros([batch, 2 * height + 2, 2 * width + 2, kernel.shape[2]])
  for ty in range(3):
    for tx in range(3):
      out[:, ty:ty + 2 * height:2, tx:tx + 2 * width:2] += x @ kernel[ty, tx].T
  return out[:, :2 * height, :2 * width] + bias


@pytest.mark.parametrize("shape", [(2, 5, 7, 6, 4), (1, 1, 1, 3, 2), (1, 8, 3, 16, 8)])
def test_subpixel_transposed_conv_equals_keras_and_float64(shape):
  batch, height, width, cin, cout = shape
  x = tf.random.stateless_normal([batch, height, width, cin], [3, 4])
  keras_layer = tf.keras.layers.Conv2DTranspose(cout, 3, strides=2, padding="same",
                                                bias_initializer="random_normal")
  keras_layer(x)
  ours = SubpixelConv2DTranspose(cout)
  ours(x)
  ours.set_weights(keras_layer.get_weights())
  kernel, bias = (w.astype(np.float64) for w in keras_layer.get_weights())
  reference = _transposed_conv_reference(x.numpy().astype(np.float64), kernel, bias)
  results = []
  for layer in (keras_layer, ours):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(y * tf.sin(y))
    results.append([y] + tape.gradient(loss, [x] + layer.trainable_variables))
  np.testing.assert_allclose(results[1][0], reference, atol=1e-5)
  np.testing.assert_allclose(results[0][0], reference, atol=1e-5)
  for a, b in zip(*results):  # Output, input gradient, kernel and bias gradients.
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-4)
