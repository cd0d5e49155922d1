"""Soak test of `hific serve`: concurrent clients, good and hostile requests, the server's memory.

Starts a real `hific serve` process, then K client threads send for N seconds a mix of

  good     /compress and /decompress of photo crops from 48x48 to 1024x768, /compare of small
           ones; every answer is checked (compress: the same bytes as this process' codec
           writes; decompress: the same pixels as it decodes)
  hostile  mutated .hific files with re-sealed CRCs (bench/fuzz.py), random bytes, truncated
           PNGs, PNG headers that declare 40000x40000 pixels, and, with --spinning, a crafted
           file that spins tfc's range decoder, sent in a loop by one more client

and samples the resident memory of the server and its range-decoding worker every half second.
Answers by design: 200 for good requests, 4xx for hostile ones, 429/503 when the server sheds
load. Anything else (another 5xx, a dropped connection, a wrong answer) is a failure.

  python bench/serve_soak.py --seconds 600 --clients 6            # the documented run
  python bench/serve_soak.py --seconds 30 --clients 3 --json -    # quick look

Prints the figures (requests by kind and status, RSS after warm-up, at the end and at peak,
growth, the CPU the server's processes use in the 5 s after the load stops: a range decoder
left spinning would show there) and exits 1 on any failure.
"""

import argparse
import collections
import io
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
from PIL import Image

import fuzz  # bench/fuzz.py, beside this script: its mutations and RSS reader

SIZES = ((48, 48), (200, 300), (512, 384), (768, 1024), (333, 517), (1536, 2048))


def _free_port():
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def _bomb_png(width=40000, height=40000):
  """A valid PNG signature and IHDR declaring a huge image, with a few bytes of data."""
  def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body +
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
          chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _post(url, data, timeout=600):
  request = urllib.request.Request(url, data=data, method="POST")
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as error:
    return error.code, error.read()


def _rss_tree_mb(pid):
  """RSS of a process and its children (the range-decoding worker), in MB."""
  total = fuzz._rss_mb(pid)  # noqa: SLF001
  try:
    children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
  except OSError:
    children = []
  return total, sum(fuzz._rss_mb(int(child)) for child in children)  # noqa: SLF001


def _requests(codec, rng, spinning):
  """The request catalogue: (kind, path, body, check) with expected answers precomputed."""
  import skimage.data
  photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
            skimage.data.rocket()]
  good, hostile = [], []
  for index, (height, width) in enumerate(SIZES):
    photo = photos[index % len(photos)]
    reps = (-(-height // photo.shape[0]), -(-width // photo.shape[1]), 1)
    image = np.ascontiguousarray(np.tile(photo, reps)[:height, :width, :3])
    hific_file = codec.compress(image)
    data = hific_file.to_bytes()
    decoded = codec.decompress(hific_file)
    good.append(("compress", "/compress", _png(image),
                 lambda body, data=data: body == data))
    good.append(("decompress", "/decompress", data,
                 lambda body, decoded=decoded: np.array_equal(
                     np.asarray(Image.open(io.BytesIO(body))), decoded)))
    if height * width <= 200 * 300:
      good.append(("compare", "/compare", _png(image),
                   lambda body: len(json.loads(body)["results"]) == 3))
    # A flipped payload bit may still decode (to other pixels): a PNG of the declared size.
    for _ in range(3):
      hostile.append(("corrupt_hific", "/decompress", fuzz.mutate(data, rng)[0],
                      lambda body: Image.open(io.BytesIO(body)).format == "PNG"))
    png = _png(image)
    hostile.append(("truncated_png", "/compress", png[:len(png) // 2], None))
  hostile.append(("noise", "/decompress", rng.bytes(5000), None))
  hostile.append(("noise", "/compress", rng.bytes(5000), None))
  hostile.append(("png_bomb", "/compress", _bomb_png(), None))
  hostile.append(("png_bomb", "/compare", _bomb_png(), None))
  return good, hostile


def _cpu_seconds(pid):
  """User + system CPU seconds of a process and its children (from /proc)."""
  total = 0.
  try:
    children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
  except OSError:
    children = []
  for process in [pid, *map(int, children)]:
    try:
      fields = pathlib.Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
      pass
  return total


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="small-lo", help="What `hific serve --model` takes.")
  parser.add_argument("--seconds", type=float, default=60.)
  parser.add_argument("--clients", type=int, default=6)
  parser.add_argument("--hostile_share", type=float, default=0.3,
                      help="Fraction of requests that are hostile.")
  parser.add_argument("--warmup_share", type=float, default=0.15,
                      help="Fraction of the run before the 'after warm-up' RSS is read.")
  parser.add_argument("--spinning", help="A .hific file that spins tfc's range decoder.")
  parser.add_argument("--serve_args", default="", help="Extra `hific serve` flags.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="Write the figures as JSON here ('-': stdout).")
  args = parser.parse_args()

  from hific_tf import load_codec
  codec = load_codec(args.model)
  rng = np.random.default_rng(args.seed)
  good, hostile = _requests(codec, rng, args.spinning)
  del codec

  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen(
      [sys.executable, "-m", "hific_tf.cli", "serve", "--model", args.model, "--port",
       str(port), *args.serve_args.split()], stdin=subprocess.DEVNULL,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while True:
    try:
      with urllib.request.urlopen(url + "/health", timeout=5):
        break
    except (urllib.error.URLError, ConnectionError):
      if server.poll() is not None or time.time() > deadline:
        server.kill()
        sys.exit(f"serve_soak: the server did not start: {server.stderr.read()[-500:]}")
      time.sleep(1)

  counts = collections.Counter()
  failures = []
  samples = []
  lock = threading.Lock()
  stop = threading.Event()
  start = time.monotonic()

  health_checks = collections.Counter()

  def sample():
    while not stop.is_set():
      samples.append((time.monotonic() - start, *_rss_tree_mb(server.pid)))
      if len(samples) % 4 == 0:  # /health every 2 s, throughout.
        try:
          with urllib.request.urlopen(url + "/health", timeout=10) as response:
            health_checks[json.loads(response.read())["status"]] += 1
        except (OSError, ValueError) as error:
          health_checks[f"failed ({error.__class__.__name__})"] += 1
      stop.wait(0.5)

  spinning = (("spinning_hific", "/decompress", pathlib.Path(args.spinning).read_bytes(),
               None),) if args.spinning else ()

  def client(seed, only=None):
    local = np.random.default_rng(seed)
    while time.monotonic() - start < args.seconds:
      is_hostile = only is not None or local.random() < args.hostile_share
      pool = only or (hostile if is_hostile else good)
      kind, path, body, check = pool[int(local.integers(len(pool)))]
      try:
        status, answer = _post(url + path, body)
      except (OSError, ConnectionError) as error:
        with lock:
          failures.append(f"{kind}: connection failed ({error.__class__.__name__})")
        continue
      shed = status in (429, 503)
      ok = (shed or (status == 200 and check(answer)) if not is_hostile
            else shed or 400 <= status < 500 or (status == 200 and check and check(answer)))
      with lock:
        counts[(kind, status)] += 1
        if not ok:
          failures.append(f"{kind} -> {status}: {answer[:120]!r}")

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  threads = [threading.Thread(target=client, args=(args.seed + 1 + i,))
             for i in range(args.clients)]
  if spinning:
    threads.append(threading.Thread(target=client, args=(args.seed, spinning)))
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  with urllib.request.urlopen(url + "/health", timeout=30) as response:
    health = json.loads(response.read())
  before = _cpu_seconds(server.pid)
  time.sleep(5)
  idle_cpu = (_cpu_seconds(server.pid) - before) / 5
  stop.set()
  sampler.join()
  server.terminate()
  try:
    server.wait(timeout=30)
  except subprocess.TimeoutExpired:
    server.kill()

  served = np.array([s[1] for s in samples])
  worker = np.array([s[2] for s in samples])
  times = np.array([s[0] for s in samples])
  warm = served[times >= args.warmup_share * args.seconds]
  figures = {
      "seconds": args.seconds, "clients": args.clients, "model": args.model,
      "serve_args": args.serve_args,
      "requests": sum(counts.values()),
      "by_kind_and_status": {f"{kind} {status}": n for (kind, status), n in
                             sorted(counts.items())},
      "failures": len(failures),
      "rss_after_warmup_mb": round(float(warm[0]), 1) if len(warm) else None,
      "rss_end_mb": round(float(served[-1]), 1),
      "rss_peak_mb": round(float(served.max()), 1),
      "growth_after_warmup": round(float(served[-1] / warm[0] - 1), 4) if len(warm) else None,
      "worker_rss_peak_mb": round(float(worker.max()), 1),
      "health_at_end": health,
      "idle_cpu_cores_after": round(idle_cpu, 3),
      "health_during": dict(health_checks),
  }
  print(f"serve_soak: {figures['requests']} requests from {args.clients} clients in "
        f"{args.seconds:.0f} s, {len(failures)} failures")
  for key, value in figures["by_kind_and_status"].items():
    print(f"  {key:<22}{value:>6}")
  print(f"  server RSS: {figures['rss_after_warmup_mb']} MB after warm-up, "
        f"{figures['rss_end_mb']} MB at the end ({figures['growth_after_warmup']:+.1%}), "
        f"peak {figures['rss_peak_mb']} MB; range-decoding worker peak "
        f"{figures['worker_rss_peak_mb']} MB")
  print(f"  /health during the run: {dict(health_checks)}; at the end: {health}; CPU in "
        f"the 5 s after the load: {idle_cpu:.2f} cores")
  for failure in failures[:10]:
    print(f"  FAILURE {failure}")
  if args.json:
    text = json.dumps(figures, indent=2)
    if args.json == "-":
      print(text)
    else:
      pathlib.Path(args.json).write_text(text)
  unhealthy = set(health_checks) - {"ok"}
  return 1 if failures or unhealthy or health.get("status") != "ok" or idle_cpu > 0.5 else 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.exit(main())
