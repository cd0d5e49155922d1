"""The rate a training run's latest checkpoint spends on whole held-out photos.

Training steers the rate on 256² crops; a rung is judged on whole photos, which cost more bits
per pixel (small-lo stage 2: about 0.12 bpp on crops, 0.155 on the held-out photos). This
prints the entropy models' rate of rounded latents on every held-out photo (encoder and
hyperprior only, no generator, no range coder: a few seconds a photo on a CPU), so a run's
crop target (`crop_target_bpp`) can be checked while it trains. The real files add a header
of a few bytes; `hific evaluate` measures those.

  python bench/heldout_rate.py --model_dir runs/s2-lo [--images tests/data/heldout]
  python bench/heldout_rate.py --model small-lo
"""

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from hific_tf import images as images_lib  # pylint: disable=g-import-not-at-top


def heldout_bpp(model, paths):
  """{photo name: bits per pixel of its rounded latents} under `model`'s entropy models."""
  rates = {}
  for path in paths:
    image = images_lib.load_rgb(path)
    y = model.analyze(tf.constant(image))
    outputs = model.hyperprior(y, training=False)
    bits = float(outputs.y_bits_quantized[0] + outputs.z_bits_quantized[0])
    rates[path.stem] = bits / (image.shape[0] * image.shape[1])
  return rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--model_dir", help="A `hific train` model_dir (latest checkpoint).")
  source.add_argument("--model", help="A bundled codec's name.")
  parser.add_argument("--images", default="tests/data/heldout")
  args = parser.parse_args()
  if args.model_dir:
    from hific_tf.training import train as train_lib  # pylint: disable=g-import-not-at-top
    model = train_lib.load_trained(args.model_dir)
    label = train_lib.latest_checkpoint(args.model_dir)
    target = train_lib.read_config(args.model_dir).target_bpp
  else:
    from hific_tf.serving import zoo  # pylint: disable=g-import-not-at-top
    model = zoo.build_model(args.model)
    label, target = args.model, zoo.load_card(args.model)["target_bpp"]
  paths = [pathlib.Path(p) for p in images_lib.list_images(args.images)]
  rates = heldout_bpp(model, paths)
  for name, bpp in rates.items():
    print(f"  {name:32s} {bpp:.4f} bpp")
  mean = float(np.mean(list(rates.values())))
  print(f"{label}: mean {mean:.4f} bpp on {len(rates)} photos, target {target} "
        f"({100 * (mean / target - 1):+.1f}%)")


if __name__ == "__main__":
  main()
