"""The bundled codecs: they load, round-trip a held-out photo within their stated bounds, and
the CLI finds them by default, by name, by rate and by a file's fingerprint."""

import json

import numpy as np
import pytest

from conftest import REPO, hific_here, run_hific
from hific_tf import images, runtime
from hific_tf.errors import HificError
from hific_tf.models import zoo
from hific_tf.models.hific import stored_weights

HELD_OUT = REPO / "tests" / "data" / "heldout"
PHOTO = HELD_OUT / "LadyBird.png"  # Never trained on (hific_tf/training/photos.py).
# Regression bounds, per card: the shipped model meets them with a margin of at least 10%
# (bpp) and 0.03 (LPIPS) on PHOTO; a retrained codec that is worse than the shipped one fails.
BPP_MARGIN = 0.10
LPIPS_MARGIN = 0.03
WEIGHTS_LIMIT_BYTES = 40 * 2 ** 20  # Everything shipped, compatibility decoders included.
CODEC_LIMIT_BYTES = 15 * 10 ** 6  # The codecs that code (docs/COMPATIBILITY.md).
PRECISION_PSNR_DB = 40.  # bfloat16 generator against float32, same file (see the test).


def test_codecs_are_bundled_within_the_size_budget():
  names = zoo.names()
  assert zoo.DEFAULT_CODEC in names
  coding = sum((zoo.BUNDLED_DIR / n / "weights.npz").stat().st_size for n in names)
  assert coding <= CODEC_LIMIT_BYTES
  kept = sum((folder / "weights.npz").stat().st_size for folder in zoo.compat_decoders())
  assert coding + kept < WEIGHTS_LIMIT_BYTES
  for name in names:
    card = zoo.load_card(name)
    assert card["name"] == name and len(card["fingerprint"]) == 16
    assert card["heldout"]["images"] >= 8


@pytest.fixture(scope="module")
def round_trips(cache_env, tmp_path_factory):
  """PHOTO through every bundled codec: each SavedModel built on first use into a fresh
  cache, then one fresh process decodes all the files, finding each codec by fingerprint."""
  folder = tmp_path_factory.mktemp("round-trips")
  for name in zoo.names():
    hific_here("compress", "--model", name, PHOTO, folder / f"{name}.hific", env=cache_env)
  run_hific("decompress", folder, env=cache_env)
  return folder


@pytest.mark.parametrize("name", zoo.names())
def test_bundled_codec_round_trips_a_held_out_photo(name, round_trips):
  card = zoo.load_card(name)
  shipped = {row["image"]: row for row in card["heldout_images"]}[PHOTO.stem]
  out = round_trips / f"{name}.hific"
  original = images.load_rgb(PHOTO)
  decoded = images.load_rgb(round_trips / f"{name}.png")
  assert decoded.shape == original.shape
  bpp = images.bits_per_pixel(out.stat().st_size, *original.shape[:2])
  from hific_tf.measure.lpips import LPIPS
  distance = LPIPS("alex").image_distance(original, decoded)
  # The card's figures are what a user gets: reproduced here up to float rounding.
  assert bpp == pytest.approx(shipped["bpp"], rel=0.01)
  assert distance == pytest.approx(shipped["lpips"], abs=0.005)
  assert bpp <= shipped["bpp"] * (1 + BPP_MARGIN)
  assert distance <= shipped["lpips"] + LPIPS_MARGIN
  # And the bound that makes the codec worth shipping: better LPIPS than JPEG at its size.
  from hific_tf.measure import classical
  jpeg = classical.get_codec("jpeg")
  match = classical.match_size(jpeg, original, out.stat().st_size)
  jpeg_distance = LPIPS("alex").image_distance(original, jpeg.decode(match.data))
  assert distance < jpeg_distance, (distance, jpeg_distance)


def test_default_codec_and_rate_choice(cache_env, tmp_path):
  (tmp_path / "in").mkdir()
  photo = tmp_path / "in" / "photo.png"
  photo.write_bytes(PHOTO.read_bytes())
  hific_here("compress", photo, env=cache_env)  # No --model: the default codec.
  hific_here("decompress", tmp_path / "in" / "photo.hific", tmp_path / "out.png", env=cache_env)
  header = hific_here("info", tmp_path / "in" / "photo.hific", env=cache_env).stdout
  # The header names the config for people, in at most 22 bytes (docs/FORMAT.md).
  from hific_tf import bitstream
  assert zoo.load_card(zoo.DEFAULT_CODEC)["config"][:bitstream.MAX_NAME_BYTES] in header
  assert images.load_rgb(tmp_path / "out.png").shape == images.load_rgb(PHOTO).shape
  listing = hific_here("models", env=cache_env).stdout
  assert all(name in listing for name in zoo.names() + sorted(zoo.presets()))
  assert all(zoo.load_card(folder)["fingerprint"] in listing
             for folder in zoo.compat_decoders())
  # A terminal's width: the training notes wrap under their row, and only with --verbose.
  detailed = hific_here("models", "--verbose", env=cache_env).stdout
  assert max(len(line) for line in (listing + detailed).splitlines()) <= 100
  assert len(detailed.splitlines()) > len(listing.splitlines())


def test_a_preset_is_the_one_model_at_its_rate(cache_env, tmp_path, monkeypatch):
  """`--model small-mi` codes with the default codec at the preset's rate; `--target_bpp`
  without --model searches that codec's rates too, whatever the target."""
  presets = zoo.presets()
  assert presets and all(p["codec"] == zoo.DEFAULT_CODEC for p in presets.values())
  name, preset = sorted(presets.items())[0]
  hific_here("compress", "--model", name, PHOTO, tmp_path / "preset.hific", env=cache_env)
  hific_here("compress", "--rate", preset["rate"], PHOTO, tmp_path / "rate.hific",
             env=cache_env)
  assert (tmp_path / "preset.hific").read_bytes() == (tmp_path / "rate.hific").read_bytes()
  from hific_tf import bitstream
  preset_file = bitstream.HificFile.from_bytes((tmp_path / "preset.hific").read_bytes())
  card = zoo.load_card(zoo.DEFAULT_CODEC)
  assert preset_file.rate == preset["rate"]
  assert preset_file.fingerprint.hex() == card["fingerprint"]
  info = hific_here("info", tmp_path / "preset.hific", env=cache_env).stdout
  assert f"codec {zoo.DEFAULT_CODEC} v{card['version']}" in info
  # An explicit --rate wins over the preset's.
  hific_here("compress", "--model", name, "--rate", 0, PHOTO, tmp_path / "zero.hific",
             env=cache_env)
  assert bitstream.HificFile.from_bytes((tmp_path / "zero.hific").read_bytes()).rate == 0
  # A service started with the preset codes at its rate when a request names none, and
  # says so (the page's rate slider starts there).
  for key, value in cache_env.items():
    monkeypatch.setenv(key, value)
  from hific_tf.serving import resolve, server
  service = server.CodecService(resolve.load_codec(name), isolate=False)
  health = service.health()
  assert (health["codec"], health["default_rate"]) == (name, preset["rate"])
  served = bitstream.HificFile.from_bytes(service.compress(PHOTO.read_bytes()))
  assert served.to_bytes() == (tmp_path / "preset.hific").read_bytes()
  hific_here("compress", "--target_bpp", 0.3, PHOTO, tmp_path / "target.hific", env=cache_env)
  searched = bitstream.HificFile.from_bytes((tmp_path / "target.hific").read_bytes())
  assert searched.fingerprint.hex() == card["fingerprint"]
  assert searched.bits_per_pixel() == pytest.approx(0.3, rel=0.02)


def test_generator_precision_changes_pixels_not_bytes(cache_env, tmp_path):
  """`--precision` picks the generator's compute type of a bundled codec: the same photo
  compresses to the same bytes (E and the hyperprior stay float32), and the bfloat16 decode
  of that file stays within a level or two of the float32 one. The bound is a regression
  bound measured on PHOTO (bench/codec_speed.py --held_out precision measures all held-out photos)."""
  files = {}
  for precision in ("float32", "mixed_bfloat16"):
    # bfloat16 in a fresh process: the command picks kernels for it before TensorFlow loads.
    run = run_hific if precision == "mixed_bfloat16" else hific_here
    files[precision] = tmp_path / f"{precision}.hific"
    run("compress", "--model", zoo.DEFAULT_CODEC, "--precision", precision, PHOTO,
        files[precision], env=cache_env)
    run("decompress", "--precision", precision, files["float32"],
        tmp_path / f"{precision}.png", env=cache_env)
  assert files["float32"].read_bytes() == files["mixed_bfloat16"].read_bytes()
  from hific_tf.measure import metrics
  psnr = metrics.psnr(images.load_rgb(tmp_path / "float32.png"),
                      images.load_rgb(tmp_path / "mixed_bfloat16.png"))
  assert PRECISION_PSNR_DB < psnr < 99, psnr  # Different pixels, close to the float32 ones.
  done = hific_here("decompress", "--precision", "bfloat16", files["float32"], env=cache_env,
                    check=False)
  assert done.returncode == 2 and done.stderr.count("\n") == 1
  # A CPU without native bfloat16 (AVX2 only; the flags hific_tf acts on are replaced): the
  # command turns oneDNN off, whose fused convolutions have no bfloat16 kernel there, and
  # decodes on TensorFlow's own kernels; the user's own TF_ENABLE_ONEDNN_OPTS=1 is refused.
  avx2 = dict(cache_env, **{runtime.CPU_FLAGS_VARIABLE: "sse4_2 avx avx2 fma"})
  emulated = tmp_path / "emulated.png"
  run_hific("decompress", "--precision", "mixed_bfloat16", files["float32"], emulated,
            env=avx2)
  psnr = metrics.psnr(images.load_rgb(tmp_path / "float32.png"), images.load_rgb(emulated))
  assert PRECISION_PSNR_DB < psnr < 99, psnr
  forced = dict(avx2, TF_ENABLE_ONEDNN_OPTS="1", **{runtime.CHOSEN_MARK: ""})  # The user's.
  done = run_hific("decompress", "--precision", "mixed_bfloat16", files["float32"],
                   tmp_path / "refused.png", env=forced, check=False)
  assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
  assert "AVX512-BF16" in done.stderr and "TF_ENABLE_ONEDNN_OPTS=0" in done.stderr
  assert not (tmp_path / "refused.png").exists()


def test_bad_model_names_and_foreign_files_are_one_line_errors(cache_env, tmp_path):
  done = hific_here("compress", "--model", "no-such-codec", PHOTO, tmp_path / "x.hific",
                    env=cache_env, check=False)
  assert done.returncode == 2 and done.stderr.count("\n") == 1
  assert "no-such-codec" in done.stderr and not (tmp_path / "x.hific").exists()


def test_weights_round_trip_through_narrow_storage(tmp_path):
  """save_weights/load_weights keep every tensor in order: large kernels as int8 within half
  a step of their per-channel scale, the rest as float16; the fingerprint follows."""
  from hific_tf import configs
  from hific_tf.models.hific.model import HiFiC
  config = configs.get_config("tiny-mselpips")
  first = HiFiC(config).build_all()
  stored_weights.save_weights(first, tmp_path / "w.npz")
  second = HiFiC(config).build_all()
  for variable in second.encoder.variables:
    variable.assign(variable + 0.5)
  assert stored_weights.fingerprint(first) != stored_weights.fingerprint(second)
  stored_weights.load_weights(second, tmp_path / "w.npz")
  narrow = 0
  with np.load(tmp_path / "w.npz") as stored:
    for (key, _, a), (_, _, b) in zip(stored_weights.keyed_variables(first),
                                      stored_weights.keyed_variables(second)):
      original, loaded = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
      if stored[key].dtype == np.int8:
        narrow += 1
        step = np.abs(original).max(axis=tuple(range(original.ndim - 1))) / 127.
        assert np.all(np.abs(loaded - original) <= step / 2 * (1 + 1e-4)), key  # float32 rounding
      else:
        assert stored[key].dtype == np.float16, key
        np.testing.assert_array_equal(original.astype(np.float16), loaded)
  assert narrow >= 4  # The large kernels of E and G went to int8.
  third = HiFiC(config).build_all()
  from hific_tf.models import sources
  sources.restore(third, str(tmp_path / "w.npz"))  # --init_from a weights file.
  assert stored_weights.fingerprint(second) == stored_weights.fingerprint(third)


def test_weights_are_keyed_by_name_so_a_grown_model_loads_them(tmp_path):
  """A file is keyed by each weight's attribute path, the same in every model of a config
  whatever Keras numbered its layers; a model with a new variable inside G loads it, every
  other weight as stored; a file keyed by position (the bundled codecs') still loads."""
  from hific_tf import configs
  from hific_tf.models.hific.model import HiFiC
  config = configs.get_config("tiny-mselpips")
  first, second = HiFiC(config).build_all(), HiFiC(config).build_all()
  keys = [key for key, _, _ in stored_weights.keyed_variables(first)]
  assert keys == [key for key, _, _ in stored_weights.keyed_variables(second)]
  assert len(set(keys)) == len(keys) and not any(":" in key for key in keys)
  assert [v.name for _, v in first.codec_variables()] != (
      [v.name for _, v in second.codec_variables()])  # Keras' names differ; the keys do not.
  stored_weights.save_weights(first, tmp_path / "w.npz")
  import tensorflow as tf
  grown = HiFiC(config).build_all()
  block = grown.generator.blocks.layers[0]
  block.extra_scale = tf.Variable(tf.ones([3]), name="extra_scale")  # A weight G gained.
  assert len(list(grown.codec_variables())) == len(keys) + 1
  with pytest.raises(HificError):
    stored_weights.load_weights(grown, tmp_path / "w.npz")
  stored_weights.load_weights(grown, tmp_path / "w.npz", grow=True)
  np.testing.assert_array_equal(block.extra_scale.numpy(), np.ones(3))
  loaded = {key: v.numpy() for key, _, v in stored_weights.keyed_variables(grown)}
  reference = HiFiC(config).build_all()
  stored_weights.load_weights(reference, tmp_path / "w.npz")
  for key, _, variable in stored_weights.keyed_variables(reference):
    np.testing.assert_array_equal(loaded[key], variable.numpy(), err_msg=key)
  with np.load(zoo.BUNDLED_DIR / zoo.DEFAULT_CODEC / "weights.npz") as bundled:
    assert stored_weights.FORMAT_KEY not in bundled.files  # Positions: loaded by every test.


def test_generator_bits_leave_the_rate_side_untouched(tmp_path):
  """`generator_bits` coarsens G's kernels alone: E and the hyperprior load exactly as from
  8-bit storage (so every file's payload stays the same), G's within half a 7-bit step."""
  from hific_tf import configs
  from hific_tf.models.hific.model import HiFiC
  config = configs.get_config("tiny-mselpips")
  model = HiFiC(config).build_all()
  stored_weights.save_weights(model, tmp_path / "w8.npz", bits=8)
  stored_weights.save_weights(model, tmp_path / "g7.npz", bits=8, generator_bits=7)
  generator_kernels = 0
  with np.load(tmp_path / "w8.npz") as eight, np.load(tmp_path / "g7.npz") as mixed:
    assert eight.files == mixed.files
    for key, _, variable in stored_weights.keyed_variables(model):
      if key.startswith("generator/") and mixed[key].dtype == np.int8:
        generator_kernels += 1
        assert np.abs(mixed[key]).max() <= 63, key
        original = variable.numpy().astype(np.float64)
        loaded = stored_weights.dequantize_int8(mixed[key],
                                                mixed[key + stored_weights.SCALE_SUFFIX])
        step = np.abs(original).max(axis=tuple(range(original.ndim - 1))) / 63.
        assert np.all(np.abs(loaded - original) <= step / 2 * (1 + 1e-4)), key
      else:
        np.testing.assert_array_equal(eight[key], mixed[key])
  assert generator_kernels >= 2


def test_bfloat16_codec_model_is_lean_and_keeps_its_fingerprint():
  """zoo.build_model in bfloat16 holds G's convs in bfloat16 (half the memory) and still
  names its weights by the float32 fingerprint on the card, which files carry."""
  refusal = runtime.bfloat16_refusal("the bundled codec")
  if refusal:  # oneDNN is on and this CPU has no bfloat16 kernels for it.
    pytest.skip(refusal)
  name = zoo.DEFAULT_CODEC
  model = zoo.build_model(name, generator_dtype="mixed_bfloat16")
  assert "bfloat16" in {w.dtype.name for w in model.generator.weights}
  assert stored_weights.fingerprint(model).hex() == zoo.load_card(name)["fingerprint"]


def test_quantize_int8_against_float64_reference():
  rng = np.random.default_rng(0)
  values = rng.normal(size=(3, 3, 16, 8)).astype(np.float32) * rng.uniform(0.01, 2., 8)
  values[..., 3] = 0.  # An all-zero channel must not divide by zero.
  codes, scale = stored_weights.quantize_int8(values)
  reference_scale = np.abs(values.astype(np.float64)).max(axis=(0, 1, 2)) / 127.
  nonzero = reference_scale > 0
  np.testing.assert_allclose(scale[nonzero], reference_scale[nonzero], rtol=1e-6)
  assert codes.dtype == np.int8 and np.abs(codes).max() == 127 and not codes[..., 3].any()
  error = np.abs(stored_weights.dequantize_int8(codes, scale) - values.astype(np.float64))
  assert np.all(error <= reference_scale / 2 * (1 + 1e-4))  # float32 rounding


def _committed_weights():
  """(card, weights path) of every committed weight set: bundled rungs and resume points."""
  for name in zoo.names():
    yield zoo.load_card(name), zoo.BUNDLED_DIR / name / "weights.npz"
  for card_path in sorted((REPO / "checkpoints").glob("*.card.json")):
    yield json.loads(card_path.read_text()), card_path.with_name(
        card_path.name.split(".")[0] + ".npz")


@pytest.mark.parametrize("card, weights", list(_committed_weights()),
                         ids=lambda value: value["name"] if isinstance(value, dict) else "")
def test_committed_weights_load_into_their_config_with_their_d(card, weights):
  """Every committed weight set fits its config, matches its fingerprint, and a stage-2 one
  brings its D, so `--init_from` it continues the GAN (checkpoints/README.md)."""
  from hific_tf import configs
  from hific_tf.models.hific.model import HiFiC
  model = HiFiC(configs.get_config(card["config"])).build_all()
  restored_discriminator = stored_weights.load_weights(model, weights)
  assert stored_weights.fingerprint(model).hex() == card["fingerprint"]
  assert restored_discriminator == stored_weights.discriminator_path(weights).is_file()
  if card["stage"] == "hific" and "checkpoints" not in weights.parts:
    assert restored_discriminator, f"{card['name']} ships without its D"


def test_discriminator_travels_beside_the_weights(tmp_path):
  """A stage-2 model's D is written beside its weights and comes back with --init_from, so
  continuing a committed rung does not restart the GAN; a stage-1 model writes no D."""
  from hific_tf import configs
  from hific_tf.models import sources
  from hific_tf.models.hific.model import HiFiC
  config = configs.get_config("tiny-hific")
  first = HiFiC(config).build_all()
  stored_weights.save_weights(first, tmp_path / "w.npz")
  assert stored_weights.discriminator_path(tmp_path / "w.npz").is_file()
  second = HiFiC(config).build_all()
  for variable in second.discriminator.variables:
    variable.assign(variable * 0. + 0.25)
  assert sources.restore(second, str(tmp_path / "w.npz"))
  for (key, a), (_, b) in zip(first.discriminator_state(), second.discriminator_state()):
    original, loaded = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    step = np.abs(original).max(axis=tuple(range(original.ndim - 1))) / 127.
    tolerance = np.maximum(step / 2 * (1 + 1e-4),  # int8, or float16 (subnormals included)
                           np.abs(original) * 2.**-10 + 2.**-24)
    assert np.all(np.abs(loaded - original) <= tolerance), key
  stage_1 = HiFiC(config.replace(stage="mselpips")).build_all()
  stored_weights.save_weights(stage_1, tmp_path / "s1.npz")
  assert not stored_weights.discriminator_path(tmp_path / "s1.npz").exists()
  assert not sources.restore(HiFiC(config).build_all(), str(tmp_path / "s1.npz"))


def test_effort_search_lowers_the_objective_at_no_more_bits():
  """The latent search through the frozen codec: less distortion (k_M MSE + k_P LPIPS) than
  the encoder's own latents, in no more bits, on a small crop of a held-out photo."""
  from hific_tf.measure.lpips import LPIPS
  from hific_tf.models.hific import latent_search
  model = zoo.build_model(zoo.DEFAULT_CODEC)
  search = latent_search.LatentSearch(model, LPIPS(model.config.lpips_net))
  crop = images.load_rgb(PHOTO)[:128, :192]
  seen = []
  y, report = search.search(crop, 25, progress=lambda done, total: seen.append(done))
  assert seen == list(range(1, 26))
  assert report["bits"] <= report["start_bits"]
  assert report["distortion"] < report["start_distortion"] - 0.01, report
  assert y.shape == model.analyze(crop).shape
  _, none = search.search(crop, 0)
  assert none["distortion"] == none["start_distortion"]
  with pytest.raises(latent_search.EffortError, match="time budget"):
    search.search(crop, 5, deadline=0.)


def test_effort_files_decode_with_the_plain_decoder(cache_env, tmp_path):
  """`compress --effort` writes an ordinary file: a fresh process decodes it with no effort
  of its own (found by fingerprint); bad values are one-line errors that write nothing."""
  crop = tmp_path / "crop.png"
  crop.write_bytes(images.encode_png(images.load_rgb(PHOTO)[:128, :192]))
  run_hific("compress", "--effort", 1, crop, tmp_path / "e1.hific", env=cache_env)
  run_hific("decompress", tmp_path / "e1.hific", tmp_path / "e1.png", env=cache_env)
  assert images.load_rgb(tmp_path / "e1.png").shape == (128, 192, 3)
  for bad in (("--effort", "9"), ("--effort", "-1"), ("--effort", "1", "--effort_seconds", "0")):
    done = hific_here("compress", *bad, crop, tmp_path / "bad.hific", env=cache_env, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "bad.hific").exists()
