"""A CI-sized run of the decoder fuzzer (bench/fuzz.py runs the long one)."""

import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e  # Builds the bundled codec and runs worker processes.

sys.path.insert(0, str(REPO / "bench"))

import fuzz


def test_hostile_files_never_crash_blow_memory_or_change_size(tmp_path):
  model_dir, seeds = fuzz.seed_files(tmp_path)
  report = fuzz.run(str(model_dir), seeds, cases=160, seed=1, workers=1, deadline=30.,
                    memory_mb=3072, files_per_worker=80)
  counts = report["counts"]
  assert sum(counts.values()) == 160
  assert counts["crashes"] == 0, report["examples"]
  assert counts["over_limit"] == 0, report["examples"]
  assert counts["mismatches"] == 0, report["examples"]
  assert counts["hangs"] == 0, report["examples"]
  # Both paths were exercised: refusals (header checks, and tfc's check that the range decoder
  # consumed each string exactly, which catches most payload damage) and decodes.
  assert counts["refused"] > 60 and counts["decoded"] >= 1, counts


# In a fresh process, on the bundled default codec: short z (then y) strings until one makes
# tfc's range decoder spin (an escape symbol right as the string runs out; guard.py), under a
# 2 s deadline. That decode must stop at its deadline, and the codec then refuse to decode.
_FIND_SPINNING_FILE = r"""
import dataclasses, itertools, sys, time
import numpy as np
from hific_tf import runtime
from hific_tf.models import zoo
from hific_tf.serving import codec, guard, resolve
guard.BASE_SECONDS = 2.
# The SavedModel `hific decompress` will use here (built now, not in the timed CLI call).
runner = codec.SavedModelCodec(resolve.saved_model_path(
    zoo.DEFAULT_CODEC, generator_dtype=runtime.generator_dtype()))
good = runner.compress(np.full((64, 64, 3), 128, np.uint8))
rng = np.random.default_rng(0)
candidates = itertools.chain(
    ({"z_string": bytes([b])} for b in range(256)),
    ({"y_string": bytes([b])} for b in range(256)),
    ({"z_string": rng.integers(0, 256, 2 + i % 3, dtype=np.uint8).tobytes()}
     for i in range(1000)),
    # Which strings spin depends on the weights' tables: small-lo v3 needs both
    # strings short (found at candidate 1669).
    ({"z_string": rng.integers(0, 256, 1 + i % 8, dtype=np.uint8).tobytes(),
      "y_string": rng.integers(0, 256, 1 + i % 5, dtype=np.uint8).tobytes()}
     for i in range(4000)))
for tried, change in enumerate(candidates):
  crafted = dataclasses.replace(good, **change)
  start = time.monotonic()
  try:
    runner.decompress(crafted)
  except guard.DecodeDeadlineError:
    elapsed = time.monotonic() - start
    try:
      runner.decompress(good)
      print("not poisoned")
    except guard.DecoderPoisonedError:
      open(sys.argv[1], "wb").write(crafted.to_bytes())
      print(f"spins {tried} {elapsed:.1f}")
    sys.exit(0)
  except guard.bitstream.FormatError:
    pass
print("none")
"""


@pytest.fixture(scope="module")
def spinning_file(tmp_path_factory):
  """(path of a crafted file that spins tfc's range decoder, the finder's verdict)."""
  import subprocess
  crafted = tmp_path_factory.mktemp("spin") / "spins.hific"
  done = subprocess.run([sys.executable, "-c", _FIND_SPINNING_FILE, str(crafted)],
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-2000:]
  return crafted, done.stdout.split()


def test_a_spinning_range_decode_is_cut_off_at_its_deadline(spinning_file, tmp_path):
  from conftest import run_hific
  crafted, verdict = spinning_file
  assert verdict[0] == "spins", verdict
  assert 2. <= float(verdict[2]) < 4.
  assert len(crafted.read_bytes()) < 100
  # Through the CLI, with the default deadline and the codec found from the header: one
  # line, exit 1, nothing written, and the process ends although a kernel still spins.
  start = time.monotonic()
  done = run_hific("decompress", crafted, tmp_path / "out.png", check=False, timeout=120)
  assert done.returncode == 1 and not (tmp_path / "out.png").exists()
  assert done.stderr.strip().count("\n") == 0
  assert "range decoding did not finish within 10 s" in done.stderr
  assert time.monotonic() - start < 60


def test_a_server_loses_one_request_to_a_spinning_file_not_its_health(spinning_file):
  # `hific serve` range-decodes in a worker process first (serving/isolation.py): the
  # spinning file costs that worker, which is killed and replaced; the server keeps decoding.
  import numpy as np

  from hific_tf import bitstream
  from hific_tf.models import zoo
  from hific_tf.serving import guard, resolve, server
  crafted, verdict = spinning_file
  assert verdict[0] == "spins", verdict
  codec = resolve.load_codec(zoo.DEFAULT_CODEC)
  service = server.CodecService(codec, isolate=True)
  good = codec.compress(np.full((64, 96, 3), 90, np.uint8)).to_bytes()
  assert service.decompress(good)[:4] == b"\x89PNG"
  start = time.monotonic()
  with pytest.raises(guard.DecodeDeadlineError):
    service.decompress(crafted.read_bytes())
  assert time.monotonic() - start < guard.BASE_SECONDS + 5
  assert service.health()["status"] == "ok"
  assert service.health()["range_decoder_replacements"] == 1
  assert service.decompress(good)[:4] == b"\x89PNG"  # After the replacement worker loads.
  with pytest.raises(bitstream.FormatError):
    service.decompress(good[:-1] + bytes([good[-1] ^ 1]))  # CRC: refused before decoding.
  assert not codec.poisoned
  codec.preflight.close()
