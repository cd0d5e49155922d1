"""One codec's whole rate-distortion curve beside the rungs' points and the classical codecs.

The codec (a bundled name, a training run's model_dir, any `hific_tf.load_codec` source) is
searched per photo to each `--targets` bpp (serving/rate_control.py: real `.hific` files within
2% of the target), each rung is measured at its own rate, and every classical codec is
searched per photo to the same file size as HiFiC's (hific_tf/evaluation/heldout.py, as
`hific evaluate --match`). Prints one row per point: bpp, PSNR, LPIPS and patch FID, with the
classical codecs' LPIPS and patch FID at the same bytes; `--plot` draws LPIPS against bpp.

  python bench/rate_curve.py --model small-lo [--targets 0.12,0.14,0.2,0.3,0.4] \
      [--rungs small-lo,small-mi,small-hi] [--codecs jpeg,webp,avif,heic,jxl] \
      [--images data/photos/heldout] [--json curve.jsonl] [--plot curve.png]

`--landing` (`--model auto`: the bundled codec nearest each target, as the CLI picks it)
measures only the search: per target, every photo's landing (relative error of its
file's bpp, container included) and the encode time against one plain `compress` of the same
photo in the same run, with `--max_bytes` at each photo's target size too.
"""

import argparse
import hashlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common
from hific_tf import images as images_lib
from hific_tf import load_codec
from hific_tf.evaluation import heldout
from hific_tf.measure.lpips import LPIPS


class CodedOnce:
  """A coder that codes each photo once: every classical codec is matched to the same files."""

  def __init__(self, coder):
    self.coder = coder
    self.bytes_from = coder.bytes_from
    self.done = {}

  def code(self, image):
    key = hashlib.sha256(image.tobytes()).hexdigest()
    if key not in self.done:
      self.done[key] = self.coder.code(image)
    return self.done[key]


def measure_point(codec, photos, codecs, lpips, target_bpp=None, rate=0.):
  """{"hific": summary, codec name: summary of it at HiFiC's size per photo}."""
  rows = {}
  coder = CodedOnce(heldout.FileCoder(codec, rate=rate, target_bpp=target_bpp))
  for index, against in enumerate(codecs or [None]):
    # HiFiC's own figures come with the first comparison (its files are the same each time).
    report = heldout.measure(coder, photos,
                             against=against, patch_fid=True, with_ms_ssim=False,
                             lpips=lpips)
    summary = report.summary()
    if index == 0:
      rows["hific"] = {key: summary[key] for key in ("bpp", "psnr", "lpips", "patch_fid",
                                                      "patch_fid_se") if key in summary}
    if against:
      rows[against] = {"bpp": summary["against_bpp"], "lpips": summary["against_lpips"],
                       "patch_fid": summary.get("against_patch_fid")}
  return rows


def landing(model, paths, targets):
  """Prints, per target, how far the searched files land and what the search costs. `model`
  "auto": the bundled codec nearest each target, as `hific compress --target_bpp` picks it."""
  from hific_tf.serving import rate_control, resolve
  print(f"{'target':>8}{'photos':>8}{'worst error':>13}{'mean error':>12}"
        f"{'max_bytes: under, worst':>26}{'time / plain':>14}")
  for target in targets:
    codec = load_codec(resolve.codec_name(None if model == "auto" else model, target),
                       precision="float32")
    errors, under, budget_errors, ratios = [], [], [], []
    for path in paths:
      image = images_lib.load_rgb(path)
      pixels = image.shape[0] * image.shape[1]
      _, plain = common.timed(lambda: codec.compress(image))
      found, searched = common.timed(lambda: rate_control.compress_to_bpp(codec, image, target))
      errors.append(abs(found.bits_per_pixel() - target) / target)
      ratios.append(searched / plain)
      budget = int(target * pixels / 8)
      fitted = rate_control.compress_to_bytes(codec, image, budget)
      size = len(fitted.to_bytes())
      under.append(size <= budget)
      budget_errors.append((budget - size) / budget)
    print(f"{target:>8.3f}{len(paths):>8}{100 * max(errors):>12.2f}%{100 * sum(errors) / len(errors):>11.2f}%"
          f"{sum(under):>14}/{len(under)}, {100 * max(budget_errors):>5.2f}%"
          f"{sum(ratios) / len(ratios):>13.2f}x")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="The codec whose curve is drawn.")
  parser.add_argument("--targets", default="0.12,0.14,0.2,0.3,0.4")
  parser.add_argument("--rates", help="Instead of --targets: the codec at these fixed rates "
                      "(comma-separated; 0 is its own).")
  parser.add_argument("--precision", default="float32",
                      help="The generator's compute type (load_codec's precision; auto: "
                      "bfloat16 where the CPU has it).")
  parser.add_argument("--rungs", default="small-lo,small-mi,small-hi",
                      help="Codecs measured at their own rate beside the curve ('' for none).")
  parser.add_argument("--codecs", default="jpeg,webp,avif,heic,jxl")
  parser.add_argument("--images", default=str(common.HELD_OUT))
  parser.add_argument("--json", help="Append one JSON row per point.")
  parser.add_argument("--plot", help="LPIPS against bpp as a PNG.")
  parser.add_argument("--landing", action="store_true",
                      help="Only where the searched files land and what the search costs.")
  args = parser.parse_args()
  photos = images_lib.list_images(args.images)
  if args.landing:
    landing(args.model, photos, [float(t) for t in args.targets.split(",")])
    return
  codecs = [c for c in args.codecs.split(",") if c]
  lpips = LPIPS("alex")
  points = []
  curve = load_codec(args.model, precision=args.precision)
  if args.rates:
    for rate in (float(r) for r in args.rates.split(",")):
      points.append(("curve", f"{args.model} rate", rate,
                     measure_point(curve, photos, codecs, lpips, rate=rate)))
  else:
    for target in (float(t) for t in args.targets.split(",")):
      points.append(("curve", args.model, target, measure_point(curve, photos, codecs, lpips,
                                                                target)))
  for rung in (r for r in args.rungs.split(",") if r):
    points.append(("rung", rung, None, measure_point(
        load_codec(rung, precision=args.precision), photos, codecs, lpips)))
  print(f"{len(photos)} photos from {args.images}; classical codecs at HiFiC's size per photo")
  header = f"{'point':<28}{'bpp':>7}{'PSNR':>7}{'LPIPS':>7}{'pFID':>6}"
  print(header + "".join(f"{c + ' LPIPS/pFID':>19}" for c in codecs))
  for kind, name, target, rows in points:
    hific = rows["hific"]
    label = f"{name} @{target:g}" if target is not None else f"{name} (own rate)"
    line = (f"{label:<28}{hific['bpp']:>7.3f}{hific['psnr']:>7.2f}{hific['lpips']:>7.3f}"
            f"{hific.get('patch_fid', float('nan')):>6.0f}")
    line += "".join(f"{rows[c]['lpips']:>12.3f}/{rows[c]['patch_fid'] or float('nan'):<6.0f}"
                    for c in codecs)
    print(line)
    if args.json:
      with open(args.json, "a", encoding="utf-8") as out:
        out.write(json.dumps({"kind": kind, "name": name, "target_bpp": target, **rows}) + "\n")
  if args.plot:
    plot(points, codecs, args.plot)


def plot(points, codecs, path):
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  figure, axis = plt.subplots(figsize=(6, 4.2))
  curve = [rows["hific"] for kind, _, _, rows in points if kind == "curve"]
  axis.plot([r["bpp"] for r in curve], [r["lpips"] for r in curve], "*-", markersize=10,
            label="HiFiC, one model")
  for kind, name, _, rows in points:
    if kind == "rung":
      axis.plot(rows["hific"]["bpp"], rows["hific"]["lpips"], "s", label=name)
  for codec in codecs:
    pairs = sorted((rows[codec]["bpp"], rows[codec]["lpips"]) for kind, _, _, rows in points
                   if kind == "curve")
    axis.plot(*zip(*pairs), "o--", markersize=4, label=f"{codec} (same bytes)")
  axis.set_xlabel("bits per pixel")
  axis.set_ylabel("LPIPS (alex), lower is better")
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=110)


if __name__ == "__main__":
  main()
