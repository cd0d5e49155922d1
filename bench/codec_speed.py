"""Codec speed and memory: HiFiC against its conv floor and classical codecs, in one run.

For each model (the paper's hific-lo with untrained weights, since speed does not depend on
them, and each bundled codec) and precision of E and G (float32, bfloat16):

- encode and decode through the SavedModel exactly as `hific compress/decompress` run them
  (range coding included), best of --repeats, whole-image and tiled paths;
- the floor: the generator's convolutions alone, as bfloat16 (or float32) convs with constant
  weights at the same shapes, in one tf.function; decode / floor is the ratio to watch;
- peak RSS of a fresh child process that loads the codec and encodes (or decodes) one image.

JPEG, WebP and AVIF run on the same images. `--json FILE` writes every figure (decode_ms,
encode_ms, floor_ms, peak_rss_mb per model, size, precision and path) for tracking.

Usage: python bench/codec_speed.py [--sizes 768x512,2048x1536] [--repeats 3] [--json F]
       [--models hific-lo,small-lo] [--rss_sizes 2048x1536,4096x3072]
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from hific_tf import geometry


def peak_rss_mb():
  """This process's peak RSS. VmHWM, not getrusage: Linux carries ru_maxrss across exec, so
  a child forked from this big process would report the parent's size."""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
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
  from PIL import Image
  import skimage.data
  image = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.BICUBIC)
  return np.asarray(image)


def child(mode, directory, width, height, tile):
  """One encode or decode in this fresh process; prints its peak RSS in MB (JSON)."""
  from hific_tf.serving import codec
  runner = codec.SavedModelCodec(directory, tile=tile, max_pixels=1 << 40)
  image = photo(width, height)
  if mode == "decode":
    data = pathlib.Path(directory).parent / f"{pathlib.Path(directory).name}_{width}x{height}.hific"
    from hific_tf.serving import bitstream
    if not data.exists():
      raise SystemExit(f"missing {data}")
    before = peak_rss_mb()
    runner.decompress(bitstream.HificFile.from_bytes(data.read_bytes()))
  else:
    before = peak_rss_mb()
    runner.compress(image)
  print(json.dumps({"peak_rss_mb": peak_rss_mb(), "before_mb": before}))


def conv_floor(model, y_shape, dtype, repeats):
  """ms of the generator's convs alone: constant weights, random inputs, one tf.function."""
  import tensorflow as tf
  generator = model.generator
  layers = list(generator.head.layers)
  for block in generator.blocks.layers:
    layers += block.body.layers
  layers += generator.tail.layers
  plan, size = [], list(y_shape)
  for layer in layers:
    if not isinstance(layer, tf.keras.layers.Conv2D):
      continue
    transposed = isinstance(layer, tf.keras.layers.Conv2DTranspose)
    kernel = tf.constant(tf.cast(layer.kernel, dtype))
    channels_in = int(kernel.shape[-1] if transposed else kernel.shape[-2])
    x = tf.cast(tf.random.uniform([1, size[0], size[1], channels_in]), dtype)
    plan.append((transposed, kernel, x))
    if transposed:
      size = [size[0] * 2, size[1] * 2]

  @tf.function
  def run():
    total = tf.constant(0., dtype)
    for transposed, kernel, x in plan:
      if transposed:
        shape = [1, x.shape[1] * 2, x.shape[2] * 2, kernel.shape[-2]]
        out = tf.nn.conv2d_transpose(x, kernel, shape, 2, padding="SAME")
      else:
        out = tf.nn.conv2d(x, kernel, 1, padding="SAME")
      total += out[0, 0, 0, 0]
    return total

  return timed(lambda: run().numpy(), repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="hific-lo,small-lo",
                      help="Configs (untrained) or bundled codec names.")
  parser.add_argument("--sizes", default="768x512,2048x1536")
  parser.add_argument("--rss_sizes", default="2048x1536,4096x3072",
                      help="Sizes for the fresh-process peak-RSS runs (bfloat16, auto tiling).")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", help="Write all figures to this JSON file.")
  parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    mode, directory, width, height, tile = args.child
    return child(mode, directory, int(width), int(height),
                 None if tile == "auto" else int(tile))

  import tensorflow as tf

  from hific_tf import configs, images, zoo
  from hific_tf.evaluation import classical
  from hific_tf.models.hific.model import HiFiC
  from hific_tf.serving import codec
  sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
  rss_sizes = [tuple(int(v) for v in s.split("x")) for s in args.rss_sizes.split(",") if s]
  print(f"{os.cpu_count()} CPU threads, TF {tf.__version__}; times are the best of "
        f"{args.repeats}; floor = the generator's convs alone with constant weights")
  print(f"{'model':<12}{'E+G':<6}{'path':<7}{'size':>10}{'enc ms':>9}{'+est ms':>9}"
        f"{'dec ms':>9}{'floor ms':>9}{'dec/floor':>10}{'bpp':>7}")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.models.split(","):
      for dtype in ("float32", "mixed_bfloat16"):
        # One precision for E and G: the bfloat16 rows are the fast configuration.
        if name in zoo.names():
          model = zoo.build_model(name, generator_dtype=dtype, encoder_dtype=dtype)
        else:
          config = configs.get_config(name).replace(stage="mselpips")
          model = HiFiC(config, generator_dtype=dtype, encoder_dtype=dtype).build_all()
        directory = pathlib.Path(tmp) / f"{name}_{dtype}"
        codec.export(model, directory)
        floor_dtype = tf.bfloat16 if dtype == "mixed_bfloat16" else tf.float32
        for path, tile in (("whole", 0), ("tiled", codec.DEFAULT_TILE)):
          runner = codec.SavedModelCodec(directory, tile=tile, max_pixels=1 << 40)
          for width, height in sizes:
            if path == "tiled" and width * height <= codec.AUTO_TILE_PIXELS:
              continue
            image = photo(width, height)
            hific_file = runner.compress(image)
            if path == "whole":
              (pathlib.Path(tmp) / f"{directory.name}_{width}x{height}.hific").write_bytes(
                  hific_file.to_bytes())
            encode = timed(lambda: runner.compress(image), args.repeats)
            decode = timed(lambda: runner.decompress(hific_file), args.repeats)
            # What `compress` cost before the estimate left it: compress plus estimate_bits.
            with_estimate = (timed(lambda: runner.compress(image, with_estimate=True),
                                   args.repeats) if path == "whole" else float("nan"))
            y_shape = list(geometry.latent_shapes(height, width)[0])
            floor = conv_floor(model, y_shape, floor_dtype, args.repeats)
            row = dict(model=name, generator=dtype, path=path, size=f"{width}x{height}",
                       encode_ms=encode * 1e3, decode_ms=decode * 1e3, floor_ms=floor * 1e3,
                       encode_with_estimate_ms=with_estimate * 1e3,
                       bpp=hific_file.bits_per_pixel())
            rows.append(row)
            print(f"{name:<12}{dtype.replace('mixed_', '')[:5]:<6}{path:<7}"
                  f"{row['size']:>10}{row['encode_ms']:>9.0f}"
                  f"{row['encode_with_estimate_ms']:>9.0f}{row['decode_ms']:>9.0f}"
                  f"{row['floor_ms']:>9.0f}{decode / floor:>10.2f}{row['bpp']:>7.3f}")
        for width, height in rss_sizes:
          whole_file = pathlib.Path(tmp) / f"{directory.name}_{width}x{height}.hific"
          if not whole_file.exists():
            image = photo(width, height)
            runner = codec.SavedModelCodec(directory, max_pixels=1 << 40)  # Tiled if large.
            whole_file.write_bytes(runner.compress(image).to_bytes())
          for mode in ("encode", "decode"):
            # The whole-image path above 4 MP would need tens of GB (hific-lo at 2048x1536
            # already takes several): only the tiled path runs there.
            for tile in ("auto", "0") if width * height <= 4_000_000 else ("auto",):
              done = subprocess.run(
                  [sys.executable, __file__, "--child", mode, str(directory), str(width),
                   str(height), tile], capture_output=True, text=True)
              if done.returncode:
                result = {"error": (done.stderr.strip().splitlines() or ["killed"])[-1][:120]}
              else:
                result = json.loads(done.stdout.strip().splitlines()[-1])
              row = dict(model=name, generator=dtype, size=f"{width}x{height}", mode=mode,
                         path="whole" if tile == "0" else "auto", **result)
              rows.append(row)
              print(f"  peak RSS {name} {dtype.replace('mixed_', '')[:5]} {mode} "
                    f"{width}x{height} {row['path']:<6}: "
                    + (f"{result['peak_rss_mb']:.0f} MB (after loading "
                       f"{result['before_mb']:.0f} MB)" if "peak_rss_mb" in result
                       else result["error"]))
  for name in ("jpeg", "webp", "avif"):
    runner = classical.get_codec(name)
    for width, height in sizes:
      image = photo(width, height)
      quality = {"jpeg": 75, "webp": 75, "avif": 50}[name]
      data = runner.encode(image, quality)
      encode = timed(lambda: runner.encode(image, quality), args.repeats)
      decode = timed(lambda: runner.decode(data), args.repeats)
      row = dict(model=f"{name} q{quality}", size=f"{width}x{height}", encode_ms=encode * 1e3,
                 decode_ms=decode * 1e3,
                 bpp=images.bits_per_pixel(len(data), *image.shape[:2]))
      rows.append(row)
      print(f"{row['model']:<25}{row['size']:>10}{row['encode_ms']:>9.1f}{'':>9}"
            f"{row['decode_ms']:>9.1f}{'':>19}{row['bpp']:>7.3f}")
  if args.json:
    images.write_atomic(args.json, json.dumps(rows, indent=1).encode(), force=True)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
