"""Does a bundled codec generalise? LPIPS at equal size on training photos against held-out ones.

The bundled codecs train on 24 photos. If they had learned those photos rather than photos,
they would beat JPEG by much more on training photos than on held-out ones. This prepares
the training photos exactly as the held-out ones are prepared (512-pixel short side, cut to
at most 768 wide: training/photos.py), then runs the same measurement on both sets
(bench/heldout_rate.py): HiFiC's LPIPS and rate, and JPEG's LPIPS at HiFiC's size per photo.
The ratio HiFiC/JPEG is the figure to compare: it cancels how hard each set is to code.

Usage: python bench/generalisation.py --model small-mi [--train data/photos/train] [--count 9]
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
from hific_tf import zoo
from hific_tf.training import photos


def prepare_like_heldout(paths, folder):
  """Training photos scaled and cut as the held-out photos are, written as PNG to `folder`."""
  out = []
  for path in paths:
    array = photos.fit_heldout(images_lib.load_rgb(path))
    target = pathlib.Path(folder) / (pathlib.Path(path).stem + ".png")
    images_lib.write_atomic(target, images_lib.encode_png(array))
    out.append(target)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="small-mi", help="A bundled codec.")
  parser.add_argument("--train", default="data/photos/train", help="Training photos (s640).")
  parser.add_argument("--heldout", default="tests/data/heldout")
  parser.add_argument("--count", type=int, default=9, help="Training photos to use.")
  args = parser.parse_args()
  model = zoo.build_model(args.model)
  train = sorted(p for p in images_lib.list_images(args.train) if "_s640" in str(p))
  train = [pathlib.Path(p) for p in train[::max(1, len(train) // args.count)][:args.count]]
  heldout = [pathlib.Path(p) for p in images_lib.list_images(args.heldout)]
  print(f"{args.model}: LPIPS at equal size against JPEG (lower is better)")
  print(f"{'set':<10}{'photos':>7}{'bpp':>8}{'LPIPS':>8}{'JPEG bpp':>10}{'JPEG LPIPS':>12}"
        f"{'ratio':>8}")
  with tempfile.TemporaryDirectory() as folder:
    sets = (("training", prepare_like_heldout(train, folder)), ("held-out", heldout))
    for label, paths in sets:
      bpp, lpips, jpeg_bpp, jpeg_lpips = heldout_rate.mean_against(model, paths)
      print(f"{label:<10}{len(paths):>7}{bpp:>8.4f}{lpips:>8.4f}{jpeg_bpp:>10.4f}"
            f"{jpeg_lpips:>12.4f}{lpips / jpeg_lpips:>8.3f}")


if __name__ == "__main__":
  main()
