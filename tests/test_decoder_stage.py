"""The decoder-only GAN stage and the realism knob.

The stage trains G (and its realism knob) against D on latents cached once per crop, with E,
the hyperprior and the gains frozen: files the starting codec wrote decode with the new
decoder, at any realism R, through every decoder interface.
"""

import json
import os

import numpy as np
import pytest

from conftest import REPO, hific_here, run_hific
from hific_tf import images

HELD_OUT = REPO / "tests" / "data" / "heldout"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, stage1_dir, photo_dir):
  """The tiny model's decoder stage, 6 steps from the stage-1 run."""
  folder = tmp_path_factory.mktemp("decoder") / "run"
  run_hific("train", "--config", "tiny-decoder-gan", "--init_from", stage1_dir,
            "--train_glob", f"{photo_dir}/*.png", "--steps", 6, "--checkpoint_every", 3,
            "--batch_size", 2, "--model_dir", folder)
  return folder


def _models(stage1_dir, decoder_run):
  from hific_tf.models import sources
  return sources.build_model(stage1_dir), sources.build_model(decoder_run)


def test_the_stage_keeps_the_bitstream_and_trains_the_decoder(stage1_dir, decoder_run):
  """E, the hyperprior (and so every file's bits) are the source's; G and the knob moved;
  the run's config reads the source's files by its fingerprint; the latent cache is there."""
  from hific_tf.models.hific import stored_weights
  source, trained = _models(stage1_dir, decoder_run)
  for part in ("encoder", "hyperprior"):
    for (key, a), (_, b) in zip(
        (kv for kv in source.codec_variables() if kv[0].startswith(part + "/")),
        (kv for kv in trained.codec_variables() if kv[0].startswith(part + "/"))):
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)
  moved = [float(np.abs(a.numpy() - b.numpy()).max()) for a, b in
           zip(source.generator.trainable_variables, trained.generator.trainable_variables)]
  assert max(moved) > 0
  # Six Adam steps at 1e-3 move a weight by about 0.006 at most; the saved EMA starts at the
  # starting codec's G, not at the random initialisation it was built with.
  assert max(moved) < 0.02, max(moved)
  assert any(np.abs(v.numpy()).max() > 0 for v in trained.realism.trainable_variables
             if "to_biases" in v.name)
  config = json.loads((decoder_run / "config.json").read_text())
  assert config["reads_fingerprints"] == [stored_weights.fingerprint(source).hex()]
  assert (stored_weights.bitstream_fingerprint(trained) ==
          stored_weights.bitstream_fingerprint(source))
  meta = np.load(decoder_run / "latent_cache.npz")
  assert meta["latents"].shape[1:] == (2, 8, 8, 32)  # Both flips of every 128² crop.


def test_the_decoders_quantization_is_the_coders(stage1_dir):
  """The stage's y_hat (cached y, the rate's gain, rounding in inference mode) is exactly what
  the range decoder gives back from a file at that rate."""
  import tensorflow as tf

  from hific_tf.models import sources
  model = sources.build_model(stage1_dir)
  model.hyperprior.build_coders()
  image = images.load_rgb(HELD_OUT / "LadyBird.png")[:128, :192]
  for rate in (0., 0.7):
    y = model.analyze(tf.constant(image))
    stage = model.hyperprior(y, training=False, log_gain=model.log_gain(rate)).y_hat
    coded = model.compress(tf.constant(image), tf.constant(rate))
    decoded = model.decompress_y(coded["y_string"], coded["z_string"], coded["y_shape"],
                                 coded["z_shape"], tf.constant(rate))
    np.testing.assert_allclose(stage.numpy(), decoded.numpy(), rtol=0, atol=1e-5)


def test_a_file_of_the_source_decodes_at_any_realism(decoder_export, saved_model, tmp_path):
  """A file the starting codec wrote decodes with the new decoder's SavedModel, in a fresh
  process, at R = 0, 0.5 and 1, and at the default when no R is given; R changes pixels."""
  photo = tmp_path / "photo.png"
  photo.write_bytes(images.encode_png(images.load_rgb(HELD_OUT / "Dune.png")[:128, :160]))
  run_hific("compress", "--model", saved_model, photo, tmp_path / "old.hific")
  decoded = {}
  for realism in ("0", "0.5", "1", None):
    out = tmp_path / f"r{realism}.png"
    extra = () if realism is None else ("--realism", realism)
    run_hific("decompress", "--model", decoder_export, *extra, tmp_path / "old.hific", out)
    decoded[realism] = images.load_rgb(out)
    assert decoded[realism].shape == (128, 160, 3)
  np.testing.assert_array_equal(decoded[None], decoded["1"])  # tiny-decoder-gan: default 1.
  assert not np.array_equal(decoded["0"], decoded["1"])
  # The new codec's own files carry the bitstream's fingerprint and decode too.
  run_hific("compress", "--model", decoder_export, photo, tmp_path / "new.hific")
  run_hific("decompress", "--model", decoder_export, "--realism", "0.3",
            tmp_path / "new.hific", tmp_path / "new.png")


@pytest.fixture(scope="module")
def decoder_export(tmp_path_factory, decoder_run):
  folder = tmp_path_factory.mktemp("decoder_export") / "codec"
  run_hific("export", "--model_dir", decoder_run, "--out", folder)
  return folder


def test_the_server_decodes_at_the_realism_asked_for(decoder_export, codec, saved_model):
  """`hific serve`: /health gives the knob's range and default; /decompress?realism=R decodes
  the same file at R; a bad R, or any R but its own on a codec without the knob, is a 400."""
  from test_server import _asgi_post

  from hific_tf.serving import server as server_lib
  from hific_tf.serving.codec import SavedModelCodec
  decoder = SavedModelCodec(decoder_export)
  service = server_lib.CodecService(decoder, isolate=False)
  assert service.health()["realism_range"] == [0., 1.]
  assert service.health()["default_realism"] == 1.
  app = server_lib.create_app(service, request_seconds=120)
  photo = images.load_rgb(HELD_OUT / "Dune.png")[:96, :128]
  data = decoder.compress(photo).to_bytes()
  pngs = {}
  for realism in ("0", "1"):
    status, body = _asgi_post(app, f"/decompress?realism={realism}", data)
    assert status == 200
    pngs[realism] = body
  assert pngs["0"] != pngs["1"]
  for query in ("realism=2", "realism=x"):
    status, body = _asgi_post(app, f"/decompress?{query}", data)
    assert status == 400 and "realism" in json.loads(body)["error"], body
  plain = server_lib.create_app(server_lib.CodecService(codec, isolate=False),
                                request_seconds=120)
  status, body = _asgi_post(plain, "/decompress?realism=0.5", codec.compress(photo).to_bytes())
  assert status == 400 and "no realism knob" in json.loads(body)["error"]


def test_the_serving_export_decodes_at_any_realism(decoder_run, tmp_path):
  """The stock-op `--serving` export: `synthesis_realism` decodes at R, `synthesis` (an
  earlier client's call) at the default; the same file as the codec SavedModel's."""
  from hific_tf.serving import split
  run_hific("export", "--model_dir", decoder_run, "--out", tmp_path / "serving", "--serving")
  client = split.SplitCodec(tmp_path / "serving")
  assert client.has_realism
  photo = images.load_rgb(HELD_OUT / "LadyBird.png")[:96, :128]
  hific_file = client.compress(photo)
  default, at_1, at_0 = (client.decompress(hific_file), client.decompress(hific_file, 1.),
                         client.decompress(hific_file, 0.))
  np.testing.assert_array_equal(default, at_1)
  assert not np.array_equal(at_0, at_1)


def test_realism_is_refused_in_one_line_where_it_cannot_apply(saved_model, tmp_path):
  """Out of [0, 1], or any R but its own on a codec without the knob: exit 2, one line,
  nothing written."""
  photo = tmp_path / "photo.png"
  photo.write_bytes(images.encode_png(images.load_rgb(HELD_OUT / "Dune.png")[:64, :64]))
  hific_here("compress", "--model", saved_model, photo, tmp_path / "a.hific")
  for value, needle in (("0.5", "no realism knob"), ("1.5", "between 0 and 1"),
                        ("nan", "between 0 and 1")):
    done = hific_here("decompress", "--model", saved_model, "--realism", value,
                      tmp_path / "a.hific", tmp_path / "a.png", check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert needle in done.stderr
    assert not (tmp_path / "a.png").exists()
  hific_here("decompress", "--model", saved_model, "--realism", "0", tmp_path / "a.hific",
             tmp_path / "a.png")  # Its own R (0: a codec trained without D) is fine.


def test_a_decoder_with_the_knob_grows_from_weights_without_it(stage1_dir, tmp_path):
  """Stored weights of a codec without the knob load into a model with it (the knob starts
  at no effect: R changes nothing until trained)."""
  import tensorflow as tf

  from hific_tf import configs
  from hific_tf.models import sources
  from hific_tf.models.hific import stored_weights
  from hific_tf.models.hific.model import HiFiC
  source = sources.build_model(stage1_dir)
  stored_weights.save_weights(source, tmp_path / "w.npz")
  grown = HiFiC(configs.get_config("tiny-decoder-gan").replace(stage="mselpips")).build_all()
  stored_weights.load_weights(grown, tmp_path / "w.npz", grow=True)
  plain = HiFiC(source.config).build_all()  # The same stored (int8) weights, no knob.
  stored_weights.load_weights(plain, tmp_path / "w.npz")
  y_hat = tf.random.stateless_normal([1, 4, 6, 32], [1, 2])
  at_0, at_1 = grown.generate(y_hat, 0.), grown.generate(y_hat, 1.)
  np.testing.assert_array_equal(at_0.numpy(), at_1.numpy())
  np.testing.assert_allclose(at_0.numpy(), plain.generate(y_hat).numpy(), atol=1e-6)


def test_diff_augment_changes_colour_and_cuts_out_per_example():
  import tensorflow as tf

  from hific_tf.training import decoder_stage
  images_in = tf.fill([3, 32, 32, 3], 0.5)
  out = decoder_stage.diff_augment(images_in, "cutout", tf.constant([1, 2], tf.int64))
  zeros = tf.reduce_sum(tf.cast(out[..., 0] == 0., tf.int32), axis=[1, 2]).numpy()
  assert np.all((zeros > 0) & (zeros <= 15 * 15)), zeros  # A square of half the side, clipped.
  colour = decoder_stage.diff_augment(images_in, "color", tf.constant([3, 4], tf.int64))
  means = tf.reduce_mean(colour, axis=[1, 2, 3]).numpy()
  assert len(set(np.round(means, 5))) == 3  # Each example its own draw.
  again = decoder_stage.diff_augment(images_in, "color", tf.constant([3, 4], tf.int64))
  np.testing.assert_array_equal(colour.numpy(), again.numpy())  # Stateless.


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason="Debian's chromium and chromium-driver are not installed "
                           "(`make test` installs them when it runs as root)")
def test_the_page_has_a_realism_slider_that_decodes_again(decoder_export, tmp_path):
  """`hific serve` with a decoder that has the knob, in headless Chromium: the realism slider
  shows the codec's default; moving it compares again, and HiFiC's picture changes."""
  import subprocess
  import sys
  import time
  import urllib.request

  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  from test_server import _free_port
  port = _free_port()
  process = subprocess.Popen(
      [sys.executable, "-m", "hific_tf.cli", "serve", "--model", str(decoder_export),
       "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      stdin=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 300
    while True:
      try:
        urllib.request.urlopen(url + "/health", timeout=5).read()
        break
      except OSError:
        assert process.poll() is None and time.time() < deadline, "hific serve did not start"
        time.sleep(1)
    photo = tmp_path / "dune.png"
    photo.write_bytes(images.encode_png(images.load_rgb(HELD_OUT / "Dune.png")[:128, :192]))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
      options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    done = lambda d: (d.execute_script("return document.body.dataset.state") == "done" or
                      "error" in d.find_element(By.ID, "status").get_attribute("class"))
    hific_picture = lambda d: d.find_elements(By.CSS_SELECTOR, ".result img.decoded")[
        0].get_attribute("src")
    try:
      driver.get(url + "/")
      WebDriverWait(driver, 60).until(
          lambda d: d.find_element(By.ID, "realism").is_displayed())
      assert driver.find_element(By.ID, "realism-value").text == "1"
      driver.find_element(By.ID, "file").send_keys(str(photo))
      WebDriverWait(driver, 300).until(done)
      assert driver.find_element(By.ID, "status").get_attribute("class") != "error"
      at_default = hific_picture(driver)
      driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent("
                            "new Event('input')); arguments[0].dispatchEvent("
                            "new Event('change'))", driver.find_element(By.ID, "realism"))
      assert driver.find_element(By.ID, "realism-value").text == "0"
      WebDriverWait(driver, 300).until(lambda d: done(d) and hific_picture(d) != at_default)
      assert driver.find_element(By.ID, "status").get_attribute("class") != "error"
    finally:
      driver.quit()
  finally:
    process.kill()


def test_lpips_from_features_is_lpips():
  """The decoder stage computes LPIPS from features it also hands to D: the same distance."""
  import tensorflow as tf

  from hific_tf.measure.lpips import LPIPS
  lpips = LPIPS("alex")
  a, b = (tf.random.stateless_uniform([2, 64, 80, 3], [seed, 1]) for seed in (1, 2))
  np.testing.assert_allclose(
      lpips.distance_from_features(lpips.features(a), lpips.features(b)).numpy(),
      lpips(a, b).numpy(), rtol=1e-6)


def test_the_projected_discriminator_learns_sharp_from_blurred():
  """Heads on the frozen AlexNet features tell photos-like texture from its blurred copy on
  images they never saw, within 30 steps; the fixed projections are the same in every
  instance (a resumed run's heads see what they were trained on)."""
  import tensorflow as tf

  from hific_tf.measure.lpips import FEATURE_CHANNELS, LPIPS
  from hific_tf.models.hific.projected_discriminator import ProjectedDiscriminator
  lpips = LPIPS("alex")
  tf.keras.utils.set_random_seed(0)
  first, second = (ProjectedDiscriminator(FEATURE_CHANNELS["alex"]) for _ in range(2))
  for head_a, head_b in zip(first.heads, second.heads):
    np.testing.assert_array_equal(head_a.projection.numpy(), head_b.projection.numpy())

  def pairs(seed):
    sharp = tf.random.stateless_uniform([4, 64, 64, 3], [seed, 0])
    blurred = tf.nn.avg_pool2d(sharp, 5, 1, "SAME")
    return sharp, blurred, tf.zeros([4, 4, 4, 8])

  optimizer = tf.keras.optimizers.Adam(4e-4, beta_1=0.5)

  def mean_sigmoid(maps):
    return float(np.mean([tf.reduce_mean(tf.sigmoid(m)) for m in maps]))

  for step in range(30):
    sharp, blurred, latent = pairs(step)
    with tf.GradientTape() as tape:
      loss = (tf.add_n([tf.reduce_mean(tf.nn.softplus(-m))
                        for m in first((lpips.features(sharp), latent))]) +
              tf.add_n([tf.reduce_mean(tf.nn.softplus(m))
                        for m in first((lpips.features(blurred), latent))]))
    gradients = tape.gradient(loss, first.trainable_variables)
    optimizer.apply_gradients(zip(gradients, first.trainable_variables))
  sharp, blurred, latent = pairs(1000)
  real = mean_sigmoid(first((lpips.features(sharp), latent)))
  fake = mean_sigmoid(first((lpips.features(blurred), latent)))
  assert real > 0.6 and fake < 0.4, (real, fake)


def test_a_resumed_run_keeps_reading_the_files_it_started_from(stage1_dir, photo_dir,
                                                               tmp_path):
  """A killed decoder stage, resumed by rerunning its line, still records the fingerprint
  of the codec it grew from: the config given again cannot know it."""
  import tensorflow as tf

  from hific_tf import configs
  from hific_tf.training import train

  class Killed(Exception):
    pass

  class KillAfterFirstCheckpoint(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      raise Killed  # After BackupAndRestore saved: the state a killed process leaves.

  config = configs.get_config("tiny-decoder-gan")
  arguments = dict(train_glob=f"{photo_dir}/*.png", init_from=str(stage1_dir), batch_size=2,
                   steps=4, checkpoint_every=2, verbose=0)
  with pytest.raises(Killed):
    train.train(config, tmp_path, callbacks=[KillAfterFirstCheckpoint()], **arguments)
  started = json.loads((tmp_path / "config.json").read_text())["reads_fingerprints"]
  assert len(started) == 1
  train.train(config, tmp_path, **arguments)
  assert json.loads((tmp_path / "config.json").read_text())["reads_fingerprints"] == started
