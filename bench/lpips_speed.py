"""LPIPS throughput: images/s for batches of 8 at 256x256, forward and forward+backward.

Usage: python bench/lpips_speed.py [--repeats N]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

from hific_tf.perceptual.lpips import LPIPS


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
  print(f"{'net':<6}{'forward img/s':>16}{'fwd+bwd img/s':>16}")
  for net in ("alex", "vgg"):
    model = LPIPS(net)
    forward = tf.function(lambda: model(b, a))

    @tf.function
    def forward_backward():
      with tf.GradientTape() as tape:
        distance = tf.reduce_mean(model(b, a))
      return tape.gradient(distance, b)

    f = measure(forward, args.repeats)
    fb = measure(forward_backward, args.repeats)
    print(f"{net:<6}{args.batch / f:>16.1f}{args.batch / fb:>16.1f}")


if __name__ == "__main__":
  main()
