"""Codec speed: HiFiC encode/decode at 768x512 and 2048x1536, against JPEG, WebP and AVIF.

Full hific-lo architecture (untrained weights: speed does not depend on them), exported as a
SavedModel with a float32 and with a bfloat16 generator, run through the SavedModel signatures
exactly as `hific compress/decompress` do (range coding included). Prints ms, megapixels/s and
the process's peak resident memory. Classical codecs through Pillow on the same images.

Usage: python bench/codec_speed.py [--sizes 768x512,2048x1536] [--repeats 3]
"""

import argparse
import os
import pathlib
import resource
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from hific_tf import images  # pylint: disable=g-import-not-at-top
from hific_tf.evaluation import classical  # pylint: disable=g-import-not-at-top
from hific_tf.serving import codec  # pylint: disable=g-import-not-at-top
from hific_tf import configs  # pylint: disable=g-import-not-at-top
from hific_tf.training import train  # pylint: disable=g-import-not-at-top
from hific_tf.models.hific.model import HiFiC  # pylint: disable=g-import-not-at-top


def peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function, repeats):
  function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def photo(width, height):
  import skimage.data
  from PIL import Image
  image = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.BICUBIC)
  return np.asarray(image)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="hific-lo")
  parser.add_argument("--sizes", default="768x512,2048x1536")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
  config = configs.get_config(args.config)
  print(f"{args.config}: {os.cpu_count()} CPU threads, TF {tf.__version__}; best of "
        f"{args.repeats}; peak RSS is the whole process so far")
  print(f"{'codec':<22}{'size':>11}{'encode ms':>11}{'decode ms':>11}{'enc MP/s':>10}"
        f"{'dec MP/s':>10}{'bpp':>8}{'peak MB':>9}")
  with tempfile.TemporaryDirectory() as tmp:
    model_dir = pathlib.Path(tmp) / "model"
    model = HiFiC(config).build_all()
    (model_dir / "checkpoints").mkdir(parents=True)
    (model_dir / "config.json").write_text(config.to_json())
    train.codec_checkpoint(model).save(str(model_dir / "checkpoints" / "ckpt"))
    for dtype in ("float32", "mixed_bfloat16"):
      loaded = train.load_trained(model_dir, generator_dtype=dtype)
      codec.export(loaded, pathlib.Path(tmp) / dtype, generator_dtype=dtype)
      runner = codec.SavedModelCodec(pathlib.Path(tmp) / dtype)
      for width, height in sizes:
        image = photo(width, height)
        hific_file = runner.compress(image)
        encode = timed(lambda: runner.compress(image), args.repeats)
        decode = timed(lambda: runner.decompress(hific_file), args.repeats)
        megapixels = width * height / 1e6
        print(f"{'hific G=' + dtype.replace('mixed_', ''):<22}{f'{width}x{height}':>11}"
              f"{encode * 1e3:>11.0f}{decode * 1e3:>11.0f}{megapixels / encode:>10.2f}"
              f"{megapixels / decode:>10.2f}{hific_file.bits_per_pixel():>8.3f}"
              f"{peak_rss_mb():>9.0f}")
  for name in ("jpeg", "webp", "avif"):
    runner = classical.get_codec(name)
    for width, height in sizes:
      image = photo(width, height)
      quality = {"jpeg": 75, "webp": 75, "avif": 50}[name]
      data = runner.encode(image, quality)
      encode = timed(lambda: runner.encode(image, quality), args.repeats)
      decode = timed(lambda: runner.decode(data), args.repeats)
      megapixels = width * height / 1e6
      print(f"{f'{name} q{quality}':<22}{f'{width}x{height}':>11}{encode * 1e3:>11.1f}"
            f"{decode * 1e3:>11.1f}{megapixels / encode:>10.1f}{megapixels / decode:>10.1f}"
            f"{images.bits_per_pixel(len(data), *image.shape[:2]):>8.3f}{peak_rss_mb():>9.0f}")


if __name__ == "__main__":
  main()
