"""The held-out measurement: one codec on a folder of photos, against a classical codec at
equal size, photo by photo.

HiFiC (Mentzer et al., NeurIPS 2020) is judged on rate, distortion and realism together: bpp,
PSNR, MS-SSIM and LPIPS per photo, and the FID/KID of 256x256 patches (the paper's realism
measure on small test sets) with its spread. This module makes those figures for every report
hific_tf prints: `hific evaluate`'s rows and summary (runner.py), the cards of bundled codecs
(bin/bundle_codec.py) and the ladder's checks of a run in training (bin/train_ladder.py).

A photo's bytes can be counted two ways, and a report says which:
- `FileCoder`: real `.hific` files through a codec's compress and decompress (what users
  get, header included);
- `EntropyModelCoder`: ceil(bits / 8) of the rounded latents under a Keras model's priors,
  and G's reconstruction of them: no range coder and no export, so seconds a photo, a few
  header bytes fewer than a file. It is how a run is checked while it trains.

Patch FID on a few dozen photos is noisy, so each patch FID comes with its jackknife standard
error over photos, and a difference between two methods with the paired one (photos left out
one at a time from both).
"""

import dataclasses
import pathlib
import time

import numpy as np
import tensorflow as tf

from hific_tf import images as images_lib
from hific_tf.measure import classical, metrics

FILE_BYTES, ENTROPY_MODEL_BYTES = "file", "entropy model"


class FileCoder:
  """Real files: a codec's compress and decompress (`hific_tf.load_codec`'s codecs)."""

  bytes_from = FILE_BYTES

  def __init__(self, codec, effort=0, rate=0., target_bpp=None, realism=None):
    self.codec = codec
    self.realism = realism  # The decoder's R (models/hific/realism.py); None: the codec's.
    self.effort = effort
    self.rate = rate  # models/hific/gains.py; 0 is the codec's own.
    self.target_bpp = target_bpp  # Instead of `rate`: searched per photo (rate_control.py).
    self.encode_seconds = 0.  # Summed over the photos coded (what --effort costs).

  def code(self, image):
    """(file bytes, reconstruction) of one uint8 image."""
    from hific_tf import bitstream
    start = time.perf_counter()
    options = dict(effort=self.effort) if self.effort else {}
    if self.target_bpp is not None:
      from hific_tf.serving import rate_control
      hific_file = rate_control.compress_to_bpp(self.codec, image, self.target_bpp, **options)
    else:
      if self.rate:
        options["rate"] = self.rate
      hific_file = self.codec.compress(image, **options)
    self.encode_seconds += time.perf_counter() - start
    data = hific_file.to_bytes()
    decoded = bitstream.HificFile.from_bytes(data)
    if self.realism is None:
      return len(data), self.codec.decompress(decoded)
    return len(data), self.codec.decompress(decoded, realism=self.realism)


class EntropyModelCoder:
  """The entropy models' bytes of a Keras HiFiC model, and G's reconstruction."""

  bytes_from = ENTROPY_MODEL_BYTES

  def __init__(self, model, rate=None, realism=None):
    self.model = model
    self.rate = rate  # None: rate 0, quantized as `compress` codes it.
    self.realism = realism  # None: the model's default_realism.

  def code(self, image):
    import tensorflow as tf
    y = self.model.analyze(tf.constant(image))
    outputs = self.model.hyperprior(y, training=False, log_gain=self.model.log_gain(self.rate))
    bits = float(outputs.y_bits_quantized[0] + outputs.z_bits_quantized[0])
    reconstruction = self.model.synthesize(outputs.y_hat, image.shape[:2],
                                           self.realism).numpy()
    return int(np.ceil(bits / 8)), reconstruction


def jackknife_se(statistic, photos):
  """Jackknife standard error of `statistic(photos)`, each photo left out once."""
  photos = list(photos)
  n = len(photos)
  if n < 3:
    return float("nan")
  values = np.array([statistic([p for p in photos if p != left]) for left in photos])
  return float(np.sqrt((n - 1) / n * ((values - values.mean()) ** 2).sum()))


def _patches(features, photos):
  """The patch features of `photos`, stacked (features: {photo: (whole, patches)})."""
  return np.concatenate([features[p][1] for p in photos])


def feature_statistics(reference, features, photos, with_kid=True):
  """FID/KID of whole images and of patches against the originals, with spreads.

  `reference` and `features`: {photo: (whole-image features [1, 2048], patch features
  [N, 2048])} of the originals and of one method's reconstructions (InceptionV3 pool_3).
  """
  whole_a = np.concatenate([reference[p][0] for p in photos])
  whole_b = np.concatenate([features[p][0] for p in photos])
  tiles_a, tiles_b = _patches(reference, photos), _patches(features, photos)
  patch_fid = lambda kept: metrics.fid(_patches(reference, kept), _patches(features, kept))
  statistics = {"fid": metrics.fid(whole_a, whole_b), "patch_fid": metrics.fid(tiles_a, tiles_b),
                "patch_fid_se": jackknife_se(patch_fid, photos), "patches": int(len(tiles_b))}
  if with_kid:
    statistics.update(kid=metrics.kid(whole_a, whole_b), patch_kid=metrics.kid(tiles_a, tiles_b))
  return statistics


def patch_fid_difference_se(reference, features_a, features_b, photos):
  """Paired jackknife standard error of patch FID(a) - patch FID(b) over photos."""
  def difference(kept):
    tiles = _patches(reference, kept)
    return (metrics.fid(tiles, _patches(features_a, kept)) -
            metrics.fid(tiles, _patches(features_b, kept)))
  return jackknife_se(difference, photos)


def versus_baseline(reference, collected, photos, with_kid=True):
  """Each method's patch statistics (`collected`: method -> {photo: features}, the baseline
  first) with its patch FID minus the baseline's and the paired SE (the ship rule's test)."""
  results, baseline = {}, next(iter(collected))
  for method, features in collected.items():
    statistics = feature_statistics(reference, features, photos, with_kid=with_kid)
    difference = difference_se = float("nan")
    if method != baseline:
      difference = statistics["patch_fid"] - results[baseline]["patch_fid"]
      difference_se = patch_fid_difference_se(reference, features, collected[baseline], photos)
    results[method] = dict(statistics, difference=difference, difference_se=difference_se)
  return results


class InceptionFeatures:
  """Whole-image and patch features of an image (InceptionV3 pool_3), the network built once."""

  def __init__(self):
    self._network = None

  def __call__(self, image):
    if self._network is None:
      from hific_tf.measure.inception import InceptionV3
      self._network = InceptionV3()
    tiles = metrics.patches(image)
    return (self._network(image[None]),
            self._network(np.stack(tiles)) if tiles else np.zeros([0, 2048], np.float32))


class VGGFeatures:
  """Whole-image and patch features through a second network: VGG16's relu5_3 (the LPIPS-vgg
  backbone, ImageNet-trained), averaged over positions, 512 per image.

  The decoder stage's projected D judges AlexNet features; a realism gain that shows in
  Inception's patch FID and in this one is not one network's quirk being gamed.
  """

  def __init__(self):
    self._network = None

  def _embed(self, batch):
    return np.concatenate([
        tf.reduce_mean(self._network.features(batch[i:i + 8].astype(np.float32) / 255.)[-1],
                       axis=[1, 2]).numpy() for i in range(0, len(batch), 8)])

  def __call__(self, image):
    if self._network is None:
      from hific_tf.measure.lpips import LPIPS
      self._network = LPIPS("vgg")
    tiles = metrics.patches(image)
    return (self._embed(image[None]),
            self._embed(np.stack(tiles)) if tiles else np.zeros([0, 512], np.float32))


@dataclasses.dataclass
class Report:
  """Per-photo rows and their means; with patch FID, its statistics per method.

  Attributes:
    rows: one dict per photo: image, bpp, psnr, ms_ssim, lpips, and with a classical codec
      `against`, the same figures of that codec at the same size as against_bpp, ...
    bytes_from: FILE_BYTES or ENTROPY_MODEL_BYTES.
    against: the classical codec's name, or None.
    statistics: {"hific": feature_statistics, against: ...} when patch FID was asked for,
      with "difference_se", the paired spread of HiFiC's patch FID minus the codec's.
  """
  rows: list
  bytes_from: str
  against: str = None
  statistics: dict = dataclasses.field(default_factory=dict)

  @property
  def means(self):
    columns = {k: [row[k] for row in self.rows] for k in self.rows[0] if k != "image"}
    return {k: float(np.nanmean(values)) for k, values in columns.items()
            if np.isfinite(values).any()}  # MS-SSIM is absent when it was not asked for.

  def summary(self):
    """One flat JSON-able dict: the means, patch FIDs and their spreads."""
    summary = dict(self.means, images=len(self.rows), bytes_from=self.bytes_from,
                   against=self.against)
    for method, prefix in (("hific", ""), (self.against, "against_")):
      for key in ("patch_fid", "patch_fid_se", "patch_kid"):
        if method in self.statistics and key in self.statistics[method]:
          summary[prefix + key] = self.statistics[method][key]
    if "difference_se" in self.statistics:
      summary["patch_fid_difference_se"] = self.statistics["difference_se"]
    return summary


def measure(coder, image_files, against=None, patch_fid=False, with_ms_ssim=True, lpips=None,
            progress=None):
  """Measures `coder` on every photo of `image_files` (and `against` at the same size).

  Args:
    coder: a FileCoder or EntropyModelCoder.
    image_files: photo paths.
    against: a classical codec's name (measure/classical.py): each photo is also coded with
      it at the largest setting no larger than HiFiC's bytes for that photo.
    patch_fid: also the patch FID/KID of HiFiC (and `against`) with their spreads.
    with_ms_ssim: MS-SSIM costs about as much as PSNR and LPIPS together; off for quick checks.
    lpips: an LPIPS-alex instance to reuse (default: one is built).
    progress: called with (done, total) after each photo.

  Returns:
    a Report.
  """
  if lpips is None:
    from hific_tf.measure.lpips import LPIPS
    lpips = LPIPS("alex")
  codec = classical.get_codec(against) if against else None
  features = InceptionFeatures() if patch_fid else None
  collected = {"original": {}, "hific": {}, against: {}}
  rows = []
  for done, path in enumerate(image_files, 1):
    image = images_lib.load_rgb(path)
    name = pathlib.Path(path).stem
    num_bytes, reconstruction = coder.code(image)
    row = {"image": name, **metrics.measure(image, reconstruction, num_bytes, lpips,
                                                with_ms_ssim)}
    decoded = None
    if codec is not None:
      match = classical.match_size(codec, image, num_bytes)
      decoded = codec.decode(match.data)
      theirs = metrics.measure(image, decoded, len(match.data), lpips, with_ms_ssim)
      row.update({f"against_{k}": v for k, v in theirs.items()})
    rows.append(row)
    if features is not None:
      for key, pixels in (("original", image), ("hific", reconstruction), (against, decoded)):
        if pixels is not None:
          collected[key][name] = features(pixels)
    if progress:
      progress(done, len(image_files))
  report = Report(rows, coder.bytes_from, against)
  if features is not None:
    photos = [row["image"] for row in rows]
    reference = collected["original"]
    for method in ("hific", against):
      if method:
        report.statistics[method] = feature_statistics(reference, collected[method], photos)
    if against:
      report.statistics["difference_se"] = patch_fid_difference_se(
          reference, collected["hific"], collected[against], photos)
  return report
