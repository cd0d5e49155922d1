"""`make demo`: the whole life of a HiFiC codec on this machine, in about ten minutes.

Trains tiny-mselpips (stage 1 of the paper's recipe, narrow) on scikit-image's bundled photos,
exports the SavedModel codec, compresses a held-out photo to a real .hific file, decompresses
it, prints bpp, PSNR and LPIPS next to JPEG at the same file size, and writes a side-by-side
PNG (original | HiFiC | JPEG). A tiny model trained for minutes on six photos is not HiFiC's
quality; the point is that every stage is the real one (see bench/ for measurements).
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TRAIN_PHOTOS = ("astronaut", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                "retina")
HELD_OUT = "coffee"


def _hific(*args):
  done = subprocess.run([sys.executable, "-m", "hific_tf.cli", *map(str, args)])
  if done.returncode:
    sys.exit(f"demo: `hific {' '.join(map(str, args))}` failed")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="demo_out")
  parser.add_argument("--steps", type=int, default=2500)
  args = parser.parse_args()
  import skimage.data
  import tensorflow as tf

  from hific_tf import bitstream, images
  from hific_tf.measure import classical, lpips

  out = pathlib.Path(args.out)
  if out.exists():
    shutil.rmtree(out)  # The demo's own folder: start clean every time.
  photos = out / "photos"
  photos.mkdir(parents=True)
  for name in TRAIN_PHOTOS:
    Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
  held_out = out / f"{HELD_OUT}.png"
  Image.fromarray(getattr(skimage.data, HELD_OUT)()).save(held_out)

  start = time.time()
  print(f"== 1/4 training tiny-mselpips for {args.steps} steps on {len(TRAIN_PHOTOS)} photos")
  _hific("train", "--config", "tiny-mselpips", "--train_glob", photos, "--steps", args.steps,
         "--checkpoint_every", max(1, args.steps // 4), "--model_dir", out / "model")
  print(f"== 2/4 exporting the codec SavedModel ({time.time() - start:.0f} s so far)")
  _hific("export", "--model_dir", out / "model", "--out", out / "codec")
  print(f"== 3/4 compressing and decompressing the held-out photo {held_out.name}")
  _hific("compress", "--model", out / "codec", held_out, out / f"{HELD_OUT}.hific", "--verbose")
  _hific("decompress", "--model", out / "codec", out / f"{HELD_OUT}.hific",
         out / f"{HELD_OUT}_hific.png")

  print("== 4/4 measuring against JPEG at the same file size")
  original = images.load_rgb(held_out)
  hific_bytes = (out / f"{HELD_OUT}.hific").read_bytes()
  hific_file = bitstream.HificFile.from_bytes(hific_bytes)
  reconstruction = images.load_rgb(out / f"{HELD_OUT}_hific.png")
  jpeg_codec = classical.get_codec("jpeg")
  jpeg = classical.match_size(jpeg_codec, original, len(hific_bytes))
  jpeg_image = jpeg_codec.decode(jpeg.data)
  (out / f"{HELD_OUT}_jpeg.jpg").write_bytes(jpeg.data)
  metric = lpips.LPIPS("alex")
  rows = []
  for name, image, size in (("HiFiC (tiny)", reconstruction, len(hific_bytes)),
                            (f"JPEG q{int(jpeg.knob)}", jpeg_image, len(jpeg.data))):
    psnr = float(tf.image.psnr(original, image, 255))
    distance = metric.image_distance(original, image)
    bpp = 8. * size / (original.shape[0] * original.shape[1])
    rows.append((name, size, bpp, psnr, distance))
  print(f"{'method':<14} {'bytes':>7} {'bpp':>7} {'PSNR dB':>8} {'LPIPS':>7}")
  for name, size, bpp, psnr, distance in rows:
    print(f"{name:<14} {size:>7d} {bpp:>7.4f} {psnr:>8.2f} {distance:>7.4f}")
  print(f"container: {hific_file.overhead_bytes} B of {len(hific_bytes)} B")
  side_by_side = images.side_by_side([
      ("original", original), (f"HiFiC tiny {rows[0][2]:.3f} bpp", reconstruction),
      (f"JPEG {rows[1][2]:.3f} bpp", jpeg_image)])
  images.write_atomic(out / "side_by_side.png", images.encode_png(side_by_side), force=True)
  print(f"wrote {out / 'side_by_side.png'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
