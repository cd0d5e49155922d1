"""The one model against the codecs it replaced, at no more bytes per photo.

Until 1.0.0, small-mi and small-hi were codecs of their own; now they are presets of the one
model (hific_tf/bundled/presets.json) and their weights stay in bundled/compat/ only to
decode the files they wrote. This measures what that trade gives a user on the held-out
photos. Per photo, the replaced codec writes its file (rate 0, as it always coded) and
decodes it; the one model codes the same photo into at most that many bytes (`--max_bytes`'s
search, serving/rate_control.py) and at the preset's rate, and decodes both at its default
realism. Per codec: mean bpp, PSNR and LPIPS, patch FID with its jackknife SE, and the paired
SE of each patch FID minus the replaced codec's (evaluation/heldout.py).

  python bench/one_model.py [--replaced small-mi,small-hi] [--images data/photos/heldout] \\
      [--json eval/one_model.jsonl]
"""

import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from tqdm import tqdm

import common
from hific_tf import images as images_lib
from hific_tf import load_codec
from hific_tf.evaluation import heldout
from hific_tf.measure import metrics
from hific_tf.measure.lpips import LPIPS
from hific_tf.models import zoo
from hific_tf.serving import rate_control


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--replaced", default="small-mi,small-hi",
                      help="Presets whose codec of the same name is kept in bundled/compat/.")
  parser.add_argument("--images", default=str(common.HELD_OUT))
  parser.add_argument("--json", help="Append one JSON row per replaced codec and decoder.")
  args = parser.parse_args()
  paths = images_lib.list_images(args.images)
  photos = [pathlib.Path(p).stem for p in paths]
  lpips, features = LPIPS("alex"), heldout.InceptionFeatures()
  originals = {}
  kept = {zoo.codec_version(zoo.load_card(folder)["fingerprint"]): folder
          for folder in zoo.compat_decoders()}
  for name in args.replaced.split(","):
    preset = zoo.presets()[name]
    replaced = load_codec(str(kept[preset["replaces"]]), precision="float32")
    one_model = load_codec(name, precision="float32")  # The preset: the one model at its rate.
    at_rate = f"{preset['codec']} at rate {preset['rate']:g}"
    methods = [preset["replaces"], f"{preset['codec']} at its bytes", at_rate]
    rows = {m: [] for m in methods}
    collected = {m: {} for m in methods}
    for path, photo in tqdm(list(zip(paths, photos)), desc=name, unit="photo"):
      image = images_lib.load_rgb(path)
      if photo not in originals:
        originals[photo] = features(image)
      files = {methods[0]: replaced.compress(image)}
      files[methods[1]] = rate_control.compress_to_bytes(
          one_model, image, len(files[methods[0]].to_bytes()))
      files[methods[2]] = one_model.compress(image)
      for method, hific_file in files.items():
        coder = replaced if method == methods[0] else one_model
        pixels = coder.decompress(hific_file)
        rows[method].append(metrics.measure(image, pixels, len(hific_file.to_bytes()), lpips,
                                            False))
        collected[method][photo] = features(pixels)
    statistics = heldout.versus_baseline(originals, collected, photos)
    print(f"\n{name}: {len(photos)} photos")
    print(f"{'decoder':<28}{'bpp':>8}{'PSNR':>8}{'LPIPS':>8}{'pFID':>8}{'SE':>6}"
          f"{'pFID - replaced':>17}{'SE':>6}")
    for method in methods:
      means = {k: float(np.mean([r[k] for r in rows[method]])) for k in ("bpp", "psnr", "lpips")}
      row = statistics[method]
      print(f"{method:<28}{means['bpp']:8.4f}{means['psnr']:8.2f}{means['lpips']:8.4f}"
            f"{row['patch_fid']:8.1f}{row['patch_fid_se']:6.1f}{row['difference']:17.1f}"
            f"{row['difference_se']:6.1f}", flush=True)
      if args.json:
        with open(args.json, "a", encoding="utf-8") as out:
          out.write(json.dumps(dict(preset=name, decoder=method, images=len(photos), **means,
                                    patch_fid=row["patch_fid"], patch_fid_se=row["patch_fid_se"],
                                    patch_fid_minus_replaced=row["difference"],
                                    difference_se=row["difference_se"])) + "\n")


if __name__ == "__main__":
  main()
