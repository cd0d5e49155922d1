"""What range decoding in a killable worker costs per request (serving/isolation.py).

Decodes the same .hific file of a held-out photo with the bundled default codec, in-process
(range decoding in a thread under the deadline, as `hific decompress`) and isolated (range
decoding first in the worker process, as `hific serve`), alternating, and prints the median
time of each, the difference per request and the worker's resident memory.

Usage: python bench/isolation_cost.py [--image tests/data/heldout/coffee.png] [--repeats 10]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fuzz import _rss_mb as rss_mb  # bench/fuzz.py, beside this script.
from hific_tf import images as images_lib
from hific_tf import zoo
from hific_tf.serving import isolation, resolve


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image", default="tests/data/heldout/coffee.png")
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  codec = resolve.load_codec(zoo.DEFAULT_CODEC)
  image = images_lib.load_rgb(args.image)
  hific_file = codec.compress(image)
  preflight = isolation.IsolatedRangeDecoder(codec.directory, codec.max_pixels)
  times = {"in-process": [], "isolated": []}
  for _ in range(args.repeats + 1):  # The first round warms both paths up.
    for label in times:
      codec.preflight = preflight if label == "isolated" else None
      start = time.perf_counter()
      codec.decompress(hific_file)
      times[label].append(time.perf_counter() - start)
  medians = {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}
  height, width = image.shape[:2]
  print(f"{zoo.DEFAULT_CODEC}, {width}x{height}, median of {args.repeats} decodes:")
  for label, value in medians.items():
    print(f"  {label:<11} {value:8.1f} ms")
  extra = medians["isolated"] - medians["in-process"]
  print(f"  isolation costs {extra:+.1f} ms per request "
        f"({medians['isolated'] / medians['in-process']:.2f}x); the worker holds "
        f"{rss_mb(preflight.process.pid):.0f} MB")
  preflight.close()


if __name__ == "__main__":
  main()
