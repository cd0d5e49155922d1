"""Realism at decode: a decoder at several realism R beside the decoder it replaces and a
classical codec, at equal bytes per photo, on the held-out photos at each target bpp.

The decoder stage (hific_tf/training/decoder_stage.py) keeps the bitstream, so one file per
photo and target serves every decoder: the baseline codec writes it (`--target_bpp`'s
search, serving/rate_control.py), the baseline decodes it, the candidate decodes the same
file at each R, and the classical codec is searched to the file's bytes. Per target and
decoder: mean bpp, PSNR and LPIPS, patch FID and patch KID (256² patches on the paper's
grids, evaluation/heldout.py) with the jackknife SE, and the paired SE of the candidate's
patch FID minus the baseline's (the ship rule's test, docs/MODELS.md). `--vgg` adds patch FD
through a second network (VGG16 relu5_3): the projected D judges AlexNet features, and a gain
both networks see is not Inception being gamed.

  python bench/realism.py --candidate CODEC_DIR [--baseline small-lo] \
      [--images data/photos/heldout] [--targets 0.14,0.2,0.3] [--realisms 0,1] \
      [--against jxl] [--vgg] [--json eval/realism.jsonl]
"""

import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from tqdm import tqdm

import common
from hific_tf import bitstream, load_codec
from hific_tf import images as images_lib
from hific_tf.evaluation import heldout
from hific_tf.measure import classical, metrics
from hific_tf.measure.lpips import LPIPS
from hific_tf.serving import rate_control


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--candidate", required=True, help="The decoder with the realism knob.")
  parser.add_argument("--baseline", default="small-lo", help="The codec that writes the files.")
  parser.add_argument("--images", default=str(common.HELD_OUT))
  parser.add_argument("--targets", default="0.14,0.2,0.3")
  parser.add_argument("--realisms", default="0,1")
  parser.add_argument("--against", default="jxl")
  parser.add_argument("--vgg", action="store_true",
                      help="Also patch FD through VGG16 features, with its paired SE.")
  parser.add_argument("--json", help="Append one JSON row per target and decoder.")
  args = parser.parse_args()
  paths = images_lib.list_images(args.images)
  baseline = load_codec(args.baseline, precision="float32")
  candidate = load_codec(args.candidate, precision="float32")
  realisms = [float(r) for r in args.realisms.split(",")]
  codec = classical.get_codec(args.against)
  lpips, features = LPIPS("alex"), heldout.InceptionFeatures()
  vgg = heldout.VGGFeatures() if args.vgg else None
  originals, vgg_originals = {}, {}
  print(f"{len(paths)} photos; files by {args.baseline}, decoded by it and by "
        f"{args.candidate} at R {args.realisms}; {args.against} at the same bytes", flush=True)
  for target in (float(t) for t in args.targets.split(",")):
    methods = ["baseline"] + [f"R{r:g}" for r in realisms] + [args.against]
    rows = {m: [] for m in methods}
    collected = {m: {} for m in methods}
    vgg_collected = {m: {} for m in methods}
    for path in tqdm(paths, desc=f"{target:g} bpp", unit="photo"):
      image = images_lib.load_rgb(path)
      name = pathlib.Path(path).stem
      if name not in originals:
        originals[name] = features(image)
        if vgg:
          vgg_originals[name] = vgg(image)
      hific_file = rate_control.compress_to_bpp(baseline, image, target)
      data = hific_file.to_bytes()
      decoded = {"baseline": baseline.decompress(bitstream.HificFile.from_bytes(data))}
      for realism in realisms:
        decoded[f"R{realism:g}"] = candidate.decompress(bitstream.HificFile.from_bytes(data),
                                                        realism=realism)
      match = classical.match_size(codec, image, len(data))
      decoded[args.against] = codec.decode(match.data)
      sizes = {m: len(data) for m in methods}
      sizes[args.against] = len(match.data)
      for method, pixels in decoded.items():
        rows[method].append(metrics.measure(image, pixels, sizes[method], lpips, False))
        collected[method][name] = features(pixels)
        if vgg:
          vgg_collected[method][name] = vgg(pixels)
    photos = [pathlib.Path(p).stem for p in paths]
    print(f"\ntarget {target:g} bpp")
    print(f"{'decoder':<12}{'bpp':>8}{'PSNR':>8}{'LPIPS':>8}{'pFID':>8}{'SE':>6}{'pKID':>9}"
          f"{'pFID - baseline':>17}{'SE':>6}" + (f"{'pFD-VGG':>9}{'- baseline':>11}{'SE':>6}"
                                                  if vgg else ""))
    inception = heldout.versus_baseline(originals, collected, photos)
    second = (heldout.versus_baseline(vgg_originals, vgg_collected, photos, with_kid=False)
              if vgg else {})
    for method in methods:
      means = {k: float(np.mean([r[k] for r in rows[method]])) for k in ("bpp", "psnr", "lpips")}
      statistics = inception[method]
      vgg_row = ({"patch_fd_vgg": second[method]["patch_fid"],
                  "patch_fd_vgg_minus_baseline": second[method]["difference"],
                  "vgg_difference_se": second[method]["difference_se"]} if vgg else {})
      print(f"{method:<12}{means['bpp']:8.4f}{means['psnr']:8.2f}{means['lpips']:8.4f}"
            f"{statistics['patch_fid']:8.1f}{statistics['patch_fid_se']:6.1f}"
            f"{statistics['patch_kid']:9.4f}{statistics['difference']:17.1f}"
            f"{statistics['difference_se']:6.1f}" +
            ("{patch_fd_vgg:9.2f}{patch_fd_vgg_minus_baseline:11.2f}{vgg_difference_se:6.2f}"
             .format(**vgg_row) if vgg else ""), flush=True)
      if args.json:
        with open(args.json, "a", encoding="utf-8") as out:
          out.write(json.dumps(dict(target=target, decoder=method, images=len(photos), **means,
                                    patch_fid=statistics["patch_fid"],
                                    patch_fid_se=statistics["patch_fid_se"],
                                    patch_kid=statistics["patch_kid"],
                                    patch_fid_minus_baseline=statistics["difference"],
                                    difference_se=statistics["difference_se"], **vgg_row)) + "\n")


if __name__ == "__main__":
  main()
