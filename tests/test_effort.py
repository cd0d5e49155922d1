"""Encoder effort quantizes as the coder does: at any rate, the search's bits are the file's.

A gain-unit codec applies learned per-channel gain offsets even at rate 0, so every path that
measures bits (the effort search, the ladder's entropy-model check, calibration) must use
the gain of the rate the file is coded at (HiFiC.log_gain); these tests hold them to the
written file.
"""

import numpy as np
import pytest

from conftest import REPO, hific_here
from hific_tf import bitstream, images
from hific_tf.models import zoo

HELD_OUT = REPO / "tests" / "data" / "heldout"
PHOTOS = (HELD_OUT / "LadyBird.png", HELD_OUT / "Dune.png")  # Never trained on.


def _crop(path, height=256, width=320):
  image = images.load_rgb(path)
  top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
  return np.ascontiguousarray(image[top:top + height, left:left + width])


@pytest.fixture(scope="module")
def default_codec(cache_env, monkeypatch_module):
  for key, value in cache_env.items():
    monkeypatch_module.setenv(key, value)
  import hific_tf
  return hific_tf.load_codec(zoo.DEFAULT_CODEC)


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as patch:
    yield patch


def test_search_ladder_and_file_agree_on_bits_at_rate_0_and_another(default_codec):
  """On the default codec (a gain model whose offsets are not zero), the effort search's
  bits, the ladder's entropy-model bits and the written file's payload agree within 1%."""
  from hific_tf.evaluation import heldout
  from hific_tf.measure.lpips import LPIPS
  from hific_tf.models.hific import latent_search
  model = zoo.build_model(zoo.DEFAULT_CODEC)
  assert model.config.rate_points
  assert float(np.abs(model.rate_gains.offsets.numpy()).max()) > 0.05  # Learned, not zero.
  search = latent_search.LatentSearch(model, LPIPS(model.config.lpips_net))
  crop = _crop(PHOTOS[0])
  for rate in (0., 0.8):
    _, report = search.search(crop, 0, rate=rate)
    ladder_bytes, _ = heldout.EntropyModelCoder(model, rate=rate or None).code(crop)
    hific_file = default_codec.compress(crop, rate=rate)
    payload_bits = 8 * (len(hific_file.y_string) + len(hific_file.z_string))
    assert report["start_bits"] == pytest.approx(payload_bits, rel=0.01), rate
    assert 8 * ladder_bytes == pytest.approx(payload_bits, rel=0.01), rate


@pytest.mark.parametrize("rate", ["0", "1"])
def test_effort_2_writes_no_larger_files_with_lower_lpips(cache_env, tmp_path, rate):
  """`hific compress --effort 2 --rate R`: on two photos, files no larger than effort 0's and
  a lower LPIPS, decoded by the plain decoder."""
  from hific_tf.measure.lpips import LPIPS
  lpips = LPIPS("alex")
  for index, path in enumerate(PHOTOS):
    crop = _crop(path)
    source = tmp_path / f"photo{index}.png"
    source.write_bytes(images.encode_png(crop))
    sizes, scores = {}, {}
    for effort in ("0", "2"):
      coded = tmp_path / f"photo{index}_e{effort}.hific"
      decoded = tmp_path / f"photo{index}_e{effort}.png"
      hific_here("compress", "--effort", effort, "--rate", rate, source, coded, env=cache_env)
      hific_here("decompress", coded, decoded, env=cache_env)
      hific_file = bitstream.HificFile.from_bytes(coded.read_bytes())
      assert hific_file.rate == float(rate)
      sizes[effort] = coded.stat().st_size
      scores[effort] = float(lpips(images.load_rgb(decoded)[None] / 255.,
                                   crop[None] / 255.)[0])
    assert sizes["2"] <= sizes["0"], (path.name, rate, sizes)
    assert scores["2"] < scores["0"], (path.name, rate, scores)


def test_max_bytes_with_effort_never_exceeds_the_budget(cache_env, tmp_path):
  """`--max_bytes N --effort 2`: the rate search runs first on E's latents, then the latent
  search at the rate found, which never adds a byte; no file is over N."""
  for index, path in enumerate(PHOTOS):
    source = tmp_path / f"photo{index}.png"
    source.write_bytes(images.encode_png(_crop(path)))
    for budget in (1500, 2600):
      out = tmp_path / f"photo{index}_{budget}.hific"
      hific_here("compress", "--effort", "2", "--max_bytes", budget, source, out, env=cache_env)
      assert out.stat().st_size <= budget, (path.name, budget, out.stat().st_size)
