"""The TFLite codec against the SavedModel codec: quality, agreement, speed and size.

A bundled codec is exported as its SavedModel and as TFLite folders with float32, float16
and int8 weights (`hific export --tflite --tflite_weights ...`). Each codec compresses the
held-out photos (tests/data/heldout) and decodes its own files; the TFLite codecs also decode
the SavedModel's files, and the SavedModel decodes theirs, which shows that the bitstream is
the same format everywhere. Figures are means over the photos, measured side by side in one
run; times are each photo's second encode and decode.

Columns: bpp, PSNR and LPIPS of each codec on its own files; "same bytes" is the share of
photos whose file equals the SavedModel's byte for byte; "PSNR to SM" compares each codec's
decode of the SavedModel's file with the SavedModel's own decode; "SM reads" says whether
the SavedModel decodes this codec's files to within 40 dB of this codec's own decode.

Usage: python bench/tflite_codec.py [--model small-lo]
"""

import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import heldout_photos
import numpy as np


def psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255 ** 2 / max(mse, 1e-10))


def folder_mb(directory):
  return sum(f.stat().st_size for f in pathlib.Path(directory).rglob("*") if f.is_file()) / 1e6


def main():
  args, photos, lpips = heldout_photos.set_up(__doc__)
  from hific_tf import runtime, zoo
  from hific_tf.evaluation import metrics
  from hific_tf.serving import codec, tflite
  print(f"{args.model} on {len(photos)} held-out photos; kernels: {runtime.KERNELS}; "
        f"TFLite threads: {tflite.cpu_threads()}")
  print(f"{'codec':<16}{'MB':>7}{'bpp':>8}{'PSNR':>7}{'LPIPS':>8}{'same bytes':>11}"
        f"{'PSNR to SM':>11}{'SM reads':>9}{'enc ms':>8}{'dec ms':>8}")
  with tempfile.TemporaryDirectory() as tmp:
    model = zoo.build_model(args.model)
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
        runner.compress(photo)
        start = time.perf_counter()
        hific_file = runner.compress(photo)
        encode = time.perf_counter() - start
        runner.decompress(hific_file)
        start = time.perf_counter()
        decoded = runner.decompress(hific_file)
        decode = time.perf_counter() - start
        measured = metrics.measure(photo, decoded, len(hific_file.to_bytes()), lpips,
                                   with_ms_ssim=False)
        to_reference = psnr(runner.decompress(reference_file), reference_decode)
        reads = psnr(reference.decompress(hific_file), decoded) > 40
        rows.append((measured["bpp"], measured["psnr"], measured["lpips"],
                     hific_file.to_bytes() == reference_file.to_bytes(),
                     min(to_reference, 99.), reads, encode, decode))
      bpp, quality, distance, same, to_sm, reads, encode, decode = np.mean(rows, axis=0)
      print(f"{label:<16}{folder_mb(folder):>7.1f}{bpp:>8.4f}{quality:>7.2f}{distance:>8.4f}"
            f"{same * 100:>10.0f}%{to_sm:>10.1f}dB{reads * 100:>8.0f}%"
            f"{encode * 1e3:>8.0f}{decode * 1e3:>8.0f}")


if __name__ == "__main__":
  main()
