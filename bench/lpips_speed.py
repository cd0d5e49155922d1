"""LPIPS throughput: images/s for batches of 8 at 256x256, forward and forward+backward.

Forward+backward differentiates with respect to one input only, as a training step does (the
reconstruction; the photo is a constant). Beside it, in the same run, the formulation LPIPS
had before: both images as one batch through the network, split again per layer. Its
backward runs through the photo's half too, and each split is a strided-slice gradient (a
full-size copy); the two give the same distances and gradients to float round-off.

Usage: python bench/lpips_speed.py [--repeats N]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

from hific_tf.measure.lpips import LPIPS, _unit_length


def joint_batch_distance(model, image_a, image_b):
  """LPIPS with both images in one batch (the earlier formulation), for comparison."""
  batch = tf.shape(image_a)[0]
  both = tf.concat([model._standardize(image_a), model._standardize(image_b)], axis=0)
  terms = []
  for feature, lin in zip(model._features(both), model._lins):
    feature = _unit_length(feature)
    diff = tf.square(feature[:batch] - feature[batch:])
    terms.append(tf.reduce_mean(tf.nn.conv2d(diff, lin, 1, "VALID"), axis=[1, 2, 3]))
  return tf.add_n(terms)


def measure(function, repeats):
  function()  # Trace and warm up.
  start = time.perf_counter()
  for _ in range(repeats):
    function()
  return (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=256)
  args = parser.parse_args()
  shape = [args.batch, args.size, args.size, 3]
  a = tf.random.uniform(shape, seed=1)
  b = tf.Variable(tf.random.uniform(shape, seed=2))
  print(f"LPIPS, batch {args.batch} at {args.size}x{args.size}, float32, "
        f"{os.cpu_count()} CPU threads, TF {tf.__version__}")
  print(f"{'net':<6}{'forward img/s':>16}{'fwd+bwd img/s':>16}{'joint batch':>14}"
        f"{'ratio':>8}{'max |diff|':>12}")
  for net in ("alex", "vgg"):
    model = LPIPS(net)
    forward = tf.function(lambda: model(b, a))

    def gradient_of(distance):
      @tf.function
      def forward_backward():
        with tf.GradientTape() as tape:
          value = distance(b, a)
          mean = tf.reduce_mean(value)
        return value, tape.gradient(mean, b)
      return forward_backward

    two_passes = gradient_of(model)
    joint = gradient_of(lambda x, y: joint_batch_distance(model, x, y))
    f = measure(forward, args.repeats)
    fb = measure(two_passes, args.repeats)
    fb_joint = measure(joint, args.repeats)
    (value, gradient), (joint_value, joint_gradient) = two_passes(), joint()
    difference = max(float(tf.reduce_max(tf.abs(value - joint_value))),
                     float(tf.reduce_max(tf.abs(gradient - joint_gradient))))
    print(f"{net:<6}{args.batch / f:>16.1f}{args.batch / fb:>16.1f}{args.batch / fb_joint:>14.1f}"
          f"{fb_joint / fb:>7.2f}x{difference:>12.1e}")


if __name__ == "__main__":
  main()
