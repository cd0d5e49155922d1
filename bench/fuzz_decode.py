"""Fuzzes the .hific decoder: crashes, hangs, over-limit memory and size mismatches.

Exports the tiny-mselpips codec (random weights: the decoder's robustness does not depend on
training), compresses a few real photos of different sizes, then mutates those files (bit
flips, byte runs, header fields set to 0, 1, off by one and huge, truncation, extension,
swapped strings, random bytes), re-seals each CRC and decodes every case in long-lived worker
processes under a deadline and a memory cap (bench/fuzz.py). The four counts that
must be zero are printed last.

Usage: python bench/fuzz_decode.py [--cases 10000] [--deadline 30] [--memory_mb 4096]
"""

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import fuzz  # bench/fuzz.py, beside this script.


def seed_files(folder):
  """A SavedModel of the tiny config and valid .hific files of three photo crops."""
  import skimage.data

  from hific_tf import configs
  from hific_tf.models.hific.model import HiFiC
  from hific_tf.serving import codec
  model = HiFiC(configs.get_config("tiny-mselpips")).build_all()
  model_dir = pathlib.Path(folder) / "codec"
  codec.export(model, model_dir)
  loaded = codec.SavedModelCodec(model_dir)
  photo = skimage.data.astronaut()
  files = [loaded.compress(photo[:h, :w]).to_bytes() for h, w in ((64, 64), (37, 100),
                                                                 (200, 300))]
  return model_dir, files


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cases", type=int, default=10000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--deadline", type=float, default=30.)
  parser.add_argument("--memory_mb", type=float, default=4096.)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as folder:
    model_dir, seeds = seed_files(folder)
    start = time.perf_counter()
    report = fuzz.run(str(model_dir), seeds, args.cases, seed=args.seed, workers=args.workers,
                      deadline=args.deadline, memory_mb=args.memory_mb,
                      log=lambda line: print(line, flush=True))
  seconds = time.perf_counter() - start
  print(f"{args.cases} cases in {seconds:.0f} s ({args.cases / seconds:.1f}/s), "
        f"{args.workers} workers, deadline {args.deadline:.0f} s, cap {args.memory_mb:.0f} MB")
  print(f"{'mutation':<16}" + "".join(f"{o:>12}" for o in fuzz.OUTCOMES))
  for kind, counts in sorted(report["by_kind"].items()):
    print(f"{kind:<16}" + "".join(f"{counts[o]:>12}" for o in fuzz.OUTCOMES))
  for example in report["examples"]:
    print("example:", *example)
  counts = report["counts"]
  print(f"refused {counts['refused']}, decoded {counts['decoded']}, cut off at the decoder's "
        f"deadline {counts['cut_off']}")
  for name in ("crashes", "hangs", "over_limit", "mismatches"):
    print(f"{name}: {counts[name]}")


if __name__ == "__main__":
  main()
