"""One crop of a held-out photo, decoded at each realism beside a classical codec at the same
size: the picture README shows (docs/realism_crop.png).

The codec writes one file of the whole photo (at its default rate, or --target_bpp); the same
file is decoded at each R (the realism knob, MRIC: Agustsson et al., CVPR 2023), and the
classical codec is searched to that file's bytes on the whole photo (never larger). The crop
is cut from each whole decode, so every panel pays for the whole photo.

  python bin/realism_crop.py [--image data/photos/heldout/gcompris_cheetah.png] \\
      [--crop X,Y,SIZE] [--model small-lo] [--realisms 0,1] [--against avif] \\
      [--out docs/realism_crop.png] [--force]
"""

import argparse
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hific_tf import images as images_lib  # noqa: E402
from hific_tf import load_codec  # noqa: E402
from hific_tf.measure import classical, metrics  # noqa: E402
from hific_tf.measure.lpips import LPIPS  # noqa: E402
from hific_tf.models import zoo  # noqa: E402
from hific_tf.serving import rate_control  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image", default="data/photos/heldout/gcompris_cheetah.png")
  parser.add_argument("--crop", default="0,0,256", help="X,Y,SIZE of the square shown.")
  parser.add_argument("--model", default=zoo.DEFAULT_CODEC)
  parser.add_argument("--target_bpp", type=float, help="Default: the codec's default rate.")
  parser.add_argument("--realisms", default="0,1")
  parser.add_argument("--against", default="avif")
  parser.add_argument("--out", default="docs/realism_crop.png")
  parser.add_argument("--force", action="store_true")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  if out.exists() and not args.force:
    sys.exit(f"realism_crop: {out} exists (use --force)")
  x, y, size = (int(v) for v in args.crop.split(","))
  image = images_lib.load_rgb(args.image)
  if x + size > image.shape[1] or y + size > image.shape[0]:
    sys.exit(f"realism_crop: the crop leaves the {image.shape[1]}x{image.shape[0]} photo")
  codec = load_codec(args.model, precision="float32")
  hific_file = (codec.compress(image) if args.target_bpp is None else
                rate_control.compress_to_bpp(codec, image, args.target_bpp))
  data = hific_file.to_bytes()
  lpips = LPIPS("alex")
  name = pathlib.Path(args.model).name
  version = zoo.codec_version(hific_file.fingerprint.hex())
  panels = [("original", image, None)]
  for realism in (float(r) for r in args.realisms.split(",")):
    panels.append((f"{version or name}, R = {realism:g}",
                   codec.decompress(hific_file, realism=realism), len(data)))
  against = classical.get_codec(args.against)
  match = classical.match_size(against, image, len(data))
  panels.append((args.against.upper(), against.decode(match.data), len(match.data)))
  titles = [title if size_bytes is None else
            (f"{title}\n{images_lib.bits_per_pixel(size_bytes, *image.shape[:2]):.3f} bpp, "
             f"LPIPS {lpips.image_distance(image, pixels):.3f}, "
             f"PSNR {metrics.psnr(image, pixels):.1f}")
            for title, pixels, size_bytes in panels]
  figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.9))
  for axis, title, (_, pixels, _) in zip(axes, titles, panels):
    axis.imshow(pixels[y:y + size, x:x + size], interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize=9)
  figure.suptitle(f"{pathlib.Path(args.image).stem}: a {size}² crop of whole-photo decodes "
                  "(figures: the whole photo)", fontsize=10)
  figure.tight_layout(rect=(0, 0, 1, 0.93))
  out.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".png", delete=False) as staging:
    figure.savefig(staging.name, dpi=100)
  os.chmod(staging.name, 0o644)  # NamedTemporaryFile's 0600 would otherwise stay.
  os.replace(staging.name, out)
  print(f"wrote {out}: " + "; ".join(title.replace("\n", ", ") for title in titles[1:]))


if __name__ == "__main__":
  main()
