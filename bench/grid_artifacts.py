"""The regular grid a codec's decoder draws: spectral peaks at periods of 2 and 4 pixels.

HiFiC's generator (Mentzer et al., NeurIPS 2020) upsamples with four stride-2 transposed
convolutions, and a GAN-trained G that has not trained long draws their pattern into flat
regions: a faint grid at periods of 2 and 4 pixels. Photos have almost no energy at exactly
those frequencies, so the power there, over the median power of the spectrum, measures it.
This prints that ratio for the photos and for their decodes, per photo and as a geometric
mean, so the grid can be followed as a rung trains (and set against its patch FID); with
--against, also for classical codecs at the same file size per photo (JPEG's 8x8 blocks put
their harmonics on the same frequencies).

  python bench/grid_artifacts.py --model small-mi [--images tests/data/heldout] [--against jpeg,avif]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="A bundled codec name or codec folder.")
  parser.add_argument("--images", default="tests/data/heldout")
  parser.add_argument("--against", default="", help="Classical codecs at the same file size.")
  args = parser.parse_args()
  from hific_tf import images as images_lib
  from hific_tf.evaluation import classical
  from hific_tf.serving import resolve
  codec = resolve.load_codec(args.model)
  others = [name for name in args.against.split(",") if name]
  print(f"{'photo':<34}{'photo':>9}" + "".join(f"{name:>10}" for name in ["HiFiC"] + others)
        + "   (grid power over the spectrum's median; then decoded over photo)")
  ratios = {name: [] for name in ["HiFiC"] + others}
  for path in images_lib.list_images(args.images):
    image = images_lib.load_rgb(path)
    hific_file = codec.compress(image)
    decoded = {"HiFiC": codec.decompress(hific_file)}
    for name, (pixels, _) in classical.at_equal_size(
        image, len(hific_file.to_bytes()), others).items():
      decoded[name] = pixels
    original = grid_power(image)
    powers = {name: grid_power(pixels) for name, pixels in decoded.items()}
    for name, power in powers.items():
      ratios[name].append(power / original)
    print(f"{os.path.basename(path)[:33]:<34}{original:>9.1f}" +
          "".join(f"{powers[name]:>10.1f}" for name in ratios))
  print("geometric mean of decoded over photo: " + ", ".join(
      f"{name} {np.exp(np.mean(np.log(values))):.1f}x" for name, values in ratios.items()) +
        f" ({len(ratios['HiFiC'])} photos)")


if __name__ == "__main__":
  main()
