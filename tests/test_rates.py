"""Coding at any rate: gain units, the rate in the container, and sizes searched per photo."""

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, hific_here, random_image, run_hific
import hific_tf
from hific_tf import bitstream, images
from hific_tf.models import sources, zoo
from hific_tf.models.hific import gains
from hific_tf.models.hific.model import HiFiC

PHOTO = REPO / "tests" / "data" / "heldout" / "LadyBird.png"


def test_the_container_keeps_the_rate_and_files_at_rate_0_stay_version_1():
  kwargs = dict(config_name="small-lo", fingerprint=b"\x01" * 8, height=70, width=90,
                y_shape=(8, 8), z_shape=(2, 2), y_string=b"yy", z_string=b"z")
  own = bitstream.HificFile(**kwargs)
  data = own.to_bytes()
  assert data[4] == 1 and own.overhead_bytes == 42 + len("small-lo")  # As before rates.
  assert bitstream.HificFile.from_bytes(data) == own
  shifted = bitstream.HificFile(**kwargs, rate=0.37)
  data = shifted.to_bytes()
  assert data[4] == 2 and shifted.overhead_bytes == 46 + len("small-lo")
  read = bitstream.HificFile.from_bytes(data)
  assert read.rate == float(np.float32(0.37)) and read.y_string == b"yy"
  read.validate(pad_multiple=64, latent_downsampling=16)
  # A crafted header cannot drive the gains anywhere: the rate must be finite and bounded.
  for hostile in (math.nan, math.inf, -9.):
    crafted = bitstream.HificFile.from_bytes(bitstream.HificFile(**kwargs, rate=hostile)
                                             .to_bytes())
    with pytest.raises(bitstream.FormatError, match="rate"):
      crafted.validate(pad_multiple=64, latent_downsampling=16)
  future = bytearray(own.to_bytes())
  future[4] = 3
  with pytest.raises(bitstream.FormatError, match="version 3"):
    bitstream.HificFile.from_bytes(bytes(future))


def test_gains_interpolate_log_linearly_between_points_and_keep_the_end_points_beyond():
  points = ((-1., 0.1), (0., 0.2), (1.5, 0.4))
  layer = gains.RateGains(points, 5)
  offsets = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  layer.offsets.assign(offsets)
  rates = np.array([p[0] for p in points], np.float64)
  for rate in (-2., -1., -0.25, 0., 0.6, 1.5, 3.):
    clipped = np.clip(rate, rates[0], rates[-1])
    expected = np.array([np.interp(clipped, rates, offsets[:, c].astype(np.float64))
                         for c in range(5)]) + rate * np.log(2.)
    np.testing.assert_allclose(layer(tf.constant(rate)).numpy(), expected, atol=1e-6)
  # A single-rate model: 2^rate in every channel and nothing to learn.
  plain = gains.RateGains((), 4)
  assert not plain.trainable_variables
  np.testing.assert_allclose(plain(tf.constant(0.5)).numpy(), [0.5 * np.log(2.)] * 4,
                             rtol=1e-6)


def test_the_rate_moves_the_size_and_rate_0_is_the_model_as_trained(stage1_dir):
  model = sources.build_model(stage1_dir)
  model.hyperprior.build_coders()
  image = tf.constant(random_image(64, 96, seed=3))
  sizes = {}
  for rate in (-1., 0., 1.):
    out = model.compress(image, tf.constant(rate))
    sizes[rate] = len(out["y_string"].numpy())
    y_hat = model.decompress_y(out["y_string"], out["z_string"], out["y_shape"],
                               out["z_shape"], tf.constant(rate))
    # The decoder's y_hat is the encoder's: the gained mean and scale agree on both sides.
    _, expected = model.hyperprior.compress(model.analyze(image),
                                            model.rate_gains(tf.constant(rate)))
    np.testing.assert_array_equal(y_hat.numpy(), expected.numpy())
  assert sizes[-1.] < sizes[0.] < sizes[1.]
  # Rate 0 is the hyperprior without gains, bit for bit.
  compressed, _ = model.hyperprior.compress(model.analyze(image))
  assert compressed.y_strings[0].numpy() == model.compress(image, tf.constant(0.))[
      "y_string"].numpy()


@pytest.fixture(scope="module")
def gain_codec_folder(stage1_dir, tmp_path_factory):
  """The trained tiny run grown into a gain-unit model with three points, gains set apart."""
  trained = sources.build_model(stage1_dir)
  config = trained.config.replace(rate_points=((-1., 0.3), (0., 0.5), (1., 0.8)))
  model = HiFiC(config).build_all()
  for (_, source), (_, target) in zip(trained.codec_variables(), model.codec_variables()):
    target.assign(source)
  model.rate_gains.offsets.assign(
      np.random.default_rng(1).uniform(-.4, .4, size=(3, config.latent_channels)))
  folder = tmp_path_factory.mktemp("gain-codec") / "codec"
  zoo.write_codec_dir(model, folder, {"name": "gains", "target_bpp": 0.5})
  return folder


def test_a_file_at_an_interpolated_rate_decodes_from_its_header_in_a_fresh_process(
    gain_codec_folder, cache_env, tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", cache_env["XDG_CACHE_HOME"])
  codec = hific_tf.load_codec(gain_codec_folder)
  image = random_image(80, 112, seed=5)
  files = {rate: codec.compress(image, rate=rate) for rate in (0., 0.4, 1.)}
  assert files[0.].version == 1 and files[0.4].version == 2
  sizes = {rate: len(f.to_bytes()) for rate, f in files.items()}
  assert sizes[0.] < sizes[0.4] < sizes[1.]
  path = tmp_path / "between.hific"
  path.write_bytes(files[0.4].to_bytes())
  run_hific("decompress", "--model", gain_codec_folder, path, tmp_path / "between.png",
            env=cache_env)
  decoded = images.load_rgb(tmp_path / "between.png")
  np.testing.assert_array_equal(decoded, codec.decompress(files[0.4]))
  # The header's rate is what decodes it: the same strings read at rate 0 are other pixels.
  misread = bitstream.HificFile(**dict(files[0.4].__dict__, rate=0.))
  try:
    other = codec.decompress(misread)
  except bitstream.FormatError:
    other = None  # Or the range decoder notices; either way not the image.
  assert other is None or not np.array_equal(other, decoded)


def test_target_bpp_and_max_bytes_land_each_photo_on_its_size(cache_env, tmp_path):
  image = images.load_rgb(PHOTO)
  pixels = image.shape[0] * image.shape[1]
  for target in (0.12, 0.2, 0.32):
    out = tmp_path / f"t{target}.hific"
    hific_here("compress", "--target_bpp", target, PHOTO, out, env=cache_env)
    bpp = 8 * out.stat().st_size / pixels
    assert abs(bpp - target) <= 0.02 * target, (target, bpp)
  for budget in (4000, 9000):
    out = tmp_path / f"b{budget}.hific"
    hific_here("compress", "--max_bytes", budget, PHOTO, out, env=cache_env)
    assert 0.97 * budget <= out.stat().st_size <= budget, (budget, out.stat().st_size)
  hific_here("decompress", tmp_path / "b4000.hific", tmp_path / "b4000.png", env=cache_env)
  assert images.load_rgb(tmp_path / "b4000.png").shape == image.shape
  # A budget below the smallest rate's file: one line, exit 1, nothing written.
  done = hific_here("compress", "--max_bytes", 120, PHOTO, tmp_path / "tiny.hific",
                    env=cache_env, check=False)
  assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
  assert "smallest file" in done.stderr and not (tmp_path / "tiny.hific").exists()
  done = hific_here("compress", "--max_bytes", 4000, "--rate", 1, PHOTO,
                    tmp_path / "both.hific", env=cache_env, check=False)
  assert done.returncode == 2 and not (tmp_path / "both.hific").exists()


def test_the_codec_saved_model_signatures_take_the_rate(saved_model):
  """In a process with TensorFlow and tfc only, as TF Serving would call it."""
  script = textwrap.dedent(f"""
      import json, numpy as np, tensorflow as tf, tensorflow_compression
      module = tf.saved_model.load({str(saved_model)!r})
      compress, decompress = (module.signatures[n] for n in ("compress", "decompress"))
      image = tf.constant(np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8))
      sizes = []
      for rate in (-0.5, 0.5):
        out = compress(image=image, rate=tf.constant(rate))
        sizes.append(len(out["y_string"].numpy()))
        back = decompress(y_string=out["y_string"], z_string=out["z_string"],
                          image_shape=out["image_shape"], y_shape=out["y_shape"],
                          z_shape=out["z_shape"], rate=tf.constant(rate))["image"]
        assert back.shape == (48, 80, 3) and back.dtype == tf.uint8
      print(json.dumps(sizes))
      """)
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        check=True, timeout=600)
  low, high = json.loads(done.stdout.strip().splitlines()[-1])
  assert low < high


def test_evaluate_draws_one_codecs_curve_with_classical_codecs_at_each_size(cache_env, tmp_path):
  folder = tmp_path / "photos"
  folder.mkdir()
  (folder / PHOTO.name).write_bytes(PHOTO.read_bytes())
  out = tmp_path / "eval"
  hific_here("evaluate", "--model", zoo.DEFAULT_CODEC, "--images", folder, "--out", out,
             "--codecs", "jpeg", "--bpp", "0.3", "--hific_bpp", "0.15,0.25", "--match",
             "--no_fid", env=cache_env)
  summary = json.loads((out / "summary.json").read_text())
  for target in (0.15, 0.25):
    (hific,) = [entry for key, entry in summary.items()
                if key.startswith("hific@") and key.endswith(f" {target:g}bpp")]
    assert abs(hific["bpp"] - target) <= 0.02 * target
    jpeg = summary[f"jpeg@match {target:g}bpp"]
    assert jpeg["bpp"] <= hific["bpp"] * 1.05 or not jpeg["in_range"]
  assert (out / "bpp_vs_lpips.png").is_file()


def test_training_grows_a_gain_model_from_a_single_rate_codec_and_back(stage1_dir,
                                                                       gain_codec_folder,
                                                                       tmp_path):
  """`--init_from`: gains start at 2^rate from a single-rate codec, and a single-rate model
  starts from a gain-unit codec without its gains."""
  single = sources.build_model(stage1_dir)
  folder = tmp_path / "single"
  zoo.write_codec_dir(single, folder, {"name": "single", "target_bpp": 0.5})
  grown = HiFiC(single.config.replace(rate_points=((0., .5), (1., .8)))).build_all()
  sources.restore(grown, folder)
  assert not np.any(grown.rate_gains.offsets.numpy())
  np.testing.assert_array_equal(grown.encoder.variables[0].numpy(),
                                single.encoder.variables[0].numpy())
  shrunk = HiFiC(single.config).build_all()
  sources.restore(shrunk, gain_codec_folder)
  gain_model = sources.build_model(gain_codec_folder)
  np.testing.assert_array_equal(shrunk.generator.variables[0].numpy(),
                                gain_model.generator.variables[0].numpy())


def test_the_stock_op_client_searches_sizes_with_whole_compresses(serving_model):
  from hific_tf.serving import rate_control
  from hific_tf.serving.split import SplitCodec
  client = SplitCodec(serving_model)
  image = random_image(64, 96, seed=7)
  budget = int(0.9 * len(client.compress(image).to_bytes()))
  fitted = rate_control.compress_to_bytes(client, image, budget)
  assert 0.97 * budget <= len(fitted.to_bytes()) <= budget and fitted.rate < 0
