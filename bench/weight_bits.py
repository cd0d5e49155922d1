"""What storing a codec's large kernels with fewer bits costs: file size, held-out rate, LPIPS.

Three rungs must fit the repository's 40 MB; at 8 bits a small rung is 15 MB. This stores a
rung's weights at each precision (models/hific/stored_weights.py), reloads them into the
same model in one process and measures the entropy models' rate and LPIPS on the held-out
photos (bench/heldout_rate.py), so every row differs only in the stored precision. The
8-bit row of a bundled rung is its own file; fewer bits requantize it (from the stored 8-bit
values, which adds at most half an 8-bit step to the error of direct quantization).

Usage: python bench/weight_bits.py --model small-mi [--bits 8,7,6]
       python bench/weight_bits.py --model_dir runs/ladder/small-hi [--bits 32,8,7,6]
(32: the float32 weights of a model_dir as trained; give it first.)
"""

import argparse
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import heldout_rate
from hific_tf import images as images_lib
from hific_tf.models.hific import stored_weights


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  heldout_rate.add_model_source(parser)
  parser.add_argument("--bits", default="8,7,6")
  args = parser.parse_args()
  model, _, _ = heldout_rate.load_model(args)
  paths = [pathlib.Path(p) for p in images_lib.list_images(args.images)]
  print(f"{args.model or args.model_dir}: large kernels at each precision, held-out photos")
  print(f"{'bits':>5}{'weights MB':>12}{'bpp':>9}{'LPIPS':>9}{'JPEG LPIPS':>12}")
  with tempfile.TemporaryDirectory() as folder:
    for bits in (int(b) for b in args.bits.split(",")):
      size = float("nan")
      if bits != 32:  # 32: the model's float32 weights as trained (first, before any store).
        path = pathlib.Path(folder) / f"w{bits}.npz"
        stored_weights.save_weights(model, path, bits=bits)
        stored_weights.load_weights(model, path)
        size = path.stat().st_size / 1e6
      bpp, lpips, _, jpeg_lpips = heldout_rate.mean_against(model, paths)
      print(f"{bits:>5}{size:>12.2f}{bpp:>9.4f}{lpips:>9.4f}{jpeg_lpips:>12.4f}")


if __name__ == "__main__":
  main()
