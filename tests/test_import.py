"""`hific import`: the PyTorch port's checkpoints as hific_tf codecs.

The checkpoints are in the port's format with random weights (tests/port_reference.py); the
reference forward is written with torch's own ops from the port's definitions. Tolerances:
every stage within 1e-4 relative (float32 convolutions in two libraries), decoded pixels
equal to the port's reconstruction rounded to uint8 but for rounding ties (the fraction is
asserted), the file's rate within 10% of the rate the port's likelihoods give.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
import pytest

torch = pytest.importorskip("torch", reason="`make test` installs torch for hific import")

import port_reference as reference  # noqa: E402
import tensorflow as tf  # noqa: E402

from conftest import hific_here, run_hific, sample_photos  # noqa: E402
from hific_tf import images as images_lib  # noqa: E402
from hific_tf.models.hific import port_checkpoint  # noqa: E402
from hific_tf.models.hific.model import HiFiC  # noqa: E402

# Sides that are not multiples of 16: both reflect paddings (image to 16, y to 4) matter.
PHOTO = np.ascontiguousarray(sample_photos()["astronaut"][100:200, 50:213])
NARROW = dict(width=8, latent_channels=16, hyper_filters=16)


def _relative(ours, theirs):
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else 10 * np.log10(255. ** 2 / mse)


def _imported(path):
  state, args, metadata = port_checkpoint.load(path)
  config = port_checkpoint.config_for(state, args, metadata, "imported")
  model = HiFiC(config.replace(stage="mselpips")).build_all()
  left_out = port_checkpoint.assign_weights(model, state)
  return model, left_out


@pytest.mark.parametrize("normalize,likelihood", [(True, "gaussian"), (False, "logistic")])
def test_every_stage_matches_the_ports_forward(tmp_path, normalize, likelihood):
  state, args = reference.random_checkpoint(tmp_path / "port.pt", normalize=normalize,
                                            likelihood=likelihood, **NARROW)
  model, left_out = _imported(tmp_path / "port.pt")
  assert left_out == {"Discriminator.": 3}
  assert model.config.input_range == ("signed" if normalize else "unit")
  port = reference.forward(state, args, PHOTO)
  hyperprior = model.hyperprior
  y = model.analyze(tf.constant(PHOTO)).numpy()
  assert y.shape == port["y"].shape and _relative(y, port["y"]) < 1e-4
  z = hyperprior.analysis(tf.constant(port["y"])).numpy()
  assert _relative(z, port["z"]) < 1e-4
  mean, sigma = hyperprior._parameters(tf.constant(port["z_hat"]), port["y"].shape[1:3])  # noqa: SLF001
  assert _relative(mean.numpy(), port["mean"]) < 1e-4
  assert _relative(np.maximum(sigma.numpy(), reference.MIN_SCALE), port["scale"]) < 1e-4
  z_likelihood = hyperprior.side_prior.prob(tf.constant(port["z_hat"])).numpy()
  assert np.abs(z_likelihood / port["z_likelihood"] - 1).max() < 1e-4
  y_likelihood = hyperprior.likelihood(loc=port["mean"], scale=port["scale"]).prob(
      port["y_hat"]).numpy()
  likely = port["y_likelihood"] > 1e-6  # Below, the port's clamp and float32 tails differ.
  assert np.abs(y_likelihood[likely] / port["y_likelihood"][likely] - 1).max() < 1e-4
  pixels = model.synthesize(tf.constant(port["y_hat"]), tf.constant(PHOTO.shape[:2])).numpy()
  expected = np.round(port["reconstruction"] * 255.)
  # G's float32 sums in two libraries: a pixel may round the other way at a .5 boundary.
  assert np.mean(pixels != expected) < 1e-3 and np.abs(pixels - expected).max() <= 1


def test_sigma_picks_the_first_scale_at_or_above_it(tmp_path):
  reference.random_checkpoint(tmp_path / "port.pt", **NARROW)
  model, _ = _imported(tmp_path / "port.pt")
  table = model.hyperprior._scale_table.numpy()  # noqa: SLF001
  sigma = np.concatenate([table, table * 1.0001, table * 0.9999, [0.01, 1e4]]).astype(
      np.float32)
  index = model.hyperprior.coding_index(tf.constant(sigma)).numpy().astype(int)
  # The port's rule (prior_model.compute_indices): last index minus the entries >= sigma.
  expected = len(table) - 1 - np.sum(np.maximum(sigma, 0.11)[:, None] <= table[None, :-1],
                                     axis=1)
  np.testing.assert_array_equal(index, expected)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """A full-width port checkpoint (2 residual blocks, [-1, 1], Gaussian) imported by the CLI."""
  folder = tmp_path_factory.mktemp("import")
  state, args = reference.random_checkpoint(folder / "hific-port.pt")
  done = run_hific("import", folder / "hific-port.pt", "--out", folder / "codec")
  return {"folder": folder, "codec": folder / "codec", "state": state, "args": args,
          "stdout": done.stdout, "stderr": done.stderr,
          "env": {"XDG_CACHE_HOME": str(folder / "cache")}}


def test_imported_codec_decodes_to_the_ports_reconstruction(imported, tmp_path):
  Image.fromarray(PHOTO).save(tmp_path / "photo.png")
  run_hific("compress", "--model", imported["codec"], tmp_path / "photo.png",
            tmp_path / "photo.hific", env=imported["env"])
  # float32, as the port computes: the default on a CPU with native bfloat16 (bfloat16 G)
  # moves pixels by about a level, which this comparison would count against the import.
  run_hific("decompress", "--model", imported["codec"], "--precision", "float32",
            tmp_path / "photo.hific", tmp_path / "decoded.png", env=imported["env"])
  decoded = images_lib.load_rgb(tmp_path / "decoded.png")
  port = reference.forward(imported["state"], imported["args"], PHOTO)
  expected = np.round(port["reconstruction"] * 255.).astype(np.uint8)
  assert decoded.shape == PHOTO.shape
  assert _psnr(decoded, expected) >= 40.
  assert np.mean(decoded != expected) < 1e-3  # Rounding ties only.
  # The default decode (bfloat16 G where native) stays close to the port's pixels too.
  run_hific("decompress", "--model", imported["codec"], tmp_path / "photo.hific",
            tmp_path / "default.png", env=imported["env"])
  assert _psnr(images_lib.load_rgb(tmp_path / "default.png"), expected) >= 40.
  file_bits = 8 * (tmp_path / "photo.hific").stat().st_size
  assert abs(file_bits / port["bits"] - 1) < 0.10, (file_bits, port["bits"])
  card = json.loads((imported["codec"] / "card.json").read_text())
  config = json.loads((imported["codec"] / "config.json").read_text())
  assert card["source"]["file"] == "hific-port.pt" and card["steps"] == 1234
  assert config["source"]["args"]["normalize_input_image"] is True
  assert config["num_residual_blocks"] == 2 and config["image_pad_multiple"] == 16
  assert "not imported: 3 tensors of Discriminator." in imported["stderr"]
  described = json.loads(run_hific("info", imported["codec"]).stdout)
  assert described["layout"]["scale_parameterization"] == "sigma"
  assert described["card"]["fingerprint"] == card["fingerprint"]


@pytest.fixture(scope="module")
def narrow_cache(tmp_path_factory):
  """A new codec cache for this module (the narrow codec's SavedModel is built on first use,
  once), with the LPIPS and Inception weights still found where they are."""
  from hific_tf.measure import weights
  return {"XDG_CACHE_HOME": str(tmp_path_factory.mktemp("narrow-cache")),
          "HIFIC_WEIGHTS_DIR": str(weights.cache_dir())}


@pytest.fixture(scope="module")
def narrow_codec(tmp_path_factory):
  folder = tmp_path_factory.mktemp("narrow")
  reference.random_checkpoint(folder / "narrow.pt", **NARROW)
  run_hific("import", folder / "narrow.pt", "--out", folder / "codec", "--name", "narrow")
  return folder / "codec"


def test_imported_codec_evaluates(narrow_codec, narrow_cache, photo_dir, tmp_path):
  images = tmp_path / "few"
  images.mkdir()
  (images / "coffee.png").write_bytes((photo_dir / "coffee.png").read_bytes())
  run_hific("evaluate", "--model", narrow_codec, "--images", images, "--codecs", "jpeg",
            "--bpp", "0.5", "--out", tmp_path / "eval", "--no_fid",
            env=narrow_cache)
  summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
  assert summary["hific@narrow"]["images"] == 1 and summary["hific@narrow"]["bpp"] > 0


def test_imported_codec_serves(narrow_codec, narrow_cache, tmp_path, monkeypatch):
  from hific_tf.serving import resolve
  for key, value in narrow_cache.items():
    monkeypatch.setenv(key, value)  # The server's too.
  codec = resolve.load_codec(str(narrow_codec))
  expected = codec.compress(PHOTO).to_bytes()
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  process = subprocess.Popen(
      [sys.executable, "-m", "hific_tf.cli", "serve", "--model", str(narrow_codec), "--port",
       str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
  try:
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
      try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
          assert json.loads(response.read())["model"] == "narrow"
          break
      except (urllib.error.URLError, ConnectionError):
        assert process.poll() is None and time.time() < deadline, process.stderr.read()
        time.sleep(1)
    buffer = (tmp_path / "photo.png")
    Image.fromarray(PHOTO).save(buffer)
    request = urllib.request.Request(url + "/compress", data=buffer.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
      assert response.read() == expected
  finally:
    process.kill()


def test_imported_codec_fine_tunes(narrow_codec, photo_dir, tmp_path):
  done = run_hific("train", "--init_from", narrow_codec, "--train_glob",
                   f"{photo_dir}/*.png", "--steps", 2, "--checkpoint_every", 2,
                   "--batch_size", 2, "--crop_size", 64, "--model_dir", tmp_path / "tuned")
  config = json.loads((tmp_path / "tuned" / "config.json").read_text())
  assert config["stage"] == "hific" and config["conv_padding"] == "reflect"
  assert "D starts fresh" in done.stdout
  run_hific("export", "--model_dir", tmp_path / "tuned", "--out", tmp_path / "sm")


# --- Refusals: one line, exit 1, nothing written. ----------------------------------------

def _refused(tmp_path, checkpoint, needle):
  out = tmp_path / "codec"
  done = hific_here("import", checkpoint, "--out", out, check=False)
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 1 and len(lines) == 1, done.stderr
  assert needle in lines[0], lines[0]
  assert not out.exists() and not list(tmp_path.glob(".codec*"))


class _Payload:
  def __reduce__(self):
    return (print, ("code ran",))


def test_refuses_files_that_are_not_port_checkpoints(tmp_path):
  text = tmp_path / "notes.pt"
  text.write_text("not a checkpoint")
  _refused(tmp_path, text, "not a PyTorch checkpoint")
  reference.random_checkpoint(tmp_path / "port.pt", **NARROW)
  truncated = tmp_path / "truncated.pt"
  data = (tmp_path / "port.pt").read_bytes()
  truncated.write_bytes(data[:len(data) // 2])
  _refused(tmp_path, truncated, "truncated.pt")
  code = tmp_path / "code.pt"
  torch.save({"model_state_dict": {}, "args": {}, "payload": _Payload()}, code)
  _refused(tmp_path, code, "not a loadable checkpoint of tensors")
  torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
  _refused(tmp_path, tmp_path / "other.pt", "no model_state_dict")


@pytest.mark.parametrize("change,needle", [
    (dict(extra_args={"use_latent_mixture_model": True}), "use_latent_mixture_model"),
    (dict(likelihood="laplace"), "likelihood_type='laplace'"),
    (dict(extra_args={"sample_noise": True}), "sample_noise"),
])
def test_refuses_settings_it_cannot_map(tmp_path, change, needle):
  reference.random_checkpoint(tmp_path / "port.pt", **NARROW, **change)
  _refused(tmp_path, tmp_path / "port.pt", needle)


def test_refuses_a_tensor_it_has_no_place_for(tmp_path):
  reference.random_checkpoint(tmp_path / "port.pt", **NARROW)
  checkpoint = torch.load(tmp_path / "port.pt", weights_only=True)
  checkpoint["model_state_dict"]["Generator.extra.weight"] = torch.zeros(2)
  torch.save(checkpoint, tmp_path / "extra.pt")
  _refused(tmp_path, tmp_path / "extra.pt", "Generator.extra.weight")
  del checkpoint["model_state_dict"]["Generator.extra.weight"]
  checkpoint["model_state_dict"]["Encoder.conv_block1.1.weight"] = torch.zeros(8, 3, 5, 5)
  torch.save(checkpoint, tmp_path / "shape.pt")
  _refused(tmp_path, tmp_path / "shape.pt", "Encoder.conv_block1.1.weight")


def test_without_torch_it_says_how_to_install_it(tmp_path):
  blocker = tmp_path / "block"
  blocker.mkdir()
  (blocker / "torch.py").write_text("raise ImportError('no torch here')\n")
  reference.random_checkpoint(tmp_path / "port.pt", **NARROW)
  done = run_hific("import", tmp_path / "port.pt", "--out", tmp_path / "codec", check=False,
                   env={"PYTHONPATH": str(blocker)})
  assert done.returncode == 1 and "pip install torch==2.13.0" in done.stderr
  assert not (tmp_path / "codec").exists()


def test_imported_codec_exports_for_stock_tf_serving(narrow_codec, narrow_cache, tmp_path):
  # The stock-op split (no tfc ops in the SavedModel; the client range-codes): same bytes as
  # the codec folder's own SavedModel, with every layout setting of the port in the graph.
  Image.fromarray(PHOTO).save(tmp_path / "photo.png")
  env = narrow_cache
  run_hific("export", "--model_dir", narrow_codec, "--out", tmp_path / "serving", "--serving")
  run_hific("compress", "--model", tmp_path / "serving", tmp_path / "photo.png",
            tmp_path / "split.hific", env=env)
  run_hific("compress", "--model", narrow_codec, tmp_path / "photo.png",
            tmp_path / "full.hific", env=env)
  assert (tmp_path / "split.hific").read_bytes() == (tmp_path / "full.hific").read_bytes()
