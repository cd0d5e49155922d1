"""What bfloat16 costs a codec: bpp, PSNR and LPIPS on the held-out photos, and its speed.

A bundled codec is exported four times, identical but for the compute type of its encoder
(E) and generator (G). A bfloat16 encoder only changes which latents are picked, so its files
decode anywhere; a bfloat16 generator only changes the decoded pixels (the hyperprior, and so
the range coder's tables, stay float32 in every variant). "PSNR to float32" is each
variant's decode of the float32 encoder's files against the all-float32 decode: how far a
user's pixels move when the decoder computes in bfloat16. Figures are means over
tests/data/heldout, measured side by side in one run; bfloat16 is only fast on CPUs that
compute it natively (AVX512-BF16, AMX), and emulated about 5x slower elsewhere.

Usage: python bench/precision.py [--model small-lo]
"""

import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import heldout_photos
import numpy as np

VARIANTS = (("float32", "float32"), ("mixed_bfloat16", "float32"),
            ("float32", "mixed_bfloat16"), ("mixed_bfloat16", "mixed_bfloat16"))


def timed(function):
  function()  # Warm-up for this shape.
  start = time.perf_counter()
  result = function()
  return result, time.perf_counter() - start


def main():
  args, photos, lpips = heldout_photos.set_up(__doc__)
  from hific_tf import runtime, zoo
  from hific_tf.evaluation import metrics
  from hific_tf.serving import codec
  print(f"{args.model} on {len(photos)} held-out photos; native bfloat16: "
        f"{runtime.native_bfloat16() or 'no'}")
  print(f"{'E':<10}{'G':<10}{'bpp':>8}{'PSNR dB':>9}{'LPIPS':>8}{'PSNR to f32':>13}"
        f"{'encode ms':>11}{'decode ms':>11}")
  reference_files, reference_pixels = None, None
  with tempfile.TemporaryDirectory() as tmp:
    for encoder_dtype, generator_dtype in VARIANTS:
      directory = pathlib.Path(tmp) / f"{encoder_dtype}_{generator_dtype}"
      codec.export(zoo.build_model(args.model, encoder_dtype=encoder_dtype,
                                   generator_dtype=generator_dtype), directory)
      runner = codec.SavedModelCodec(directory)
      rows, encode_s, decode_s, files = [], [], [], []
      for image in photos:
        hific_file, seconds = timed(lambda: runner.compress(image))
        encode_s.append(seconds)
        decoded, seconds = timed(lambda: runner.decompress(hific_file))
        decode_s.append(seconds)
        files.append(hific_file)
        measured = metrics.measure(image, decoded, len(hific_file.to_bytes()), lpips,
                                   with_ms_ssim=False)
        rows.append((measured["bpp"], measured["psnr"], measured["lpips"]))
      if reference_files is None:
        reference_files = files
        reference_pixels = [runner.decompress(f) for f in files]
      to_reference = np.mean([metrics.psnr(pixels, runner.decompress(f))
                              for f, pixels in zip(reference_files, reference_pixels)])
      bpp, psnr, distance = np.mean(rows, axis=0)
      print(f"{encoder_dtype.replace('mixed_', ''):<10}{generator_dtype.replace('mixed_', ''):<10}"
            f"{bpp:>8.4f}{psnr:>9.2f}{distance:>8.4f}{min(to_reference, 99):>13.1f}"
            f"{np.mean(encode_s) * 1e3:>11.0f}{np.mean(decode_s) * 1e3:>11.0f}")


if __name__ == "__main__":
  main()
