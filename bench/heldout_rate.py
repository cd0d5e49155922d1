"""The rate a training run's latest checkpoint spends on whole held-out photos.

Training steers the rate on 256² crops; a rung is judged on whole photos, which cost more bits
per pixel (small-lo stage 2: about 0.12 bpp on crops, 0.155 on the held-out photos). This
prints the entropy models' rate of rounded latents on every held-out photo (encoder and
hyperprior only, no generator, no range coder: a few seconds a photo on a CPU), so a run's
crop target (`crop_target_bpp`) can be checked while it trains. The real files add a header
of a few bytes; `hific evaluate` measures those.

With --against CODEC it also runs the generator and prints LPIPS of HiFiC and of CODEC at the
same per-image size (the codec gets the entropy models' bytes, a few header bytes fewer than a
real file): the check a rung must pass before it ships, cheap enough to pick a checkpoint while training.
With --patch_fid as well, the patch FID of both against the photos (HiFiC's realism measure,
the one the top rung is held back by; `hific evaluate` computes the same on real files).

  python bench/heldout_rate.py --model_dir runs/s2-lo [--images tests/data/heldout]
  python bench/heldout_rate.py --model small-lo [--against jpeg [--patch_fid]]
"""

import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from hific_tf import images as images_lib
from hific_tf.evaluation import metrics


def heldout_bpp(model, paths, against=None, patches=None):
  """{photo name: bits per pixel of its rounded latents} under `model`'s entropy models.

  With `against` (a classical codec's name), {name: (bpp, LPIPS, codec's bpp, codec's LPIPS)}.
  `patches`, a dict, then gathers the 256x256 patches of the photos, of HiFiC's
  reconstructions and of the codec's decodes (keys "photos", "hific", `against`).
  """
  if against:
    from hific_tf.evaluation import classical
    from hific_tf.perceptual.lpips import LPIPS
    codec, lpips = classical.get_codec(against), LPIPS("alex")
  rates = {}
  for path in paths:
    image = images_lib.load_rgb(path)
    y = model.analyze(tf.constant(image))
    outputs = model.hyperprior(y, training=False)
    bits = float(outputs.y_bits_quantized[0] + outputs.z_bits_quantized[0])
    bpp = bits / (image.shape[0] * image.shape[1])
    if not against:
      rates[path.stem] = bpp
      continue
    reconstruction = model.synthesize(outputs.y_hat, image.shape[:2]).numpy()
    match = classical.match_size(codec, image, int(np.ceil(bits / 8)))
    decoded = codec.decode(match.data)
    rates[path.stem] = (bpp, lpips.image_distance(image, reconstruction), match.bpp,
                        lpips.image_distance(image, decoded))
    if patches is not None:
      for key, pixels in (("photos", image), ("hific", reconstruction), (against, decoded)):
        patches.setdefault(key, []).extend(metrics.patches(pixels))
  return rates


def patch_fids(patches):
  """{key: patch FID against the photos' patches} for every other key of `patches`."""
  from hific_tf.perceptual.inception import InceptionV3
  network = InceptionV3()
  reference = network(patches["photos"])
  return {key: metrics.fid(reference, network(tiles))
          for key, tiles in patches.items() if key != "photos"}


def add_model_source(parser):
  """--model_dir or --model: what the held-out benchmarks measure."""
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--model_dir", help="A `hific train` model_dir (latest checkpoint).")
  source.add_argument("--model", help="A bundled codec's name.")
  parser.add_argument("--images", default="tests/data/heldout")


def load_model(args):
  """(model, label, target bpp) from the flags of `add_model_source`."""
  if args.model_dir:
    from hific_tf.training import train as train_lib
    return (train_lib.load_trained(args.model_dir), train_lib.latest_checkpoint(args.model_dir),
            train_lib.read_config(args.model_dir).target_bpp)
  from hific_tf import zoo
  return zoo.build_model(args.model), args.model, zoo.load_card(args.model)["target_bpp"]


def mean_against(model, paths, against="jpeg"):
  """Means over `paths`: (bpp, LPIPS, the codec's bpp, the codec's LPIPS) at equal size."""
  return np.array(list(heldout_bpp(model, paths, against).values())).mean(axis=0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_model_source(parser)
  parser.add_argument("--against", help="A classical codec (jpeg, webp, avif, heic, jxl).")
  parser.add_argument("--patch_fid", action="store_true",
                      help="With --against: also the patch FID of both (about a minute more).")
  parser.add_argument("--json", help="Also write the means as one JSON line to this file "
                      "('-': a last line on stdout).")
  args = parser.parse_args()
  model, label, target = load_model(args)
  paths = [pathlib.Path(p) for p in images_lib.list_images(args.images)]
  if args.patch_fid and not args.against:
    parser.error("--patch_fid needs --against")
  patches = {} if args.patch_fid else None
  rates = heldout_bpp(model, paths, args.against, patches)
  fids = patch_fids(patches) if patches else {}
  for name, row in rates.items():
    if args.against:
      print(f"  {name:32s} {row[0]:.4f} bpp LPIPS {row[1]:.3f} | {args.against} "
            f"{row[2]:.4f} bpp LPIPS {row[3]:.3f}")
    else:
      print(f"  {name:32s} {row:.4f} bpp")
  means = np.mean(list(rates.values()), axis=0)
  mean = float(np.atleast_1d(means)[0])
  print(f"{label}: mean {mean:.4f} bpp on {len(rates)} photos, target {target} "
        f"({100 * (mean / target - 1):+.1f}%)")
  if args.against:
    print(f"  mean LPIPS {means[1]:.4f}; {args.against} at the same size per photo: "
          f"{means[2]:.4f} bpp, LPIPS {means[3]:.4f}")
  if fids:
    print(f"  patch FID {fids['hific']:.1f}; {args.against} {fids[args.against]:.1f} "
          f"({len(patches['photos'])} patches)")
  if args.json:
    summary = dict(zip(("bpp", "lpips", "against_bpp", "against_lpips"),
                       map(float, np.atleast_1d(means))), source=str(label),
                   against=args.against, images=len(rates))
    if fids:
      summary.update(patch_fid=fids["hific"], against_patch_fid=fids[args.against])
    line = json.dumps(summary)
    if args.json == "-":
      print(line)
    else:
      with open(args.json, "a", encoding="utf-8") as out:
        out.write(line + "\n")


if __name__ == "__main__":
  main()
