"""Where a training step's time goes: op time per network, forward and backward, and per op.

Runs a few stage-2 steps of a config (default small-hific-lo, 4 + 4 crops of 256², as
`hific train --precision auto` traces them) under TensorFlow's profiler and adds up the ops'
own time, per network (E, G, the hyperprior, LPIPS, D; ops under the gradient tape's scope
are the backward pass) and per op type. Times are summed over the threads that ran the ops, so they add up to more than
the step's wall time on a multi-core machine; it is the split that says what to make faster.
Hold other work off the cores while it runs (`bin/train_ladder.py pause`).

Usage: python bench/train_profile.py [--config small-hific-lo] [--precision auto] [--steps 2]
"""

import argparse
import collections
import glob
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

# hific_tf loads TensorFlow itself, after choosing its kernels (runtime.py).
from hific_tf import configs, runtime
from hific_tf.models.hific import layers
from hific_tf.models.hific.model import HiFiC

# Name scopes of the step's parts, matched in this order against each op's name.
PARTS = (("estimate_tails", "z offset (tfc)"), ("lpips", "LPIPS"), ("discriminator", "D"),
         ("generator", "G"), ("encoder", "E"), ("hyperprior", "hyperprior"),
         ("adam", "optimizers"))

# Ops whose events enclose other ops' events (loops, conditionals, function calls).
CONTAINERS = {"Process", "Run", "While", "StatelessWhile", "If", "StatelessIf", "Case",
              "PartitionedCall", "StatefulPartitionedCall"}


def op_times(logdir, steps):
  """{(part, "forward"|"backward"): ms per step} and {op type: ms per step} from a trace."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  path = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]
  space = xplane_pb2.XSpace()
  space.ParseFromString(pathlib.Path(path).read_bytes())
  by_part, by_type = collections.Counter(), collections.Counter()
  for plane in space.planes:
    metadata = plane.event_metadata
    for line in plane.lines:
      for event in line.events:
        name = metadata[event.metadata_id].name
        if ":" not in name:
          continue  # Executor and function wrappers, not ops.
        op_name, op_type = name.rsplit(":", 1)
        if op_type in CONTAINERS or op_type.strip().startswith("__inference"):
          continue  # Its time is its ops' time, counted where they are.
        lowered = op_name.lower()
        part = next((label for key, label in PARTS if key in lowered), "other")
        direction = "backward" if "gradient_tape" in lowered else "forward"
        milliseconds = event.duration_ps / 1e9 / steps
        by_part[part, direction] += milliseconds
        by_type[op_type] += milliseconds
  return by_part, by_type


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="small-hific-lo")
  parser.add_argument("--precision", default="auto")
  parser.add_argument("--batch", type=int, default=4, help="Crops for G (and as many for D).")
  parser.add_argument("--steps", type=int, default=2, help="Profiled steps.")
  parser.add_argument("--top", type=int, default=15, help="Op types to list.")
  args = parser.parse_args()
  import tensorflow as tf
  precision, _ = runtime.choose(args.precision, False)
  tf.keras.mixed_precision.set_global_policy(precision)
  tf.keras.utils.set_random_seed(0)
  model = HiFiC(configs.get_config(args.config)).build_all(64)
  model.compile()
  images = tf.cast(tf.random.stateless_uniform([2 * args.batch, 256, 256, 3], [0, 1], 0, 256,
                                               tf.int32), tf.uint8)
  with layers.fused_norms():  # As `hific train` traces its step.
    step = tf.function(model.train_step)
    float(step(images)["loss"])
  times = []
  for _ in range(3):
    start = time.perf_counter()
    float(step(images)["loss"])
    times.append(time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
      float(step(images)["loss"])
    tf.profiler.experimental.stop()
    by_part, by_type = op_times(logdir, args.steps)
  print(f"{args.config}, {precision}, {args.batch} + {args.batch} crops of 256², "
        f"{os.cpu_count()} CPU threads, kernels: {runtime.KERNELS}")
  total = sum(by_part.values())
  print(f"step wall time (median of 3, unprofiled): {np.median(times) * 1e3:.0f} ms; "
        f"op time summed over threads: {total:.0f} ms per step")
  print(f"{'part':<16}{'forward ms':>12}{'backward ms':>13}{'share':>8}")
  parts = sorted({part for part, _ in by_part},
                 key=lambda p: -(by_part[p, "forward"] + by_part[p, "backward"]))
  for part in parts:
    both = by_part[part, "forward"] + by_part[part, "backward"]
    print(f"{part:<16}{by_part[part, 'forward']:>12.0f}{by_part[part, 'backward']:>13.0f}"
          f"{both / total:>8.0%}")
  print(f"{'op type':<40}{'ms':>8}")
  for op_type, milliseconds in by_type.most_common(args.top):
    print(f"{op_type:<40}{milliseconds:>8.0f}")


if __name__ == "__main__":
  main()
