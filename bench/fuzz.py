"""A fuzzer for the .hific decoder: mutated real files with re-sealed CRCs, run as a server would.

A CRC stops accidental damage, not a crafted file: anyone can recompute it. So every mutation
here re-seals the CRC and reaches the header checks, the shape logic and the range decoder.
Cases run in long-lived worker processes (hundreds of files each, as a server decodes many
files in one process), each under a deadline and a memory cap watched from outside. Counted:

  crashes      a worker died (signal or abort) on a case
  hangs        a case outlived the deadline (the worker is killed and replaced)
  over_limit   a worker's resident memory exceeded the cap during a case
  mismatches   a decode "succeeded" with an image of another size than the header declares

Everything else is fine: a one-line refusal (FormatError...), a decode to the declared size
(possibly garbage: a range decoder cannot tell a flipped bit from data; see docs/FORMAT.md),
or `cut_off`: the codec's own range-decoding deadline stopped a spinning decode (guard.py)
with one line, and the worker, whose codec then refuses to decode, is replaced as a server
process would be.

The seeds are the tiny-mselpips codec's own files (random weights: the decoder's robustness
does not depend on training) for three crops of a real photo. The four counts that must be
zero are printed last.

Usage: python bench/fuzz.py [--cases 10000] [--deadline 30] [--memory_mb 4096]
"""

import argparse
import dataclasses
import multiprocessing
import os
import pathlib
import queue
import struct
import tempfile
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from hific_tf import bitstream  # noqa: E402

OUTCOMES = ("refused", "decoded", "cut_off", "crashes", "hangs", "over_limit", "mismatches")


def _reseal(body):
  """`body` (a .hific file without its CRC) with a valid CRC32 appended."""
  return bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))


def _header_layout(data):
  """Offsets of the fixed header fields of a valid file."""
  name_length = data[5]
  fixed = 6 + name_length + bitstream.FINGERPRINT_BYTES
  return fixed, fixed + bitstream._FIXED.size


def mutate(data, rng):
  """One hostile variant of the valid .hific file `data`, and the kind of mutation."""
  body = bytearray(data[:-4])
  fixed, payload = _header_layout(data)
  kind = rng.choice(["bit_flips", "byte_run", "header_field", "truncate", "extend", "swap",
                     "random_payload", "short_string", "random_bytes"])
  if kind == "bit_flips":
    for _ in range(int(rng.integers(1, 9))):
      position = int(rng.integers(payload, len(body)))
      body[position] ^= 1 << int(rng.integers(0, 8))
  elif kind == "byte_run":
    start = int(rng.integers(payload, len(body)))
    length = int(rng.integers(1, 33))
    body[start:start + length] = bytes([int(rng.integers(0, 256))]) * length
  elif kind == "header_field":
    fields = list(bitstream._FIXED.unpack(bytes(body[fixed:payload])))
    index = int(rng.integers(0, len(fields)))
    limit = 2 ** 32 - 1 if index in (0, 1, 6, 7) else 2 ** 16 - 1
    fields[index] = int(rng.choice([0, 1, fields[index] - 1, fields[index] + 1,
                                    fields[index] * 2, limit, limit - 1]))
    fields[index] = min(max(fields[index], 0), limit)
    body[fixed:payload] = bitstream._FIXED.pack(*fields)
  elif kind == "truncate":
    body = body[:int(rng.integers(payload, len(body)))]
  elif kind == "extend":
    body += rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
  elif kind == "swap":
    fields = bitstream._FIXED.unpack(bytes(body[fixed:payload]))
    y_length, z_length = fields[6], fields[7]
    y, z = body[payload:payload + y_length], body[payload + y_length:payload + y_length +
                                                  z_length]
    body[fixed:payload] = bitstream._FIXED.pack(*fields[:6], z_length, y_length)
    body[payload:] = z + y
  elif kind == "short_string":
    # A y or z string replaced by a few random bytes: the strings run out early, which is
    # what makes tfc's escape decoding spin (guard.py).
    fields = list(bitstream._FIXED.unpack(bytes(body[fixed:payload])))
    y = bytes(body[payload:payload + fields[6]])
    z = bytes(body[payload + fields[6]:payload + fields[6] + fields[7]])
    short = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    y, z = (short, z) if rng.random() < 0.5 else (y, short)
    fields[6], fields[7] = len(y), len(z)
    body[fixed:] = bitstream._FIXED.pack(*fields) + y + z
  elif kind == "random_payload":
    body[payload:] = rng.integers(0, 256, len(body) - payload, dtype=np.uint8).tobytes()
  else:
    body = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
  return _reseal(body), kind


def _worker(model_dir, max_pixels, tasks, results):
  """Decodes cases until told to stop; reports (case, outcome, detail) for each."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from hific_tf.errors import HificError
  from hific_tf.serving import codec, guard
  model = codec.SavedModelCodec(model_dir, max_pixels=max_pixels)
  results.put(("ready", os.getpid(), ""))
  while True:
    item = tasks.get()
    if item is None:
      return
    case, data = item
    results.put(("start", case, ""))
    try:
      hific_file = bitstream.HificFile.from_bytes(data)
      image = model.decompress(hific_file)
      if image.shape[:2] != (hific_file.height, hific_file.width):
        results.put(("done", case, f"mismatches:{image.shape[:2]} vs header "
                                   f"{hific_file.height}x{hific_file.width}"))
      else:
        results.put(("done", case, "decoded"))
    except guard.DecodeDeadlineError as error:
      results.put(("done", case, f"cut_off:{error}"))
      return  # This process now holds a spinning kernel: the harness starts a fresh one.
    except HificError as error:
      results.put(("done", case, f"refused:{error}"))
    except Exception as error:
      # TF errors (say, a range decoder refusing a string) are refusals too: one line, no
      # crash. They are reported separately so that a new kind shows up in the summary.
      results.put(("done", case, f"refused:{error.__class__.__name__}"))


def _rss_mb(pid):
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return 0.


@dataclasses.dataclass
class _Worker:
  process: multiprocessing.Process
  tasks: object
  results: object
  done: int = 0


def run(model_dir, seeds, cases, seed=0, workers=2, deadline=30., memory_mb=4096,
        max_pixels=bitstream.DEFAULT_MAX_PIXELS, files_per_worker=400, log=None):
  """Runs `cases` mutations of the valid files `seeds`; returns counts and examples."""
  context = multiprocessing.get_context("spawn")
  rng = np.random.default_rng(seed)
  counts = dict.fromkeys(OUTCOMES, 0)
  kinds = {}
  examples = []

  def start_worker():
    tasks, results = context.Queue(), context.Queue()
    process = context.Process(target=_worker, args=(model_dir, max_pixels, tasks, results),
                              daemon=True)
    process.start()
    message = results.get(timeout=300)
    assert message[0] == "ready", message
    return _Worker(process, tasks, results)

  pool = [start_worker() for _ in range(workers)]
  pending = list(range(cases))
  data_of = {}
  busy = {}  # worker index -> (case, started)
  while pending or busy:
    for index, worker in enumerate(pool):
      if index not in busy and pending:
        if worker.done >= files_per_worker:  # Fresh process now and then, as servers do.
          worker.tasks.put(None)
          worker.process.join(10)
          pool[index] = worker = start_worker()
        case = pending.pop(0)
        data, kind = mutate(seeds[case % len(seeds)], rng)
        data_of[case] = (data, kind)
        worker.tasks.put((case, data))
        busy[index] = (case, time.monotonic())
    time.sleep(0.002)
    for index in list(busy):
      worker, (case, started) = pool[index], busy[index]
      outcome = None
      try:
        while True:
          tag, got_case, detail = worker.results.get_nowait()
          if tag == "done" and got_case == case:
            outcome = detail
            break
      except queue.Empty:
        pass
      if outcome is None:
        if not worker.process.is_alive():
          outcome = f"crashes:exit code {worker.process.exitcode}"
        elif _rss_mb(worker.process.pid) > memory_mb:
          outcome = "over_limit:resident memory above the cap"
        elif time.monotonic() - started > deadline:
          outcome = f"hangs:over {deadline:.0f} s"
        if outcome is not None:
          worker.process.kill()
          worker.process.join(10)
          pool[index] = start_worker()
      if outcome is not None:
        del busy[index]
        pool[index].done += 1
        name, _, detail = outcome.partition(":")
        if name == "cut_off":  # The worker has exited; replace it.
          pool[index].process.join(30)
          pool[index] = start_worker()
        counts[name] += 1
        kind = data_of.pop(case)[1]
        kinds.setdefault(kind, dict.fromkeys(OUTCOMES, 0))[name] += 1
        if name not in ("refused", "decoded") and len(examples) < 10:
          examples.append((case, kind, name, detail))
        if log and (counts["refused"] + counts["decoded"]) % 100 == 0:
          log(f"{sum(counts.values())}/{cases} cases")
  for worker in pool:
    worker.tasks.put(None)
    worker.process.join(10)
    if worker.process.is_alive():
      worker.process.kill()
  return {"counts": counts, "by_kind": kinds, "examples": examples}


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
    report = run(str(model_dir), seeds, args.cases, seed=args.seed, workers=args.workers,
                      deadline=args.deadline, memory_mb=args.memory_mb,
                      log=lambda line: print(line, flush=True))
  seconds = time.perf_counter() - start
  print(f"{args.cases} cases in {seconds:.0f} s ({args.cases / seconds:.1f}/s), "
        f"{args.workers} workers, deadline {args.deadline:.0f} s, cap {args.memory_mb:.0f} MB")
  print(f"{'mutation':<16}" + "".join(f"{o:>12}" for o in OUTCOMES))
  for kind, counts in sorted(report["by_kind"].items()):
    print(f"{kind:<16}" + "".join(f"{counts[o]:>12}" for o in OUTCOMES))
  for example in report["examples"]:
    print("example:", *example)
  counts = report["counts"]
  print(f"refused {counts['refused']}, decoded {counts['decoded']}, cut off at the decoder's "
        f"deadline {counts['cut_off']}")
  for name in ("crashes", "hangs", "over_limit", "mismatches"):
    print(f"{name}: {counts[name]}")


if __name__ == "__main__":
  main()
