"""Codec speed and memory: HiFiC against its floors and classical codecs, in one run.

For each model (the paper's hific-lo with untrained weights, since speed does not depend on
them, and each bundled codec) and precision of E and G (float32, bfloat16):

- encode and decode through the SavedModel exactly as `hific compress/decompress` run them
  (range coding included), best of --repeats, whole-image and tiled paths (with
  --norm_variants also whole-image with ChannelNorm as one XLA kernel); in float32 also
  through the TFLite codec (`hific export --tflite`, XNNPACK), with how far its pixels are
  from the SavedModel's;
- the FLOP floor: the FLOPs of encoding (E, the hyper-analysis and the hyper-syntheses) and
  of decoding (the hyper-syntheses and G), counted by TensorFlow's profiler on the graphs at
  that size, over the best dense float32 matmul throughput measured in this run (numpy's BLAS or
  TensorFlow's, whichever is faster): what the machine could not beat at full efficiency.
  encode / FLOP floor and decode / FLOP floor are the ratios to watch;
- the conv floor: the generator's convolutions alone, as bfloat16 (or float32) convs with
  constant weights at the same shapes, in one tf.function, and its own ratio to the FLOP
  floor ("conv x"): a decode cannot get under it without faster convolutions;
- peak RSS of a fresh child process that loads the codec and encodes (or decodes) one image.

The header states the kernels hific_tf chose on this machine (hific_tf/runtime.py). Each
model and precision is measured in its own fresh process (with its own matmul floor), since
what one model leaves behind in a process slows the next.

JPEG, WebP and AVIF run on the same images. `--json FILE` writes every figure (decode_ms,
encode_ms, floor_ms, peak_rss_mb per model, size, precision and path) for tracking.

With --held_out, what a variant of one codec (--model) costs in quality on the held-out photos
instead, side by side in one run (means over --images; times are each photo's second encode
and decode):

- `precision`: the codec exported four times, identical but for the compute type of E and G.
  A bfloat16 encoder only changes which latents are picked, so its files decode anywhere; a
  bfloat16 generator only changes the decoded pixels (the hyperprior, and so the range
  coder's tables, stay float32). "PSNR to f32" is each variant's decode of the float32
  encoder's files against the all-float32 decode. bfloat16 is only fast on CPUs that compute
  it natively (AVX512-BF16, AMX) and emulated about 3-5x slower elsewhere.
- `tflite`: the SavedModel against TFLite folders with float32, float16 and int8 weights.
  "same bytes" is the share of photos whose file equals the SavedModel's byte for byte; "PSNR
  to SM" compares each codec's decode of the SavedModel's file with the SavedModel's own
  decode; "SM reads" whether the SavedModel decodes this codec's files to within 40 dB of this
  codec's own decode (the bitstream is the same format everywhere).

Usage: python bench/codec_speed.py [--sizes 768x512,2048x1536] [--repeats 3] [--json F]
       [--models hific-lo,small-lo] [--rss_sizes 2048x1536,4096x3072]
       python bench/codec_speed.py --held_out precision|tflite [--model small-lo]
"""

import argparse
import itertools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import common
from hific_tf import geometry
import port_peer


def photo(width, height):
  from PIL import Image
  import skimage.data
  image = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.BICUBIC)
  return np.asarray(image)


def child(mode, directory, width, height, tile):
  """One encode or decode in this fresh process, set up as `hific compress/decompress` set
  theirs; prints its peak RSS in MB (JSON)."""
  from hific_tf import runtime
  from hific_tf.serving import codec
  if not os.environ.get("HIFIC_BENCH_GLIBC_DEFAULT"):
    runtime.return_large_buffers()
  runner = codec.SavedModelCodec(directory, tile=tile, max_pixels=1 << 40)
  image = photo(width, height)
  if mode == "decode":
    data = pathlib.Path(directory).parent / f"{pathlib.Path(directory).name}_{width}x{height}.hific"
    from hific_tf import bitstream
    if not data.exists():
      raise SystemExit(f"missing {data}")
    before, start = common.peak_rss_mb(), time.perf_counter()
    runner.decompress(bitstream.HificFile.from_bytes(data.read_bytes()))
  else:
    before, start = common.peak_rss_mb(), time.perf_counter()
    runner.compress(image)
  print(json.dumps({"peak_rss_mb": common.peak_rss_mb(), "before_mb": before,
                    "seconds": time.perf_counter() - start}))


def parse_sizes(text):
  """"768x512,2048x1536" -> [(768, 512), (2048, 1536)]."""
  return [tuple(int(v) for v in size.split("x")) for size in text.split(",") if size]


def matmul_gflops(repeats=20, n=2048):
  """(numpy float32, TensorFlow float32, TensorFlow bfloat16) GFLOP/s of an n x n matmul,
  best of `repeats`. The bfloat16 figure is the floor of the bfloat16 rows: on CPUs with
  AMX it is several times float32's, so a bfloat16 codec under the float32 floor may still
  be far from its own."""
  import tensorflow as tf
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  numpy_s = common.best_seconds(lambda: a @ a, repeats)
  t = tf.constant(a)
  tf_s = common.best_seconds(lambda: tf.linalg.matmul(t, t).numpy(), repeats)
  b = tf.cast(t, tf.bfloat16)
  bf16_s = common.best_seconds(lambda: tf.linalg.matmul(b, b)[0, 0].numpy(), repeats)
  return tuple(2 * n ** 3 / s / 1e9 for s in (numpy_s, tf_s, bf16_s))


def graph_flops(function, spec):
  """Floating-point operations of `function` at the static shape `spec` (TF's profiler:
  2 x multiply-adds for convs and transposed convs)."""
  import tensorflow as tf
  from tensorflow.python.framework import convert_to_constants
  concrete = tf.function(function).get_concrete_function(spec)
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return tf.compat.v1.profiler.profile(frozen.graph, options=options).total_float_ops


def codec_flops(model, height, width):
  """(encode, decode) FLOPs for an image of this size, padded as the codec pads it: E, the
  hyper-analysis and both hyper-syntheses; the hyper-syntheses and G."""
  import tensorflow as tf
  rows, cols = geometry.latent_shapes(height, width)[0]
  hyperprior = model.hyperprior
  channels = int(model.generator.head.layers[0].gamma.shape[0])
  latent = tf.TensorSpec([1, rows, cols, channels], tf.float32)
  encoder = graph_flops(lambda x: model.encoder(x),
                        tf.TensorSpec([1, rows * 16, cols * 16, 3], tf.float32))
  analysis = graph_flops(lambda y: hyperprior.analysis(y), latent)
  z_shape = hyperprior.analysis.compute_output_shape(latent.shape)
  synthesis = graph_flops(lambda z: hyperprior._parameters(z, (rows, cols)),
                          tf.TensorSpec(z_shape, tf.float32))
  generator = graph_flops(lambda y: model.generator(y), latent)
  return encoder + analysis + synthesis, synthesis + generator


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

  return common.best_seconds(lambda: run().numpy(), repeats)


def memory_variants(directory, width, height, rows):
  """The decode's peak RSS and time, each in a fresh process: the default (384-pixel windows,
  large buffers returned to the system) against 512-pixel windows, glibc's own malloc, and
  oneDNN's kernels allocating with malloc instead of their pool (as `hific serve` runs)."""
  for label, tile, env in (("384-px windows, buffers returned (default)", "auto", {}),
                           ("512-px windows, buffers returned", "512", {}),
                           ("384-px windows, glibc's default", "auto",
                            {"HIFIC_BENCH_GLIBC_DEFAULT": "1"}),
                           ("384-px windows, oneDNN allocating with malloc (hific serve)",
                            "auto", {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"})):
    done = subprocess.run(
        [sys.executable, __file__, "--child", "decode", str(directory), str(width),
         str(height), tile], capture_output=True, text=True, env=dict(os.environ, **env))
    if done.returncode:
      print(f"    {label}: failed")
      continue
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows.append(dict(model=pathlib.Path(directory).name, size=f"{width}x{height}",
                     variant=label, **result))
    print(f"    decode {width}x{height}, {label}: {result['peak_rss_mb']:.0f} MB, "
          f"{result['seconds']:.1f} s")


def compare_with_peer(args, sizes, rows):
  """The PyTorch port's compress and decompress at each size (its own process and Python),
  with the ratio of its decompress to hific_tf's hific-lo decode from the rows above."""
  for width, height in sizes:
    result, failure = port_peer.run(args.peer_src, args.peer_python, "--width", width,
                                    "--height", height, "--repeats", args.repeats)
    if failure:
      print(f"PyTorch port {width}x{height}: failed: {failure}")
      continue
    rows.append(dict(model="pytorch-port", size=f"{width}x{height}", **result))
    print(f"PyTorch port (torch {result['torch']}, {result['threads']} threads, hific-lo "
          f"architecture) {width}x{height}: compress {result['compress_ms']:.0f} ms, "
          f"decompress {result['decompress_ms']:.0f} ms (generator "
          f"{result['generator_ms']:.0f} ms)")
    for row in rows:
      if row.get("model") == "hific-lo" and row.get("size") == f"{width}x{height}" and (
          "decode_ms" in row):
        print(f"  hific_tf hific-lo {row['generator'].replace('mixed_', '')} {row['path']}: "
              f"decode {row['decode_ms']:.0f} ms = {result['decompress_ms'] / row['decode_ms']:.2f}x "
              f"faster than the port; encode {row['encode_ms']:.0f} ms = "
              f"{result['compress_ms'] / row['encode_ms']:.2f}x")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", "--config", dest="models", default="hific-lo,small-lo",
                      help="Configs (untrained) or codecs with weights (bundled names, codec "
                      "folders, model_dirs), comma-separated.")
  parser.add_argument("--sizes", default="768x512,2048x1536")
  parser.add_argument("--rss_sizes", default="2048x1536,4096x3072",
                      help="Sizes for the fresh-process peak-RSS runs (bfloat16, auto tiling).")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", help="Write all figures to this JSON file.")
  parser.add_argument("--tflite", action=argparse.BooleanOptionalAction, default=True,
                      help="Also time the TFLite codec (float32 rows).")
  parser.add_argument("--precisions", default="float32,mixed_bfloat16",
                      help="Compute types of E and G to measure.")
  parser.add_argument("--memory_variants", action="store_true",
                      help="Also decode the --rss_sizes with 512-pixel windows, with glibc's "
                      "default malloc and with oneDNN allocating with malloc (float32), for the peak "
                      "RSS and time of each.")
  parser.add_argument("--norm_variants", action="store_true",
                      help="Also time the whole-image path with ChannelNorm as one XLA kernel "
                      "(path fused-norm), as training runs it.")
  parser.add_argument("--peer_src", help="A checkout of the PyTorch HiFiC port: its compress "
                      "and decompress of the same sizes run beside ours (bench/port_peer.py).")
  parser.add_argument("--peer_python", help="The Python of the port's own venv (torch, "
                      "numpy<2, autograd, scipy, scikit-image, tqdm); default: this one.")
  parser.add_argument("--held_out", choices=["precision", "tflite"],
                      help="Instead: the quality of one codec's variants on held-out photos.")
  parser.add_argument("--model", default="small-lo", help="The codec --held_out measures.")
  parser.add_argument("--images", default=str(common.HELD_OUT),
                      help="The photos --held_out measures on.")
  parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
  parser.add_argument("--model_rows", help=argparse.SUPPRESS)  # One model's rows, to a file.
  args = parser.parse_args()
  if args.held_out:
    return {"precision": held_out_precision, "tflite": held_out_tflite}[args.held_out](args)
  if args.child:
    mode, directory, width, height, tile = args.child
    return child(mode, directory, int(width), int(height),
                 None if tile == "auto" else int(tile))
  if args.model_rows:
    rows = []
    measure_models(args, rows)
    pathlib.Path(args.model_rows).write_text(json.dumps(rows))
    return None
  rows = []
  # Each model and precision in a fresh process: after hific-lo's gigabytes (and a TFLite
  # conversion) the same process decoded small-lo 1.7x slower than a fresh one does.
  for name, precision in itertools.product(args.models.split(","), args.precisions.split(",")):
    with tempfile.TemporaryDirectory() as tmp:
      part = pathlib.Path(tmp) / "rows.json"
      command = [sys.executable, __file__, "--models", name, "--precisions", precision,
                 "--model_rows", str(part)]
      for flag in ("sizes", "rss_sizes", "repeats"):
        command += [f"--{flag}", str(getattr(args, flag))]
      command += ["--tflite" if args.tflite else "--no-tflite"]
      command += ["--memory_variants"] if args.memory_variants else []
      command += ["--norm_variants"] if args.norm_variants else []
      if subprocess.run(command).returncode:
        raise SystemExit(f"codec_speed: measuring {name} failed")
      rows += json.loads(part.read_text())
  from hific_tf import images
  from hific_tf.measure import classical
  sizes = parse_sizes(args.sizes)
  if args.peer_src:
    compare_with_peer(args, sizes, rows)
  print(f"{'classical':<31}{'size':>10}{'':>12}{'enc ms':>8}{'':>6}{'dec ms':>8}{'':>20}"
        f"{'bpp':>7}")
  for name in ("jpeg", "webp", "avif"):
    runner = classical.get_codec(name)
    for width, height in sizes:
      image = photo(width, height)
      quality = {"jpeg": 75, "webp": 75, "avif": 50}[name]
      data = runner.encode(image, quality)
      encode = common.best_seconds(lambda: runner.encode(image, quality), args.repeats)
      decode = common.best_seconds(lambda: runner.decode(data), args.repeats)
      row = dict(model=f"{name} q{quality}", size=f"{width}x{height}", encode_ms=encode * 1e3,
                 decode_ms=decode * 1e3,
                 bpp=images.bits_per_pixel(len(data), *image.shape[:2]))
      rows.append(row)
      print(f"{row['model']:<31}{row['size']:>10}{'':>12}{row['encode_ms']:>8.1f}{'':>6}"
            f"{row['decode_ms']:>8.1f}{'':>20}{row['bpp']:>7.3f}")
  if args.json:
    images.write_atomic(args.json, json.dumps(rows, indent=1).encode(), force=True)
    print(f"wrote {args.json}")
  return None


# (encoder, generator) compute types of --held_out precision.
PRECISION_VARIANTS = (("float32", "float32"), ("mixed_bfloat16", "float32"),
                      ("float32", "mixed_bfloat16"), ("mixed_bfloat16", "mixed_bfloat16"))


def _coded(runner, photo, lpips):
  """(file, decode, encode s, decode s, row) of one photo, times of the second calls."""
  from hific_tf.measure import metrics
  hific_file, encode = common.timed(lambda: runner.compress(photo))
  decoded, decode = common.timed(lambda: runner.decompress(hific_file))
  return hific_file, decoded, encode, decode, metrics.measure(
      photo, decoded, len(hific_file.to_bytes()), lpips, with_ms_ssim=False)


def held_out_precision(args):
  from hific_tf import runtime
  from hific_tf.measure import metrics
  from hific_tf.measure.lpips import LPIPS
  from hific_tf.models import sources
  from hific_tf.serving import codec
  photos, lpips = common.photos(args.images), LPIPS("alex")
  print(f"{args.model} on {len(photos)} photos; native bfloat16: "
        f"{runtime.native_bfloat16() or 'no'}")
  print(f"{'E':<10}{'G':<10}{'bpp':>8}{'PSNR dB':>9}{'LPIPS':>8}{'PSNR to f32':>13}"
        f"{'encode ms':>11}{'decode ms':>11}")
  reference_files = reference_pixels = None
  with tempfile.TemporaryDirectory() as tmp:
    for encoder_dtype, generator_dtype in PRECISION_VARIANTS:
      directory = pathlib.Path(tmp) / f"{encoder_dtype}_{generator_dtype}"
      codec.export(sources.build_model(args.model, encoder_dtype=encoder_dtype,
                                       generator_dtype=generator_dtype), directory)
      runner = codec.SavedModelCodec(directory)
      coded = [_coded(runner, photo, lpips) for photo in photos]
      if reference_files is None:
        reference_files, reference_pixels = [c[0] for c in coded], [c[1] for c in coded]
      to_reference = np.mean([metrics.psnr(pixels, runner.decompress(f))
                              for f, pixels in zip(reference_files, reference_pixels)])
      bpp, psnr, distance = np.mean([(c[4]["bpp"], c[4]["psnr"], c[4]["lpips"])
                                     for c in coded], axis=0)
      print(f"{encoder_dtype.replace('mixed_', ''):<10}{generator_dtype.replace('mixed_', ''):<10}"
            f"{bpp:>8.4f}{psnr:>9.2f}{distance:>8.4f}{min(to_reference, 99):>13.1f}"
            f"{np.mean([c[2] for c in coded]) * 1e3:>11.0f}"
            f"{np.mean([c[3] for c in coded]) * 1e3:>11.0f}")


def held_out_tflite(args):
  from hific_tf import runtime
  from hific_tf.measure import metrics
  from hific_tf.measure.lpips import LPIPS
  from hific_tf.models import sources
  from hific_tf.serving import codec, tflite
  photos, lpips = common.photos(args.images), LPIPS("alex")
  print(f"{args.model} on {len(photos)} photos; kernels: {runtime.KERNELS}; "
        f"TFLite threads: {tflite.cpu_threads()}")
  print(f"{'codec':<16}{'MB':>7}{'bpp':>8}{'PSNR':>7}{'LPIPS':>8}{'same bytes':>11}"
        f"{'PSNR to SM':>11}{'SM reads':>9}{'enc ms':>8}{'dec ms':>8}")
  with tempfile.TemporaryDirectory() as tmp:
    model = sources.build_model(args.model)
    folders = {"SavedModel": pathlib.Path(tmp) / "saved_model"}
    codec.export(model, folders["SavedModel"])
    for weights in tflite.WEIGHT_TYPES:
      folders[f"TFLite {weights}"] = pathlib.Path(tmp) / f"tflite_{weights}"
      codec.export(model, folders[f"TFLite {weights}"], kind="tflite", tflite_weights=weights)
    reference = codec.SavedModelCodec(folders["SavedModel"])
    reference_files = [reference.compress(photo) for photo in photos]
    reference_pixels = [reference.decompress(f) for f in reference_files]
    for label, folder in folders.items():
      runner = reference if label == "SavedModel" else tflite.TfliteCodec(folder)
      rows = []
      for photo, reference_file, reference_decode in zip(photos, reference_files,
                                                         reference_pixels):
        hific_file, decoded, encode, decode, measured = _coded(runner, photo, lpips)
        rows.append((measured["bpp"], measured["psnr"], measured["lpips"],
                     hific_file.to_bytes() == reference_file.to_bytes(),
                     min(metrics.psnr(runner.decompress(reference_file), reference_decode), 99.),
                     metrics.psnr(reference.decompress(hific_file), decoded) > 40,
                     encode, decode))
      bpp, quality, distance, same, to_sm, reads, encode, decode = np.mean(rows, axis=0)
      print(f"{label:<16}{common.folder_mb(folder):>7.1f}{bpp:>8.4f}{quality:>7.2f}"
            f"{distance:>8.4f}{same * 100:>10.0f}%{to_sm:>10.1f}dB{reads * 100:>8.0f}%"
            f"{encode * 1e3:>8.0f}{decode * 1e3:>8.0f}")


def measure_models(args, rows):
  """Every row of the --models (one, in practice: main gives each its own process)."""
  import tensorflow as tf

  from hific_tf import configs, runtime
  from hific_tf.models import sources, zoo
  from hific_tf.models.hific.model import HiFiC
  from hific_tf.serving import codec, tflite, windows
  sizes = parse_sizes(args.sizes)
  rss_sizes = parse_sizes(args.rss_sizes)
  numpy_gflops, tf_gflops, bf16_gflops = matmul_gflops()
  best_gflops = max(numpy_gflops, tf_gflops)
  print(f"{os.cpu_count()} CPU threads, TF {tf.__version__}, kernels: {runtime.KERNELS}; "
        f"native bfloat16: {runtime.native_bfloat16() or 'no'}")
  print(f"dense float32 matmul 2048²: numpy {numpy_gflops:.0f} GFLOP/s, TensorFlow "
        f"{tf_gflops:.0f} GFLOP/s; FLOP floor = FLOPs / {best_gflops:.0f} GFLOP/s")
  print(f"dense bfloat16 matmul 2048²: TensorFlow {bf16_gflops:.0f} GFLOP/s; the bfloat16 rows' "
        f"own floor (x bf) = FLOPs / {bf16_gflops:.0f} GFLOP/s")
  print(f"times are the best of {args.repeats}; conv floor = the generator's convs alone "
        "with constant weights; x = ms over the FLOP floor")
  print(f"{'model':<12}{'E+G':<6}{'path':<13}{'size':>10}{'GFLOP e/d':>12}{'enc ms':>8}"
        f"{'x':>6}{'dec ms':>8}{'x':>6}{'x bf':>6}{'conv fl':>8}{'conv x':>7}{'bpp':>7}"
        f"{'vs SM':>8}")
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.models.split(","):
      for dtype in args.precisions.split(","):
        # One precision for E and G: the bfloat16 rows are the fast configuration.
        if name in zoo.names() or pathlib.Path(name).exists():  # Any codec with weights.
          model = sources.build_model(name, generator_dtype=dtype, encoder_dtype=dtype)
        else:
          config = configs.get_config(name).replace(stage="mselpips")
          model = HiFiC(config, generator_dtype=dtype, encoder_dtype=dtype,
                        lean_generator=True).build_all()
        directory = pathlib.Path(tmp) / f"{name}_{dtype}"
        codec.export(model, directory)
        floor_dtype = tf.bfloat16 if dtype == "mixed_bfloat16" else tf.float32
        runners = [(path, codec.SavedModelCodec(directory, tile=tile, max_pixels=1 << 40))
                   for path, tile in (("whole", 0), ("tiled", windows.DEFAULT_TILE))]
        if args.norm_variants:
          # ChannelNorm as one XLA kernel (as training runs it) instead of plain ops.
          from hific_tf.models.hific import layers
          fused_dir = pathlib.Path(tmp) / f"{name}_{dtype}_fused_norm"
          with layers.fused_norms():
            codec.export(model, fused_dir)
          fused = codec.SavedModelCodec(fused_dir, tile=0, max_pixels=1 << 40)
          image = photo(*sizes[0])
          start = time.perf_counter()
          fused.decompress(fused.compress(image))  # XLA compiles for this size.
          print(f"  fused-norm: first encode and decode of a new size "
                f"{time.perf_counter() - start:.2f} s (XLA compiling)")
          runners.append(("fused-norm", fused))
        if dtype == "float32" and args.tflite:
          tflite_dir = pathlib.Path(tmp) / f"{name}_tflite"
          codec.export(model, tflite_dir, kind="tflite")
          runners += [(f"tflite-{path}", tflite.TfliteCodec(tflite_dir, tile=tile,
                                                           max_pixels=1 << 40))
                      for path, tile in (("whole", 0), ("tiled", windows.DEFAULT_TILE))]
        references = {}
        for path, runner in runners:
          for width, height in sizes:
            if path.endswith("tiled") and width * height <= windows.AUTO_TILE_PIXELS:
              continue
            image = photo(width, height)
            hific_file = runner.compress(image)
            if path == "whole":
              (pathlib.Path(tmp) / f"{directory.name}_{width}x{height}.hific").write_bytes(
                  hific_file.to_bytes())
              references[width, height] = hific_file, runner.decompress(hific_file)
            encode = common.best_seconds(lambda: runner.compress(image), args.repeats)
            decode = common.best_seconds(lambda: runner.decompress(hific_file), args.repeats)
            # What `compress` cost before the estimate left it: compress plus estimate_bits.
            with_estimate = (common.best_seconds(lambda: runner.compress(image, with_estimate=True),
                                   args.repeats) if path == "whole" else float("nan"))
            y_shape = list(geometry.latent_shapes(height, width)[0])
            floor = conv_floor(model, y_shape, floor_dtype, args.repeats)
            encode_flops, decode_flops = codec_flops(model, height, width)
            row = dict(model=name, generator=dtype, path=path, size=f"{width}x{height}",
                       encode_ms=encode * 1e3, decode_ms=decode * 1e3, floor_ms=floor * 1e3,
                       encode_with_estimate_ms=with_estimate * 1e3,
                       encode_gflop=encode_flops / 1e9, decode_gflop=decode_flops / 1e9,
                       encode_flop_floor_ms=encode_flops / best_gflops / 1e6,
                       decode_flop_floor_ms=decode_flops / best_gflops / 1e6,
                       encode_bf16_floor_ms=encode_flops / bf16_gflops / 1e6,
                       decode_bf16_floor_ms=decode_flops / bf16_gflops / 1e6,
                       bpp=hific_file.bits_per_pixel())
            against = ""
            if path != "whole" and (width, height) in references:
              # The same file decoded here and by the whole-image SavedModel path.
              reference_file, reference_pixels = references[width, height]
              pixels = runner.decompress(reference_file).astype(np.float64)
              mse = np.mean((pixels - reference_pixels) ** 2)
              row["psnr_to_saved_model"] = 10 * np.log10(255 ** 2 / max(mse, 1e-10))
              row["same_bytes"] = hific_file.to_bytes() == reference_file.to_bytes()
              against = f"{min(row['psnr_to_saved_model'], 99):>6.1f}dB"
            rows.append(row)
            print(f"{name:<12}{dtype.replace('mixed_', '')[:5]:<6}{path:<13}"
                  f"{row['size']:>10}{row['encode_gflop']:>6.0f}/{row['decode_gflop']:<5.0f}"
                  f"{row['encode_ms']:>8.0f}{encode * 1e3 / row['encode_flop_floor_ms']:>6.2f}"
                  f"{row['decode_ms']:>8.0f}{decode * 1e3 / row['decode_flop_floor_ms']:>6.2f}"
                  + (f"{decode * 1e3 / row['decode_bf16_floor_ms']:>6.2f}"
                     if dtype == "mixed_bfloat16" else f"{'':>6}") +
                  f"{row['floor_ms']:>8.0f}"
                  f"{row['floor_ms'] / row['decode_flop_floor_ms']:>7.2f}"
                  f"{row['bpp']:>7.3f}{against:>8}")
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
          if args.memory_variants and dtype == "float32":
            memory_variants(directory, width, height, rows)


if __name__ == "__main__":
  main()
