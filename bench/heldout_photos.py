"""What the benchmarks on the held-out photos share: the photos, LPIPS and the --model flag.

The nine photos of tests/data/heldout were never trained on (hific_tf/training/photos.py).
"""

import argparse
import pathlib

HELD_OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "heldout"


def set_up(doc):
  """(args, photos, LPIPS-alex) for a benchmark whose module docstring is `doc`."""
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--model", default="small-lo", help="A bundled codec or codec folder.")
  args = parser.parse_args()
  from hific_tf import images
  from hific_tf.perceptual.lpips import LPIPS
  photos = [images.load_rgb(path) for path in images.list_images(HELD_OUT)]
  return args, photos, LPIPS("alex")
