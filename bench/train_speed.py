"""Training speed: ms per step and images/s, tiny configs and the full hific-lo, fp32 and bf16.

A few steps of the real train_step (rate, MSE, LPIPS, and in stage 2 the D step) on random
crops, after one step for tracing. Full HiFiC needs a GPU to train for real; these are the CPU
figures of this machine.

With --compare, one stage-2 step of small-hific-lo (4 + 4 crops of 256²) in every
configuration hific_tf can run on a CPU, each in a fresh process (kernel choice is made when
TensorFlow loads), side by side in one run: TensorFlow's default kernels (the baseline:
TensorFlow imported before hific_tf, so nothing is changed), oneDNN off and on, bfloat16,
XLA, and what `hific train --precision auto` picks here; ms/step, trace time and the ratio to
the baseline. Hold other work off the cores while it runs (`bin/train_ladder.py pause`).

The machine classes this project trains on differ in their vector units, and the one at hand
stands in for the others where it can: oneDNN reads ONEDNN_MAX_CPU_ISA and then uses only the
kernels of a lesser CPU (AVX2 as on the AVX2-only EPYCs; AVX-512 with bfloat16 but no AMX as
on the Zen 4 EPYCs). TensorFlow's own kernels are the same code on every x86 CPU (its wheel is
built for AVX), so those rows against "oneDNN off" estimate what `auto` gains on such a CPU,
where oneDNN is off by default. An estimate: the caches, memory and clock are this machine's.

With --peer_src, also the paper's hific-lo stage-2 step (2 + 2 crops of 256²) in the PyTorch
HiFiC port beside hific_tf's, each in its own process: the port's networks come only at the
paper's widths, so the small configs have no peer.

With --profile, where one step's time goes instead: a few steps of a config (default
small-hific-lo, 4 + 4 crops of 256², as `hific train --precision auto` traces them) under
TensorFlow's profiler, the ops' own time added up per network (E, G, the hyperprior, LPIPS,
D; ops under the gradient tape's scope are the backward pass) and per op type. Times are
summed over the threads that ran the ops, so they add up to more than the step's wall time on
a multi-core machine; it is the split that says what to make faster.

Every step here is set up by hific_tf.training.train.build_for_training and step_function,
the ones `hific train` uses, so a figure here is a figure of `hific train`'s step.

With --decoder_stage, the decoder-only GAN step (training/decoder_stage.py: G with the realism
knob and its projected D on cached latents, E and the hyperprior frozen), the same stage with
HiFiC's PatchGAN as D, and today's GAN step (stage "hific": E, hyperprior, G and D) of the
same network and batch, steps alternating pair by pair
in one process so that both see the same load; the ratio is the figure.

Usage: python bench/train_speed.py [--steps 3]
       python bench/train_speed.py --decoder_stage [--steps 6] [--batch 8]
       python bench/train_speed.py --compare [--steps 4]
       python bench/train_speed.py --compare --peer_src PORT --peer_python PORT_VENV/bin/python
       python bench/train_speed.py --profile [--config small-hific-lo] [--precision auto]
"""

import argparse
import collections
import glob
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("HIFIC_BENCH_TF_FIRST"):
  import tensorflow  # noqa: F401  (before hific_tf: TensorFlow keeps its default kernels)

import port_peer

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


# (label, environment, precision, jit): each runs in its own process.
# HIFIC_BENCH_PLAIN_NORM: ChannelNorm as plain ops instead of one XLA kernel (`hific train`'s
# way); the first row is the step as TensorFlow alone would run it.
VARIANTS = (
    ("TF default kernels, float32, plain norm", {"HIFIC_BENCH_TF_FIRST": "1",
                                                 "HIFIC_BENCH_PLAIN_NORM": "1"},
     "float32", False),
    ("oneDNN off, float32, plain norm", {"TF_ENABLE_ONEDNN_OPTS": "0",
                                         "HIFIC_BENCH_PLAIN_NORM": "1"}, "float32", False),
    ("oneDNN off, float32", {"TF_ENABLE_ONEDNN_OPTS": "0"}, "float32", False),
    ("oneDNN on, float32, plain norm", {"TF_ENABLE_ONEDNN_OPTS": "1",
                                        "HIFIC_BENCH_PLAIN_NORM": "1"}, "float32", False),
    ("oneDNN on, float32", {"TF_ENABLE_ONEDNN_OPTS": "1"}, "float32", False),
    ("oneDNN on, mixed_bfloat16", {"TF_ENABLE_ONEDNN_OPTS": "1"}, "mixed_bfloat16", False),
    ("oneDNN on, float32, XLA", {"TF_ENABLE_ONEDNN_OPTS": "1"}, "float32", True),
    ("hific train's choice (auto)", {}, "auto", "auto"),
)
# The same, for a lesser CPU: oneDNN capped at its ISA, in what `auto` runs there.
LESSER_CPUS = tuple(
    (label, {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": isa, **plain}, precision,
     False)
    for label, isa, precision, plain in (
        ("as on AVX2 only: oneDNN, float32, plain norm", "AVX2", "float32",
         {"HIFIC_BENCH_PLAIN_NORM": "1"}),
        ("as on AVX2 only: oneDNN, float32", "AVX2", "float32", {}),
        ("as on AVX-512+BF16: oneDNN, float32", "AVX512_CORE_BF16", "float32", {}),
        ("as on AVX-512+BF16: oneDNN, mixed_bfloat16", "AVX512_CORE_BF16", "mixed_bfloat16",
         {})))


def timed_step(config_name, batch, crop, precision, jit, steps, fused_norms=True):
  """{trace, times}: `steps` generator steps of `hific train`'s step after the traced one.

  Random crops: 2 x `batch` in stage 2 (G's and D's), `batch` in stage 1.
  """
  import tensorflow as tf

  from hific_tf import configs
  from hific_tf.training import train
  config = configs.get_config(config_name)
  # Built and traced under the run's policy, as `hific train` does.
  with train.global_policy(precision):
    model = train.build_for_training(config, crop_size=crop, jit_compile=jit)
    step = train.step_function(model, fused_norms=fused_norms)
    images = tf.cast(tf.random.stateless_uniform(
        [batch * (2 if config.use_gan else 1), crop, crop, 3], [0, 1], 0, 256, tf.int32),
        tf.uint8)
    start = time.perf_counter()
    float(step(images)["loss"])
    trace = time.perf_counter() - start
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      float(step(images)["loss"])
      times.append(time.perf_counter() - start)
  return dict(trace=trace, times=times, step=step, images=images)


def decoder_stage_against_gan_step(steps, batch, crop=256, decoder_config="small-decoder-gan"):
  """ms per step of the decoder stage and of the full GAN step, alternating, one process."""
  import tensorflow as tf

  from hific_tf import configs, runtime
  from hific_tf.training import train
  precision, _ = runtime.choose("auto", False)
  decoder = configs.get_config(decoder_config)
  full = decoder.replace(stage="hific", realism=False)
  images = tf.cast(tf.random.stateless_uniform([2 * batch, crop, crop, 3], [0, 1], 0, 256,
                                               tf.int32), tf.uint8)
  runs = {}
  with train.global_policy(precision):
    for label, config in (("decoder stage", decoder),
                          ("decoder stage, PatchGAN D", decoder.replace(discriminator="patchgan",
                                                                       diff_augment="")),
                          ("GAN step (E, hyperprior, G, D)", full)):
      model = train.build_for_training(config, crop_size=crop)
      step = train.step_function(model)
      if config.stage == "decoder":
        latents = model.encode(images[0])  # Any y of the right shape: the step's cost is G's.
        shape = tf.concat([[batch], tf.shape(latents)[1:]], 0)
        latents = tf.random.stateless_normal(shape, [0, 2]) * 3.
        inputs = (images[:batch], latents)
      else:
        inputs = images  # G's batch and D's batch, interleaved (train_step).
      float(step(inputs)["loss"])  # Traced.
      runs[label] = (step, inputs, [])
    for _ in range(steps):
      for step, inputs, times in runs.values():
        start = time.perf_counter()
        float(step(inputs)["loss"])
        times.append(time.perf_counter() - start)
  print(f"{decoder_config} against its network's GAN step: batch {batch} of {crop}² crops for "
        f"G (the GAN step feeds D {batch} more), {precision}, {steps} alternating steps")
  medians = {label: sorted(times)[len(times) // 2] for label, (_, _, times) in runs.items()}
  baseline = medians["GAN step (E, hyperprior, G, D)"]
  for label, median in medians.items():
    print(f"  {label:<34}{median * 1e3:>8.0f} ms/step (median)  {median / baseline:>5.2f}x")


def child(precision, jit, steps, config, batch):
  """One configuration's step in this fresh process (kernels are chosen as it loads TF)."""
  from hific_tf import runtime
  precision, jit = runtime.choose(precision, jit)
  result = timed_step(config, batch, 256, precision, jit, steps,
                      fused_norms=not os.environ.get("HIFIC_BENCH_PLAIN_NORM"))
  print(json.dumps(dict(trace=result["trace"], times=result["times"], precision=precision,
                        jit=jit, kernels=runtime.KERNELS)))


def our_step(label, env, precision, jit, steps, config, batch):
  """One configuration's step in its own process: its result, or None after saying why."""
  environment = {k: v for k, v in os.environ.items()
                 if k not in ("TF_ENABLE_ONEDNN_OPTS", "HIFIC_BENCH_TF_FIRST",
                              "ONEDNN_MAX_CPU_ISA", "HIFIC_BENCH_PLAIN_NORM")}
  environment.update(env)
  done = subprocess.run([sys.executable, __file__, "--child", precision, json.dumps(jit),
                         str(steps), config, str(batch)],
                        capture_output=True, text=True, env=environment, check=False)
  if done.returncode:
    reason = (done.stderr.strip().splitlines() or ["?"])[-1][:80]
    print(f"{label:<32}  failed: {reason}")
    return None
  result = json.loads(done.stdout.strip().splitlines()[-1])
  result["best"] = min(result["times"])
  result["median"] = sorted(result["times"])[len(result["times"]) // 2]
  return result


def compare(steps):
  """Every CPU configuration in its own process; ratios to TensorFlow's default kernels."""
  from hific_tf import runtime
  print(f"small-hific-lo stage-2 step, 4 + 4 crops of 256², {steps} steps after tracing, "
        f"{os.cpu_count()} CPU threads, native bfloat16: {runtime.native_bfloat16() or 'no'}")
  print(f"{'configuration':<44}{'trace s':>9}{'min ms':>9}{'median ms':>11}{'vs default':>12}"
        f"{'vs oneDNN off':>15}")
  baseline = eigen = None
  for label, env, precision, jit in VARIANTS + LESSER_CPUS:
    result = our_step(label, env, precision, jit, steps, "small-hific-lo", 4)
    if result is None:
      continue
    baseline = baseline or result["median"]
    if env.get("TF_ENABLE_ONEDNN_OPTS") == "0" and eigen is None:
      eigen = result["median"]
    chosen = f"  ({result['precision']}, XLA {'on' if result['jit'] else 'off'})" if (
        precision == "auto") else ""
    against_eigen = f"{eigen / result['median']:>14.2f}x" if eigen else ""
    print(f"{label:<44}{result['trace']:>9.1f}{result['best'] * 1e3:>9.0f}"
          f"{result['median'] * 1e3:>11.0f}{baseline / result['median']:>11.2f}x"
          f"{against_eigen}{chosen}")


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


def profile(args):
  """Op time per network and direction, and per op type, of a few profiled steps."""
  import numpy as np
  import tensorflow as tf

  from hific_tf import runtime
  precision, _ = runtime.choose(args.precision, False)
  result = timed_step(args.config, args.batch, 256, precision, False, 3)
  step, images = result["step"], result["images"]
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    for _ in range(args.profile_steps):
      float(step(images)["loss"])
    tf.profiler.experimental.stop()
    by_part, by_type = op_times(logdir, args.profile_steps)
  print(f"{args.config}, {precision}, {args.batch} + {args.batch} crops of 256², "
        f"{os.cpu_count()} CPU threads, kernels: {runtime.KERNELS}")
  total = sum(by_part.values())
  print(f"step wall time (median of 3, unprofiled): {np.median(result['times']) * 1e3:.0f} ms; "
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


def compare_with_peer(peer_src, peer_python, steps, batch):
  """The paper's hific-lo stage-2 step here and in the PyTorch port, side by side.

  The port's networks have the paper's widths only, so the peer step is hific-lo's: a G step
  on `batch` crops and a D step on `batch` others, as both codebases train. The port runs in
  its own venv (bench/port_peer.py --train says what stands in for its download).
  """
  print(f"\nhific-lo stage-2 step, {batch} + {batch} crops of 256², best of {steps} after the "
        "first, each in its own process")
  print(f"{'implementation':<52}{'first s':>9}{'best ms':>10}{'vs port':>9}")
  port, failure = port_peer.run(peer_src, peer_python, "--train", "--batch", batch,
                                "--repeats", steps)
  if failure:
    print(f"the port failed: {failure}")
    return
  port_ms = port["train_step_ms"]
  print(f"{'PyTorch port, torch ' + port['torch'] + ', float32':<52}{port['first_step_s']:>9.1f}"
        f"{port_ms:>10.0f}{1:>8.2f}x")
  for label, env, precision, jit in (VARIANTS[0], VARIANTS[-1]):
    result = our_step(label, env, precision, jit, steps, "hific-lo", batch)
    if result is None:
      continue
    if precision == "auto":
      label = f"auto ({result['precision']})"
    print(f"{'hific_tf, ' + label:<52}{result['trace']:>9.1f}{result['best'] * 1e3:>10.0f}"
          f"{port_ms / (result['best'] * 1e3):>8.2f}x")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--compare", action="store_true",
                      help="One step in every CPU configuration, each in its own process.")
  parser.add_argument("--peer_src", help="A checkout of the PyTorch port: with --compare, "
                      "also the paper's hific-lo step here and in the port.")
  parser.add_argument("--peer_python", help="The Python of the port's own venv (torch); "
                      "default: this one.")
  parser.add_argument("--peer_batch", type=int, default=2)
  parser.add_argument("--profile", action="store_true",
                      help="Where a step's time goes, per network and op type.")
  parser.add_argument("--config", default="small-hific-lo", help="The config --profile runs.")
  parser.add_argument("--precision", default="auto", help="The precision --profile runs.")
  parser.add_argument("--batch", type=int, default=4,
                      help="--profile: crops for G (and as many for D).")
  parser.add_argument("--profile_steps", type=int, default=2, help="Profiled steps.")
  parser.add_argument("--top", type=int, default=15, help="Op types --profile lists.")
  parser.add_argument("--decoder_stage", action="store_true",
                      help="The decoder-only GAN step beside the full GAN step, alternating.")
  parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.decoder_stage:
    return decoder_stage_against_gan_step(args.steps, args.batch)
  if args.child:
    precision, jit, steps, config, batch = args.child
    return child(precision, json.loads(jit), int(steps), config, int(batch))
  if args.profile:
    return profile(args)
  if args.compare:
    compare(args.steps)
    if args.peer_src:
      compare_with_peer(args.peer_src, args.peer_python, args.steps, args.peer_batch)
    return None
  import tensorflow as tf
  print(f"{os.cpu_count()} CPU threads, TF {tf.__version__}; batch is the generator batch "
        "(stage 2 feeds D as many again)")
  print(f"{'config':<16}{'precision':<16}{'batch':>6}{'crop':>6}{'trace s':>9}{'ms/step':>10}"
        f"{'img/s':>8}")
  for name, batch, crop in CASES:
    for precision in ("float32", "mixed_bfloat16"):
      result = timed_step(name, batch, crop, precision, False, args.steps)
      seconds = sum(result["times"]) / args.steps
      print(f"{name:<16}{precision:<16}{batch:>6}{crop:>6}{result['trace']:>9.1f}"
            f"{seconds * 1e3:>10.0f}{batch / seconds:>8.2f}")
  for crop in (128, 256):
    print(f"input pipeline, {crop}x{crop} crops: {pipeline_images_per_second(crop):.0f} img/s "
          "(the model above consumes the img/s column)")
  return None


if __name__ == "__main__":
  main()
