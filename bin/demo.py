"""`make demo`: the bundled HiFiC codec against JPEG and AVIF at equal file size.

Compresses the held-out photos that ship with the tests (never trained on) with the default
bundled codec, through the real `hific compress` / `hific decompress` commands and real
.hific files. Then, for every photo, JPEG and AVIF are searched for their best encoding no
larger than HiFiC's file. It prints bpp, PSNR, MS-SSIM and LPIPS per photo and their means,
and writes side-by-side PNGs (original | HiFiC | JPEG | AVIF). It needs no training; see
`make demo-train` for the train-from-scratch demo.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent
HELD_OUT = REPO / "tests" / "data" / "heldout"
CROP = 320  # Side of the square shown from each photo in the side-by-side.


def _hific(*args):
  done = subprocess.run([sys.executable, "-m", "hific_tf.cli", *map(str, args)])
  if done.returncode:
    sys.exit(f"demo: `hific {' '.join(map(str, args))}` failed")


def _centre(image, size=CROP):
  top = max(0, (image.shape[0] - size) // 2)
  left = max(0, (image.shape[1] - size) // 2)
  return image[top:top + size, left:left + size]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="demo_out")
  parser.add_argument("--model", default=None, help="Bundled codec name (default: default).")
  args = parser.parse_args()
  import numpy as np

  from hific_tf import images
  from hific_tf.measure import classical, lpips, metrics

  start = time.time()
  out = pathlib.Path(args.out)
  if out.exists():
    shutil.rmtree(out)  # The demo's own folder: start clean every time.
  (out / "files").mkdir(parents=True)
  photos = images.list_images(HELD_OUT)
  model_flag = ["--model", args.model] if args.model else []
  print(f"== compressing {len(photos)} held-out photos with the bundled codec")
  _hific("compress", *model_flag, HELD_OUT, out / "files")
  print("== decompressing them (the codec is found from each file's header)")
  _hific("decompress", out / "files", out / "files")

  print("== JPEG and AVIF at the same file size, photo by photo")
  metric = lpips.LPIPS("alex")
  table = {name: [] for name in ("HiFiC", "JPEG", "AVIF")}
  for path in photos:
    stem = pathlib.Path(path).stem
    original = images.load_rgb(path)
    hific_bytes = (out / "files" / f"{stem}.hific").stat().st_size
    candidates = {"HiFiC": (images.load_rgb(out / "files" / f"{stem}.png"), hific_bytes)}
    for name, result in classical.at_equal_size(original, hific_bytes, ("jpeg", "avif")).items():
      candidates[name.upper()] = result
    tiles = [("original", _centre(original))]
    for name, (image, size) in candidates.items():
      measured = metrics.measure(original, image, size, metric)
      bpp = measured["bpp"]
      table[name].append(tuple(measured[k] for k in ("bpp", "psnr", "ms_ssim", "lpips")))
      tiles.append((f"{name} {bpp:.3f} bpp", _centre(image)))
    images.write_atomic(out / f"{stem}_side_by_side.png",
                        images.encode_png(images.side_by_side(tiles)), force=True)
    print(f"  {stem:<32}" + "  ".join(
        f"{name} {rows[-1][0]:.3f} bpp LPIPS {rows[-1][3]:.3f}" for name, rows in table.items()))

  print(f"\nmeans over {len(photos)} held-out photos (each codec at its best encoding no "
        "larger than HiFiC's file, or its smallest where it cannot get that small):")
  print(f"{'codec':<8}{'bpp':>8}{'PSNR dB':>9}{'MS-SSIM':>9}{'LPIPS':>8}")
  for name, rows in table.items():
    bpp, psnr, ms_ssim, distance = np.nanmean(np.array(rows, dtype=np.float64), axis=0)
    print(f"{name:<8}{bpp:>8.4f}{psnr:>9.2f}{ms_ssim:>9.4f}{distance:>8.4f}")
  print("LPIPS: lower is better. Side-by-side crops and the .hific files are in "
        f"{out} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
