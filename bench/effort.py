"""Encoder effort: what `hific compress --effort N` buys per photo, and what it costs in time.

For each bundled rung and effort level, every held-out photo is compressed into a real
`.hific` file (codec.compress(effort=N), models/hific/latent_search.py) and decoded by the
plain decoder, measured by hific_tf/evaluation/heldout.py. Prints per rung and effort: mean bpp, PSNR, LPIPS, patch FID, and the encode
time as a multiple of effort 0's in the same run; then, over the rungs' range, the BD-rate of
each effort against effort 0 (LPIPS against bpp, Bjontegaard's cubic fit in log rate) and the
mean LPIPS change at equal or fewer bytes.

  python bench/effort.py [--models small-lo,small-mi,small-hi] [--efforts 0,2] \
      [--rates 0,1] [--images tests/data/heldout] [--json effort.jsonl]

`--rates`: each model at each of these rates (`hific compress --rate`); the search then
measures bits and distortion with that rate's quantizer, as the file is coded.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import common
from hific_tf import images as images_lib
from hific_tf import load_codec
from hific_tf.evaluation import heldout
from hific_tf.measure.lpips import LPIPS


def bd_rate(rates_a, quality_a, rates_b, quality_b):
  """Mean rate difference of curve b against curve a at equal quality, in percent.

  Bjontegaard's measure: log rate as a cubic (fewer points: lower degree) of quality, both
  integrated over the overlap of the two quality ranges. Quality here is -LPIPS.
  """
  degree = min(3, len(rates_a) - 1, len(rates_b) - 1)
  fit_a = np.polyfit(quality_a, np.log(rates_a), degree)
  fit_b = np.polyfit(quality_b, np.log(rates_b), degree)
  low, high = max(min(quality_a), min(quality_b)), min(max(quality_a), max(quality_b))
  if high <= low:
    return float("nan")
  integral_a = np.polyval(np.polyint(fit_a), [low, high])
  integral_b = np.polyval(np.polyint(fit_b), [low, high])
  mean_difference = ((integral_b[1] - integral_b[0]) - (integral_a[1] - integral_a[0])) / (
      high - low)
  return float((np.exp(mean_difference) - 1) * 100)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="small-lo,small-mi,small-hi")
  parser.add_argument("--efforts", default="0,2")
  parser.add_argument("--images", default=str(common.HELD_OUT))
  parser.add_argument("--rates", default="0", help="Rates to code at (comma-separated).")
  parser.add_argument("--json", help="Append one JSON row per model and effort to this file.")
  args = parser.parse_args()
  efforts = [int(e) for e in args.efforts.split(",")]
  if efforts[0] != 0:
    efforts.insert(0, 0)
  paths = images_lib.list_images(args.images)
  lpips = LPIPS("alex")
  table = {}
  rates = [float(r) for r in args.rates.split(",")]
  print(f"{'model':10s} {'rate':>5s} {'effort':>6s} {'bpp':>7s} {'PSNR':>6s} {'LPIPS':>6s} "
        f"{'pFID':>6s} {'encode x':>8s} {'larger files':>12s}")
  for name in args.models.split(","):
    codec = load_codec(name, precision="float32")
    for rate in rates:
      for effort in efforts:
        coder = heldout.FileCoder(codec, effort, rate=rate)
        report = heldout.measure(coder, paths, patch_fid=True, with_ms_ssim=False, lpips=lpips)
        means = report.summary()
        table[name, rate, effort] = dict(
            model=name, rate=rate, effort=effort, bpp=means["bpp"], psnr=means["psnr"],
            lpips=means["lpips"], patch_fid=means["patch_fid"],
            encode_seconds=coder.encode_seconds,
            per_photo=[(r["bpp"], r["psnr"], r["lpips"]) for r in report.rows])
        base = table[name, rate, 0]
        larger = sum(mine[0] > theirs[0] for mine, theirs in
                     zip(table[name, rate, effort]["per_photo"], base["per_photo"]))
        print(f"{name:10s} {rate:5.2f} {effort:6d} {means['bpp']:7.4f} {means['psnr']:6.2f} "
              f"{means['lpips']:6.4f} {means['patch_fid']:6.1f} "
              f"{coder.encode_seconds / base['encode_seconds']:8.1f} "
              f"{larger:>5d} of {len(paths):<3d}", flush=True)
        if args.json:
          with open(args.json, "a", encoding="utf-8") as out:
            out.write(json.dumps(table[name, rate, effort]) + "\n")
  for rate in rates:
    _summarize(table, args.models.split(","), rate, efforts)


def _summarize(table, names, rate, efforts):
  """Effort against effort 0 at one rate: LPIPS, bytes, and the BD-rate over the models."""
  table = {(name, effort): row for (name, r, effort), row in table.items() if r == rate}
  print(f"rate {rate:g}:")
  for effort in efforts[1:]:
    lower = [table[n, 0]["lpips"] - table[n, effort]["lpips"] for n in names]
    fewer = [100 * (table[n, effort]["bpp"] / table[n, 0]["bpp"] - 1) for n in names]
    line = (f"effort {effort} against 0: LPIPS {-np.mean(lower):+.4f} (per model "
            f"{', '.join(f'{-v:+.4f}' for v in lower)}), mean bytes "
            f"{', '.join(f'{v:+.1f}%' for v in fewer)}")
    if len(names) >= 2:
      bd = bd_rate([table[n, 0]["bpp"] for n in names], [-table[n, 0]["lpips"] for n in names],
                   [table[n, effort]["bpp"] for n in names],
                   [-table[n, effort]["lpips"] for n in names])
      line += f"; BD-rate at equal LPIPS over the models' range {bd:+.1f}%"
    print(line)


if __name__ == "__main__":
  main()
