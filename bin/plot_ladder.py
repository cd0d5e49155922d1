"""The ladder's rate-distortion-realism plot: every bundled rung beside the classical codecs.

Reads the summary.json of `hific evaluate` runs on the held-out photos: one with
`--model none` for the classical codecs' curves (several --bpp), and one per rung (its own
point). Plots LPIPS and patch FID against bpp, one line per classical codec and one star per
rung, and prints the table.

  hific evaluate --model none --images tests/data/heldout --out eval/classical \
      --bpp 0.1,0.14,0.2,0.3,0.4
  hific evaluate --model small-hi --images tests/data/heldout --out eval/small-hi --bpp 0.3 --match
  python bin/plot_ladder.py --classical eval/classical --rungs eval/small-lo,eval/small-mi,eval/small-hi \
      --out docs/ladder

With --curve, the held-out curve of a ladder run instead (runs/ladder/NAME/heldout.jsonl,
written by bin/train_ladder.py; several runs that continued one another, comma-separated):
bpp, LPIPS and patch FID, and JPEG's at the same size, against steps.

  python bin/plot_ladder.py --curve runs/ladder/small-hi/heldout.jsonl --out docs/small-hi_heldout_curve.png
"""

import argparse
import io
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt

from hific_tf import images as images_lib

PLOTTED = (("lpips", "LPIPS (alex), lower is better"),
           ("patch_fid", "patch FID, lower is better"))


def load(folder):
  return json.loads((pathlib.Path(folder) / "summary.json").read_text())


def _save(figure, path):
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110)
  plt.close(figure)
  images_lib.write_atomic(path, buffer.getvalue(), force=True)
  print(f"wrote {path}")


def plot_curve(jsonls, out):
  """Held-out bpp, LPIPS and patch FID (with JPEG's at the same size) against total steps.

  `jsonls`: the heldout.jsonl of one run, or of several runs that continued one another.
  """
  rows = [json.loads(line) for jsonl in jsonls
          for line in pathlib.Path(jsonl).read_text().splitlines() if line]
  steps = [r["base_steps"] + r["step"] for r in rows]
  with_fid = [(s, r) for s, r in zip(steps, rows) if "patch_fid" in r]
  figure, axes = plt.subplots(1, 3 if with_fid else 2, figsize=(15 if with_fid else 10, 3.8))
  axes[0].plot(steps, [r["bpp"] for r in rows], "o-")
  axes[0].set_ylabel("held-out bpp")
  axes[1].plot(steps, [r["lpips"] for r in rows], "o-", label="HiFiC")
  axes[1].plot(steps, [r["against_lpips"] for r in rows], "s--", label="JPEG, same size")
  axes[1].set_ylabel("held-out LPIPS")
  if with_fid:
    fid_steps = [s for s, _ in with_fid]
    axes[2].plot(fid_steps, [r["patch_fid"] for _, r in with_fid], "o-", label="HiFiC")
    axes[2].plot(fid_steps, [r["against_patch_fid"] for _, r in with_fid], "s--",
                 label="JPEG, same size")
    axes[2].set_ylabel("held-out patch FID")
  for axis in axes:
    axis.set_xlabel("steps behind the weights")
    axis.grid(alpha=0.3)
  for axis in axes[1:]:
    axis.legend()
  figure.tight_layout()
  _save(figure, out)
  print(f"{'steps':>7}{'bpp':>8}{'LPIPS':>8}{'JPEG bpp':>10}{'JPEG LPIPS':>12}"
        f"{'patch FID':>11}{'JPEG FID':>10}")
  for step, r in zip(steps, rows):
    print(f"{step:>7}{r['bpp']:>8.4f}{r['lpips']:>8.4f}{r['against_bpp']:>10.4f}"
          f"{r['against_lpips']:>12.4f}{r.get('patch_fid', float('nan')):>11.1f}"
          f"{r.get('against_patch_fid', float('nan')):>10.1f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--classical", help="evaluate --model none output.")
  parser.add_argument("--rungs", help="Comma-separated evaluate outputs.")
  parser.add_argument("--curve", help="A ladder run's heldout.jsonl, or several runs' in order, "
                      "comma-separated (then --out is a PNG).")
  parser.add_argument("--out", required=True, help="Prefix of the PNGs (_lpips, _patch_fid).")
  args = parser.parse_args()
  if args.curve:
    plot_curve(args.curve.split(","), args.out)
    return
  if not (args.classical and args.rungs):
    parser.error("give --classical and --rungs, or --curve")
  classical = [e for e in load(args.classical).values() if e["method"] != "hific"]
  rungs = []
  for folder in args.rungs.split(","):
    entries = [e for e in load(folder).values() if e["method"] == "hific"]
    rungs += [(pathlib.Path(folder).name, e) for e in entries]
  for column, label in PLOTTED:
    figure, axis = plt.subplots(figsize=(6, 4.2))
    for method in sorted({e["method"] for e in classical}):
      points = sorted((e["bpp"], e[column]) for e in classical
                      if e["method"] == method and column in e)
      axis.plot(*zip(*points), "o-", label=method, markersize=4)
    for name, entry in rungs:
      axis.plot(entry["bpp"], entry[column], "*", markersize=14, label=f"HiFiC {name}")
    axis.set_xlabel("bits per pixel (real files)")
    axis.set_ylabel(label)
    axis.set_title("held-out photos (9)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, f"{args.out}_{column}.png")
  print(f"{'codec':<16}{'bpp':>8}{'LPIPS':>8}{'patch FID':>11}")
  for name, entry in rungs:
    print(f"{'HiFiC ' + name:<16}{entry['bpp']:>8.3f}{entry['lpips']:>8.3f}"
          f"{entry.get('patch_fid', float('nan')):>11.1f}")
  for entry in sorted(classical, key=lambda e: (e["method"], e["bpp"])):
    print(f"{entry['method'] + ' ' + str(entry['setting']):<16}{entry['bpp']:>8.3f}"
          f"{entry['lpips']:>8.3f}{entry.get('patch_fid', float('nan')):>11.1f}")


if __name__ == "__main__":
  main()
