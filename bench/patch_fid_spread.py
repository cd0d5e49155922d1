"""How far apart two codecs' patch FIDs are, beyond the noise of a few photos.

HiFiC's realism measure (Mentzer et al., NeurIPS 2020) is the FID of 256x256 patches; on the
nine held-out photos that is 65 patches per codec, so a difference of a few points may be
the photos rather than the codecs. This reads the Inception features a `hific evaluate` run
cached (OUT/features/METHOD@SETTING/PHOTO.npz) and resamples the photos with replacement:
every resample scores every method on the same photos, so the spread of the difference
against one method (--against) is the paired bootstrap interval of that difference. A photo
drawn twice puts its patches twice into both sets, which inflates every FID of a resample
(the "resampled" column sits above the full set's), so the jackknife's standard error of the
difference (each photo left out once, no duplicates) is printed beside it.

  hific evaluate --model small-hi --images tests/data/heldout --out eval/small-hi --match --codecs jpeg
  python bench/patch_fid_spread.py --eval eval/small-hi --against jpeg@match
"""

import argparse
import pathlib

import numpy as np

from hific_tf.evaluation import metrics


def load_patches(folder):
  """{method key: {photo stem: patch features}} of an evaluate run's feature cache."""
  features = {}
  for method in sorted(p for p in (pathlib.Path(folder) / "features").iterdir() if p.is_dir()):
    features[method.name] = {}
    for path in sorted(method.glob("*.npz")):
      with np.load(path) as saved:
        features[method.name][path.stem] = saved["patches"]
  return features


def patch_fid(features, key, stems):
  return metrics.fid(np.concatenate([features["original"][s] for s in stems]),
                     np.concatenate([features[key][s] for s in stems]))


def jackknife_error(features, key, against, stems):
  """Jackknife standard error of patch FID(key) - patch FID(against), photos left out."""
  leave_one_out = np.array([
      patch_fid(features, key, kept) - patch_fid(features, against, kept)
      for kept in ([s for s in stems if s != left] for left in stems)])
  n = len(stems)
  return float(np.sqrt((n - 1) / n * ((leave_one_out - leave_one_out.mean()) ** 2).sum()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--eval", required=True, help="A `hific evaluate` output folder.")
  parser.add_argument("--against", required=True, help="The method the others are set against "
                      "(a folder name under features/, e.g. jpeg@match).")
  parser.add_argument("--resamples", type=int, default=500)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  features = load_patches(args.eval)
  if "original" not in features or args.against not in features:
    parser.error(f"{args.eval}/features needs 'original' and '{args.against}' "
                 f"(found: {', '.join(features)})")
  stems = sorted(features["original"])
  methods = [key for key in features if key != "original"
             and sorted(features[key]) == stems]
  rng = np.random.default_rng(args.seed)
  samples = {key: [] for key in methods}
  for _ in range(args.resamples):
    chosen = list(rng.choice(stems, len(stems), replace=True))
    for key in methods:
      samples[key].append(patch_fid(features, key, chosen))
  against = np.array(samples[args.against])
  patches = sum(len(f) for f in features["original"].values())
  print(f"{len(stems)} photos, {patches} patches; {args.resamples} resamples of the photos "
        f"(5-95% intervals)")
  print(f"{'method':<28}{'patch FID':>10}{'resampled':>18}{'minus ' + args.against:>24}"
        f"{'jackknife SE':>14}")
  for key in methods:
    full = patch_fid(features, key, stems)
    values = np.array(samples[key])
    low, high = np.percentile(values, [5, 95])
    line = f"{key:<28}{full:>10.1f}{f'{low:.0f} to {high:.0f}':>18}"
    if key != args.against:
      difference = values - against
      d_low, d_high = np.percentile(difference, [5, 95])
      line += (f"{full - patch_fid(features, args.against, stems):>+10.1f}"
               f"{f' ({d_low:+.0f} to {d_high:+.0f})':>14}"
               f"{jackknife_error(features, key, args.against, stems):>14.1f}")
    print(line)


if __name__ == "__main__":
  main()
