"""The generator's 3x3 stride-2 transposed convs: Keras' Conv2DTranspose against our sub-pixel form.

TensorFlow runs a transposed conv as the input gradient of a conv (Conv2DBackpropInput);
`layers.SubpixelConv2DTranspose` computes the same function as a 2x2 forward conv with four
output phases and depth_to_space. This prints, side by side in one process and on the same
inputs, the time of both (forward, and forward plus backward as in training) at the shapes of
the generator's tail, their ratio, and the largest difference of their outputs.

  python bench/transposed_conv.py [--models hific-lo,small-lo] [--size 768x512] [--repeats 3]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

tf.get_logger().setLevel("ERROR")  # One tf.function per layer is the point here.

from codec_speed import timed

from hific_tf import configs
from hific_tf.models.hific import (
  layers,
  networks,
)

CONFIGS = {"hific-lo": "hific-lo", "small-lo": "small-hific-lo"}


def pair(in_channels, out_channels, height, width, dtype, seed=0):
  """(Keras layer, sub-pixel layer) with the same weights, and an input [1, height, width, in]."""
  policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
  keras_layer = tf.keras.layers.Conv2DTranspose(out_channels, 3, strides=2, padding="same",
                                                dtype=policy, bias_initializer="random_normal")
  ours = layers.SubpixelConv2DTranspose(out_channels, dtype=policy)
  inputs = tf.random.stateless_normal([1, height, width, in_channels], [seed, 1])
  keras_layer(inputs)
  ours(inputs)
  ours.set_weights(keras_layer.get_weights())
  return keras_layer, ours, inputs


def measure(layer, inputs, repeats):
  forward = tf.function(lambda x: layer(x))
  @tf.function
  def train(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.cast(layer(x), tf.float32))
    return tape.gradient(loss, [x] + layer.trainable_variables)
  # ms, best of `repeats` after one call for tracing and first-call set-up.
  return (timed(lambda: forward(inputs).numpy(), repeats) * 1e3,
          timed(lambda: [g.numpy() for g in train(inputs)], repeats) * 1e3,
          forward(inputs))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="hific-lo,small-lo")
  parser.add_argument("--size", default="768x512", help="Output image WIDTHxHEIGHT.")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  width, height = (int(v) for v in args.size.split("x"))
  print(f"{os.cpu_count()} CPUs, TF {tf.__version__}; output {width}x{height}; ms, best of "
        f"{args.repeats}; 'train' is forward + input and kernel gradients")
  print(f"{'model':<10}{'layer':<12}{'dtype':<10}{'keras fwd':>10}{'ours fwd':>10}"
        f"{'ratio':>7}{'keras train':>12}{'ours train':>11}{'ratio':>7}{'max |diff|':>12}")
  totals = {}
  for model in args.models.split(","):
    base = configs.get_config(CONFIGS[model]).num_filters_base
    for dtype in args.dtypes.split(","):
      for i in reversed(range(networks.NUM_DOWNSAMPLINGS)):
        scale = 2 ** (i + 1)
        in_channels, out_channels = base * 2 ** (i + 1), base * 2 ** i
        keras_layer, ours, inputs = pair(in_channels, out_channels, height // scale,
                                         width // scale, dtype)
        keras_fwd, keras_train, reference = measure(keras_layer, inputs, args.repeats)
        ours_fwd, ours_train, result = measure(ours, inputs, args.repeats)
        difference = float(np.abs(np.float32(reference) - np.float32(result)).max())
        print(f"{model:<10}{f'{in_channels}->{out_channels}':<12}{dtype:<10}{keras_fwd:>10.1f}"
              f"{ours_fwd:>10.1f}{keras_fwd / ours_fwd:>7.2f}{keras_train:>12.1f}"
              f"{ours_train:>11.1f}{keras_train / ours_train:>7.2f}{difference:>12.2e}")
        total = totals.setdefault((model, dtype), [0., 0., 0., 0.])
        for k, value in enumerate((keras_fwd, ours_fwd, keras_train, ours_train)):
          total[k] += value
  for (model, dtype), (kf, of, kt, ot) in totals.items():
    print(f"{model} {dtype}: the four transposed convs take {kf:.0f} -> {of:.0f} ms forward "
          f"({kf / of:.2f}x), {kt:.0f} -> {ot:.0f} ms in training ({kt / ot:.2f}x)")


if __name__ == "__main__":
  main()
