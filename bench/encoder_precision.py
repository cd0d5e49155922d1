"""What a bfloat16 encoder costs: bpp, PSNR and LPIPS on the held-out photos, and its speed.

A bundled codec is exported twice, identical but for the encoder's compute type. Both write
files that the same (float32) decoder reads; bfloat16 only changes which latents the encoder
picks. Figures are means over tests/data/heldout, measured side by side in one run.

Usage: python bench/encoder_precision.py [--model small-lo]
"""

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HELD_OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "heldout"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="small-lo")
  args = parser.parse_args()
  from hific_tf import images, zoo
  from hific_tf.evaluation import metrics
  from hific_tf.perceptual.lpips import LPIPS
  from hific_tf.serving import codec
  lpips = LPIPS("alex")
  photos = [images.load_rgb(path) for path in images.list_images(HELD_OUT)]
  print(f"{args.model} on {len(photos)} held-out photos (decoder float32 in both rows)")
  print(f"{'encoder':<10}{'bpp':>8}{'PSNR dB':>9}{'LPIPS':>8}{'encode ms':>11}")
  with tempfile.TemporaryDirectory() as tmp:
    for dtype in ("float32", "mixed_bfloat16"):
      directory = pathlib.Path(tmp) / dtype
      codec.export(zoo.build_model(args.model, encoder_dtype=dtype), directory)
      runner = codec.SavedModelCodec(directory)
      rows, seconds = [], []
      for image in photos:
        runner.compress(image)  # Warm-up for this shape.
        start = time.perf_counter()
        hific_file = runner.compress(image)
        seconds.append(time.perf_counter() - start)
        decoded = runner.decompress(hific_file)
        measured = metrics.measure(image, decoded, len(hific_file.to_bytes()), lpips,
                                   with_ms_ssim=False)
        rows.append((measured["bpp"], measured["psnr"], measured["lpips"]))
      bpp, psnr, distance = np.mean(rows, axis=0)
      print(f"{dtype.replace('mixed_', ''):<10}{bpp:>8.4f}{psnr:>9.2f}{distance:>8.4f}"
            f"{np.mean(seconds) * 1e3:>11.0f}")


if __name__ == "__main__":
  main()
