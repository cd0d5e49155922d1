"""What the benchmarks share: the held-out photos, timing and memory.

Benchmarks run as scripts (`python bench/NAME.py`), so this module is imported as a sibling;
each benchmark prints its own figures, measured side by side in one run.
"""

import pathlib
import resource
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
# The nine photos the figures in README and docs/MODELS.md were first taken on; `make data`
# builds 42 more under data/photos/heldout.
HELD_OUT = REPO / "tests" / "data" / "heldout"


def photos(folder=HELD_OUT):
  """The uint8 photos of a folder, in name order."""
  from hific_tf import images
  return [images.load_rgb(path) for path in images.list_images(folder)]


def timed(function, repeats=1):
  """(result, seconds): the best of `repeats` calls after one warm-up call for this shape."""
  result = function()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    result = function()
    best = min(best, time.perf_counter() - start)
  return result, best


def best_seconds(function, repeats):
  """The best time of `repeats` calls after a warm-up call."""
  return timed(function, repeats)[1]


def peak_rss_mb():
  """This process's peak RSS in MB. VmHWM, not getrusage: Linux carries ru_maxrss across
  exec, so a child forked from a big process would report the parent's size."""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mb(directory):
  return sum(f.stat().st_size for f in pathlib.Path(directory).rglob("*") if f.is_file()) / 1e6
