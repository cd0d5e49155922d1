"""Training speed: ms per step and images/s, tiny configs and the full hific-lo, fp32 and bf16.

A few steps of the real train_step (rate, MSE, LPIPS, and in stage 2 the D step) on random
crops, after one step for tracing. Full HiFiC needs a GPU to train for real; these are the CPU
figures of this machine.

Usage: python bench/train_speed.py [--steps 3]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from hific_tf import configs  # pylint: disable=g-import-not-at-top
from hific_tf.models.hific.model import HiFiC  # pylint: disable=g-import-not-at-top

CASES = (("tiny-mselpips", 4, 128), ("tiny-hific", 4, 128), ("small-mselpips-lo", 8, 256),
         ("small-hific-lo", 8, 256), ("hific-lo", 2, 256))


def pipeline_images_per_second(crop, seconds=5.):
  """Crops/s of the real input pipeline (decode-once cache, crop-then-resize) on photos of
  the size the training set caches (1024 px short side), for comparison with the model's."""
  import numpy as np
  from PIL import Image
  from hific_tf.training import data
  with tempfile.TemporaryDirectory() as folder:
    rng = np.random.default_rng(0)
    for i in range(8):
      Image.fromarray(rng.integers(0, 255, [1024, 1536, 3], np.uint8)).save(f"{folder}/{i}.png")
    batches = iter(data.training_dataset(8, crop, train_glob=folder))
    next(batches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      next(batches)
      count += 8
    return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  print(f"{os.cpu_count()} CPU threads, TF {tf.__version__}; batch is the generator batch "
        "(stage 2 feeds D as many again)")
  print(f"{'config':<16}{'precision':<16}{'batch':>6}{'crop':>6}{'trace s':>9}{'ms/step':>10}"
        f"{'img/s':>8}")
  for name, batch, crop in CASES:
    for precision in ("float32", "mixed_bfloat16"):
      tf.keras.mixed_precision.set_global_policy(precision)
      config = configs.get_config(name)
      model = HiFiC(config).build_all(64)
      model.compile()
      step = tf.function(model.train_step)
      factor = 2 if config.use_gan else 1
      images = tf.cast(tf.random.uniform([batch * factor, crop, crop, 3], 0, 256, tf.int32),
                       tf.uint8)
      start = time.perf_counter()
      step(images)
      trace = time.perf_counter() - start
      start = time.perf_counter()
      for _ in range(args.steps):
        logs = step(images)
      float(logs["loss"])
      seconds = (time.perf_counter() - start) / args.steps
      print(f"{name:<16}{precision:<16}{batch:>6}{crop:>6}{trace:>9.1f}{seconds * 1e3:>10.0f}"
            f"{batch / seconds:>8.2f}")
  tf.keras.mixed_precision.set_global_policy("float32")
  for crop in (128, 256):
    print(f"input pipeline, {crop}x{crop} crops: {pipeline_images_per_second(crop):.0f} img/s "
          "(the model above consumes the img/s column)")


if __name__ == "__main__":
  main()
