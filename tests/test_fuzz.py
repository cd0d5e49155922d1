"""A CI-sized run of the decoder fuzzer (bench/fuzz_decode.py runs the long one)."""

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import fuzz_decode  # pylint: disable=g-import-not-at-top,wrong-import-position
from hific_tf.serving import fuzz  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_hostile_files_never_crash_blow_memory_or_change_size(tmp_path):
  model_dir, seeds = fuzz_decode.seed_files(tmp_path)
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
