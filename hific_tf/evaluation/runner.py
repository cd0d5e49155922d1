"""`hific evaluate`: HiFiC and classical codecs on a folder of photos, at matched bitrates.

For every image, method and setting: a CSV row (real bpp, PSNR, MS-SSIM, LPIPS-alex); per
method and setting: means, FID/KID on whole images and on 256x256 patches (HiFiC's protocol)
with the patch FID's jackknife spread, in summary.json; bpp-vs-metric plots, one line per
method; side-by-side crops. The figures are heldout.py's, the same the bundled codecs' cards
and the ladder report. Inception features of every reconstruction are cached under
OUT/features, so a rerun skips finished rows.
"""

import csv
import dataclasses
import io
import json
import pathlib

import numpy as np

from hific_tf import images as images_lib
from hific_tf.errors import UsageError
from hific_tf.evaluation import heldout
from hific_tf.measure import classical, metrics

COLUMNS = ("image", "method", "setting", "target_bpp", "knob", "bpp", "psnr", "ms_ssim",
           "lpips", "in_range")
PLOTTED = (("psnr", "PSNR (dB)"), ("ms_ssim", "MS-SSIM"), ("lpips", "LPIPS (alex)"),
           ("patch_fid", "patch FID"), ("patch_kid", "patch KID"))


class EvaluationError(UsageError):
  """Evaluation flags that make no sense (unknown codec, bad rate list)."""


MATCH = "match"  # The setting of a classical codec searched to HiFiC's size, per image.


@dataclasses.dataclass(frozen=True)
class Task:
  method: str
  setting: str
  target_bpp: float  # NaN for HiFiC at its own rate and for MATCH.
  matches: str | None = None  # MATCH: the HiFiC setting whose file sizes it matches.
  realism: float | None = None  # HiFiC's decoder realism (None: the codec's own).

  @property
  def key(self):
    return f"{self.method}@{self.setting}"


def parse_targets(text):
  try:
    targets = sorted({float(v) for v in text.split(",") if v.strip()})
  except ValueError:
    raise EvaluationError(f"--bpp must be comma-separated numbers, got '{text}'") from None
  if not targets or min(targets) <= 0:
    raise EvaluationError("--bpp needs at least one positive rate")
  return targets


def parse_codecs(text):
  names = [n.strip().lower() for n in text.split(",") if n.strip()]
  unknown = [n for n in names if n not in classical.CODECS]
  if unknown:
    raise EvaluationError(f"unknown codec(s) {', '.join(unknown)} "
                          f"(known: {', '.join(classical.CODECS)})")
  return names


class _Features:
  """Inception features of whole images and of patches, cached as .npz per image."""

  def __init__(self, folder, enabled):
    self.folder = pathlib.Path(folder)
    self.enabled = enabled
    self._features = heldout.InceptionFeatures()

  def path(self, key, stem):
    return self.folder / key / f"{stem}.npz"

  def has(self, key, stem):
    return not self.enabled or self.path(key, stem).is_file()

  def compute(self, key, stem, image):
    if self.has(key, stem):  # Cached, or features disabled.
      return
    whole, patch_features = self._features(image)
    buffer = io.BytesIO()
    np.savez(buffer, whole=whole, patches=patch_features)
    images_lib.write_atomic(self.path(key, stem), buffer.getvalue(), force=True)

  def load(self, key, stems):
    """{stem: (whole-image features, patch features)}, as heldout.feature_statistics takes."""
    loaded = {}
    for stem in stems:
      with np.load(self.path(key, stem)) as saved:
        loaded[stem] = (saved["whole"], saved["patches"])
    return loaded


def _reconstruct(task, image, model, hific_bytes, effort=0):
  """(reconstruction, real bpp, knob, in_range) of one image by one method and setting.

  `hific_bytes` is HiFiC's file size for this image: a MATCH task searches the classical
  codec for its best encoding no larger than that (equal bytes, image by image).
  """
  if task.method == "hific":
    target = None if np.isnan(task.target_bpp) else task.target_bpp
    num_bytes, reconstruction = heldout.FileCoder(model, effort, target_bpp=target,
                                                  realism=task.realism).code(image)
    return (reconstruction, images_lib.bits_per_pixel(num_bytes, *image.shape[:2]),
            float("nan"), True)
  codec = classical.get_codec(task.method)
  if task.matches is not None:
    match = classical.match_size(codec, image, hific_bytes)
    in_range = abs(len(match.data) - hific_bytes) <= classical.RATE_TOLERANCE * hific_bytes
    return codec.decode(match.data), match.bpp, match.knob, in_range
  match = classical.match_rate(codec, image, task.target_bpp)
  return codec.decode(match.data), match.bpp, match.knob, match.in_range


def _read_rows(path):
  if not path.is_file():
    return {}
  with open(path, newline="") as f:
    return {(r["image"], r["method"], r["setting"]): r for r in csv.DictReader(f)}


def _write_rows(path, rows):
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, COLUMNS)
  writer.writeheader()
  for key in sorted(rows):
    writer.writerow(rows[key])
  images_lib.write_atomic(path, buffer.getvalue().encode(), force=True)


def _format(value):
  return f"{value:.6g}" if isinstance(value, float) else str(value)


def _summarize(rows, tasks, stems, features):
  summary = {}
  if features.enabled:
    reference = features.load("original", stems)
  for task in tasks:
    selected = [rows[(stem, task.method, task.setting)] for stem in stems]
    entry = {"method": task.method, "setting": task.setting, "images": len(selected),
             "target_bpp": None if np.isnan(task.target_bpp) else task.target_bpp,
             "in_range": sum(r["in_range"] == "True" for r in selected)}
    for column in ("bpp", "psnr", "ms_ssim", "lpips"):
      entry[column] = float(np.nanmean([float(r[column]) for r in selected]))
    if features.enabled:
      entry.update(heldout.feature_statistics(reference, features.load(task.key, stems), stems))
    summary[task.key] = entry
  return summary


def _plot(summary, out):
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  written = []
  methods = sorted({e["method"] for e in summary.values()})
  for column, label in PLOTTED:
    if not any(column in e for e in summary.values()):
      continue
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for method in methods:
      points = sorted((e["bpp"], e[column]) for e in summary.values()
                      if e["method"] == method and column in e)
      style = ("*" if len(points) == 1 else "*-") if method == "hific" else "o-"
      axis.plot(*zip(*points), style, label=method, markersize=12 if method == "hific" else 5)
    axis.set_xlabel("bits per pixel")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    path = out / f"bpp_vs_{column}.png"
    images_lib.write_atomic(path, buffer.getvalue(), force=True)
    written.append(path)
  return written


def _crop(image, size=256):
  top = max(0, (image.shape[0] - size) // 2)
  left = max(0, (image.shape[1] - size) // 2)
  return image[top:top + size, left:left + size]


def _side_by_side(stem, original, reconstructions, out):
  tiles = [("original", _crop(original))] + [(k, _crop(v)) for k, v in reconstructions]
  images_lib.write_atomic(out / "crops" / f"{stem}.png",
                          images_lib.encode_png(images_lib.side_by_side(tiles)), force=True)


def evaluate(image_files, model, codecs, targets, out, with_fid=True, crops=3, log=print,
             match=False, effort=0, hific_targets=(), realisms=()):
  """Runs the whole evaluation; returns the summary dict (also written to summary.json).

  With `match`, each classical codec is also searched to HiFiC's own file size for each image
  (setting "match"), which is how HiFiC's figures compare codecs at equal bytes. `effort`
  (the codec's `compress(effort=)`) makes HiFiC's files with a latent search; its rows are
  kept apart from effort 0's ("NAME effort N"). `hific_targets`: HiFiC also at these bits
  per pixel, each photo searched over the codec's rate to within 2% (serving/rate_control.py):
  one model's whole curve, and with `match` the classical codecs at each of its sizes.
  `realisms`: HiFiC's files decoded at each of these R (a decoder with the realism knob),
  each its own rows ("NAME R0.5"); the classical codecs match the first R's sizes (every R
  decodes the same file).
  """
  if match and model is None:
    raise EvaluationError("--match needs a HiFiC model (its file sizes are the targets)")
  if model is None and not codecs:
    raise EvaluationError("nothing to evaluate: no model and no codecs")
  from tqdm import tqdm

  from hific_tf.measure.lpips import LPIPS
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  hific_setting = (None if model is None else
                   model.config_name + (f" effort {effort}" if effort else ""))
  realisms = list(realisms) or [None]
  suffix = lambda r: "" if r is None else f" R{r:g}"
  hific_tasks = []
  if model is not None:
    for realism in realisms:
      hific_tasks.append(Task("hific", hific_setting + suffix(realism), float("nan"),
                              realism=realism))
      hific_tasks += [Task("hific", f"{hific_setting}{suffix(realism)} {t:g}bpp", t,
                           realism=realism) for t in hific_targets]
  tasks = hific_tasks + [Task(c, f"{t:g}bpp", t) for c in codecs for t in targets]
  if match:
    first = [task for task in hific_tasks if task.realism == realisms[0]]
    tasks += [Task(c, MATCH + task.setting[len(hific_setting + suffix(realisms[0])):],
                   float("nan"), task.setting) for task in first for c in codecs]
  stems = [pathlib.Path(f).stem for f in image_files]
  if len(set(stems)) != len(stems):
    raise EvaluationError("two images share a file name stem; rename one")
  csv_path = out / "results.csv"
  rows = _read_rows(csv_path)
  features = _Features(out / "features", with_fid)
  lpips = LPIPS("alex")
  work = [(f, s, t) for f, s in zip(image_files, stems) for t in tasks]
  skipped = 0
  with tqdm(total=len(work), desc="evaluate", unit="row") as progress:
    for index, (path, stem) in enumerate(zip(image_files, stems)):
      image = images_lib.load_rgb(path)
      features.compute("original", stem, image)
      shown = []
      wants_crop = index < crops and not (out / "crops" / f"{stem}.png").is_file()
      for task in tasks:
        key = (stem, task.method, task.setting)
        if key in rows and features.has(task.key, stem) and not wants_crop:
          skipped += 1
          progress.update()
          continue
        hific_bytes = None
        if task.matches is not None:
          hific_row = rows[(stem, "hific", task.matches)]
          hific_bytes = round(float(hific_row["bpp"]) * image.shape[0] * image.shape[1] / 8)
        reconstruction, bpp, knob, in_range = _reconstruct(task, image, model, hific_bytes,
                                                           effort)
        features.compute(task.key, stem, reconstruction)
        measured = metrics.measure(image, reconstruction, lpips=lpips)
        rows[key] = {
            "image": stem, "method": task.method, "setting": task.setting,
            "target_bpp": _format(task.target_bpp), "knob": _format(knob),
            "bpp": _format(bpp), "psnr": _format(measured["psnr"]),
            "ms_ssim": _format(measured["ms_ssim"]),
            "lpips": _format(measured["lpips"]), "in_range": str(in_range)}
        _write_rows(csv_path, rows)
        if (task.method == "hific" and np.isnan(task.target_bpp)) or task.setting == MATCH or (not match and task.method != "hific"
                                                     and task.target_bpp == targets[0]):
          shown.append((f"{task.method} {bpp:.3f}bpp", reconstruction))
        progress.update()
      if wants_crop:
        _side_by_side(stem, image, shown, out)
  summary = _summarize(rows, tasks, stems, features)
  images_lib.write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode(),
                          force=True)
  plots = _plot(summary, out)
  log(f"{len(work)} rows ({skipped} from a previous run) in {csv_path}; "
      f"summary.json and {len(plots)} plots in {out}")
  return summary


def print_summary(summary, log=print):
  """One line per method and setting; patch FID with its jackknife standard error."""
  columns = ["bpp", "psnr", "ms_ssim", "lpips", "patch_fid", "patch_fid_se", "patch_kid"]
  log(f"{'method':<24}" + "".join(f"{c:>13}" for c in columns) + "  in range")
  for key, entry in summary.items():
    values = "".join(f"{entry.get(c, float('nan')):>13.4f}" for c in columns)
    log(f"{key:<24}{values}  {entry['in_range']}/{entry['images']}")
