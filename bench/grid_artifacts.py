"""The regular grid a codec's decoder draws: spectral peaks at periods of 2 and 4 pixels.

HiFiC's generator (Mentzer et al., NeurIPS 2020) upsamples with four stride-2 transposed
convolutions, and a GAN-trained G that has not trained long draws their pattern into flat
regions: a faint grid at periods of 2 and 4 pixels. Photos have almost no energy at exactly
those frequencies, so the power there, over the median power of the spectrum, measures it.
This prints that ratio for the photos and for their decodes, per photo and as a geometric
mean, so the grid can be followed as a rung trains (and set against its patch FID); with
--against, also for classical codecs at the same file size per photo (JPEG's 8x8 blocks put
their harmonics on the same frequencies).

With --patch_fid it also asks whether the grid is what patch FID sees: it takes the grid out
of the decodes (zeroes the spectrum at those frequencies and at every harmonic of a period-4
grid, `--notch_radius` bins around each) and prints the patch FID of the decodes before and
after, and of the photos after the same filter (what the filter alone costs).

  python bench/grid_artifacts.py --model small-mi [--images tests/data/heldout] [--against jpeg,avif]
  python bench/grid_artifacts.py --model small-mi --patch_fid [--notch_radius 2]
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # heldout_rate, beside it.

# (cycles per pixel down, across): the frequencies of a period-2 and a period-4 grid.
GRID_FREQUENCIES = ((0, 1 / 2), (1 / 2, 0), (1 / 2, 1 / 2), (0, 1 / 4), (1 / 4, 0),
                    (1 / 4, 1 / 4))


def grid_power(image):
  """Mean power at GRID_FREQUENCIES over the spectrum's median power, on the luma."""
  luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  height, width = (size - size % 4 for size in luma.shape)  # Grid frequencies on bins.
  luma = luma[:height, :width] - luma[:height, :width].mean()
  power = np.abs(np.fft.fft2(luma)) ** 2
  peaks = [power[int(fy * height) % height, int(fx * width) % width]
           for fy, fx in GRID_FREQUENCIES]
  return float(np.mean(peaks) / np.median(power))


def without_grid(image, radius=0):
  """`image` with every harmonic of a period-4 grid zeroed in its spectrum (per channel),
  and `radius` bins around each: what is left when the decoder's grid is taken out."""
  height, width = image.shape[:2]
  spectrum = np.fft.fft2(image.astype(np.float64), axes=(0, 1))
  keep = np.ones([height, width])
  for fy in range(4):
    for fx in range(4):
      if fy == fx == 0:
        continue  # The image's mean.
      row, column = round(fy * height / 4), round(fx * width / 4)
      rows = np.arange(row - radius, row + radius + 1) % height
      columns = np.arange(column - radius, column + radius + 1) % width
      keep[np.ix_(rows, columns)] = 0
  filtered = np.real(np.fft.ifft2(spectrum * keep[:, :, None], axes=(0, 1)))
  return np.clip(np.round(filtered), 0, 255).astype(np.uint8)


def patch_fids(photos, decodes, radius):
  """Patch FID against the photos of: the decodes, the decodes without their grid, and the
  photos through the same filter (heldout_rate.patch_fids, on these patches)."""
  import heldout_rate
  from hific_tf.evaluation import metrics
  images = {"photos": photos, "decoded": decodes,
            "decoded without grid": [without_grid(image, radius) for image in decodes],
            "photos without grid": [without_grid(image, radius) for image in photos]}
  return heldout_rate.patch_fids({key: [tile for image in group for tile in metrics.patches(image)]
                                  for key, group in images.items()})


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="A bundled codec name or codec folder.")
  parser.add_argument("--images", default="tests/data/heldout")
  parser.add_argument("--against", default="", help="Classical codecs at the same file size.")
  parser.add_argument("--patch_fid", action="store_true",
                      help="Patch FID of the decodes with and without their grid.")
  parser.add_argument("--notch_radius", type=int, default=0,
                      help="Bins zeroed around each grid frequency (--patch_fid).")
  args = parser.parse_args()
  from hific_tf import images as images_lib
  from hific_tf.evaluation import classical
  from hific_tf.serving import resolve
  codec = resolve.load_codec(args.model)
  others = [name for name in args.against.split(",") if name]
  print(f"{'photo':<34}{'photo':>9}" + "".join(f"{name:>10}" for name in ["HiFiC"] + others)
        + "   (grid power over the spectrum's median; then decoded over photo)")
  ratios = {name: [] for name in ["HiFiC"] + others}
  photos, decodes = [], []
  for path in images_lib.list_images(args.images):
    image = images_lib.load_rgb(path)
    hific_file = codec.compress(image)
    decoded = {"HiFiC": codec.decompress(hific_file)}
    for name, (pixels, _) in classical.at_equal_size(
        image, len(hific_file.to_bytes()), others).items():
      decoded[name] = pixels
    if args.patch_fid:
      photos.append(image)
      decodes.append(decoded["HiFiC"])
    original = grid_power(image)
    powers = {name: grid_power(pixels) for name, pixels in decoded.items()}
    for name, power in powers.items():
      ratios[name].append(power / original)
    print(f"{os.path.basename(path)[:33]:<34}{original:>9.1f}" +
          "".join(f"{powers[name]:>10.1f}" for name in ratios))
  print("geometric mean of decoded over photo: " + ", ".join(
      f"{name} {np.exp(np.mean(np.log(values))):.1f}x" for name, values in ratios.items()) +
        f" ({len(ratios['HiFiC'])} photos)")
  if args.patch_fid:
    print(f"patch FID against the photos (grid notch radius {args.notch_radius}): " + ", ".join(
        f"{name} {value:.1f}" for name, value in
        patch_fids(photos, decodes, args.notch_radius).items()))


if __name__ == "__main__":
  main()
