"""Files that releases wrote keep decoding: tests/data/compat holds a small file from each
bundled codec of each release (index.json: its codec, rate, format version, fingerprint and
the PSNR that release decoded it at). Each decodes with today's `hific decompress` and no
`--model`, at realism 0, to the right size and within 0.5 dB of that PSNR
(docs/COMPATIBILITY.md)."""

import json

import pytest

from conftest import REPO, hific_here
from hific_tf import bitstream, images
from hific_tf.measure import metrics

COMPAT = REPO / "tests" / "data" / "compat"
INDEX = json.loads((COMPAT / "index.json").read_text())
ORIGINAL = COMPAT / "LadyBird_crop.png"
PSNR_TOLERANCE_DB = 0.5


@pytest.mark.parametrize("name", sorted(INDEX))
def test_a_file_an_earlier_release_wrote_decodes(name, cache_env, tmp_path):
  entry = INDEX[name]
  path = COMPAT / name
  hific_file = bitstream.HificFile.from_bytes(path.read_bytes())
  assert hific_file.fingerprint.hex() == entry["fingerprint"]
  assert hific_file.rate == entry["rate"]
  out = tmp_path / "decoded.png"
  hific_here("decompress", "--realism", "0", path, out, env=cache_env)
  original, decoded = images.load_rgb(ORIGINAL), images.load_rgb(out)
  assert decoded.shape == original.shape
  assert metrics.psnr(original, decoded) >= entry["psnr"] - PSNR_TOLERANCE_DB, entry


REFUSED = json.loads((COMPAT / "refused.json").read_text())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_file_no_bundled_codec_reads_is_refused_with_the_release_that_does(name, cache_env,
                                                                             tmp_path):
  entry = REFUSED[name]
  assert bitstream.HificFile.from_bytes((COMPAT / name).read_bytes()).fingerprint.hex() == (
      entry["fingerprint"])
  out = tmp_path / "decoded.png"
  done = hific_here("decompress", COMPAT / name, out, env=cache_env, check=False)
  assert done.returncode != 0 and not out.exists()
  message = done.stderr.strip()
  assert len(message.splitlines()) == 1, message
  assert f"{entry['codec']} v{entry['version']}" in message
  assert f"hific_tf {entry['decoded_by']}" in message, message
