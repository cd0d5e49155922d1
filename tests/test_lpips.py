"""Our TF2 LPIPS against the official implementation's values (tests/data/reference)."""

import json
import re

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from conftest import REFERENCE_DIR, REPO
from hific_tf.measure import lpips as lpips_lib

REFERENCE = REFERENCE_DIR / "lpips_reference.json"


def _load(name):
  return np.asarray(Image.open(REFERENCE_DIR / name), np.float32)[None] / 255.


@pytest.fixture(scope="module", params=["alex", "vgg"])
def net(request):
  return request.param, lpips_lib.LPIPS(request.param)


def test_every_reference_pair_and_layer(net):
  name, model = net
  pairs = json.loads(REFERENCE.read_text())
  assert len(pairs) == 30
  for pair in pairs:
    a, b = _load(pair["a"]), _load(pair["b"])
    terms = [float(t[0]) for t in model.layer_distances(a, b)]
    assert sum(terms) == pytest.approx(pair[name], abs=1e-4), pair
    np.testing.assert_allclose(terms, pair[f"{name}_layers"], atol=5e-5)
    if pair["kind"] == "identity":
      assert sum(terms) < 1e-7


def _numpy_alex_lpips(a, b, convs, lins):
  """A float64 numpy LPIPS-alex (im2col convs), independent of TF, for arbitrary sizes."""
  def conv(x, kernel, bias, stride, pad):
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    kh, kw, cin, cout = kernel.shape
    oh, ow = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))
    cols = cols[::stride, ::stride][:oh, :ow]  # [oh, ow, cin, kh, kw]
    return np.einsum("hwcij,ijco->hwo", cols, kernel) + bias

  def pool(x):
    oh, ow = (x.shape[0] - 3) // 2 + 1, (x.shape[1] - 3) // 2 + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(0, 1))
    return windows[::2, ::2][:oh, :ow].max(axis=(-1, -2))

  def features(x):
    x = ((x * 2 - 1) - np.array([-.030, -.088, -.188])) / np.array([.458, .448, .450])
    out = []
    for i, (pad, stride, pooled) in enumerate([(2, 4, 0), (2, 1, 1), (1, 1, 1), (1, 1, 0),
                                               (1, 1, 0)]):
      if pooled:
        x = pool(x)
      x = np.maximum(conv(x, convs[i][0].astype(np.float64), convs[i][1], stride, pad), 0)
      out.append(x)
    return out

  total = 0.
  for fa, fb, lin in zip(features(a), features(b), lins):
    fa = fa / (np.sqrt((fa ** 2).sum(-1, keepdims=True)) + 1e-10)
    fb = fb / (np.sqrt((fb ** 2).sum(-1, keepdims=True)) + 1e-10)
    total += ((fa - fb) ** 2 @ lin.reshape(-1).astype(np.float64)).mean()
  return total


@pytest.mark.parametrize("height,width", [(64, 64), (64, 96), (101, 70), (256, 320)])
def test_any_size_matches_float64_reference(height, width):
  rng = np.random.default_rng(height * width)
  a = _load("images/coffee.png")[0]
  a = np.asarray(tf.image.resize(a, [height, width])).clip(0, 1)
  b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
  convs, lins = lpips_lib.load_checkpoint("alex")
  expected = _numpy_alex_lpips(a.astype(np.float64), b.astype(np.float64), convs, lins)
  got = float(lpips_lib.LPIPS("alex")(a[None], b[None])[0])
  assert got == pytest.approx(expected, abs=1e-5)


def test_minus_one_to_one_input_range():
  a, b = _load("images/astronaut.png"), _load("images/astronaut_noise.png")
  zero_one = float(lpips_lib.LPIPS("alex")(a, b)[0])
  symmetric = float(lpips_lib.LPIPS("alex", input_range="[-1,1]")(a * 2 - 1, b * 2 - 1)[0])
  assert symmetric == pytest.approx(zero_one, abs=1e-6)


def test_image_distance_of_uint8_pairs_in_either_input_range():
  rng = np.random.default_rng(3)
  a = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
  b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
  unit = lpips_lib.LPIPS("alex")
  direct = float(unit(a[None].astype(np.float64) / 255., b[None].astype(np.float64) / 255.)[0])
  assert unit.image_distance(a, b) == direct > 0
  assert lpips_lib.LPIPS("alex", input_range="[-1,1]").image_distance(a, b) == pytest.approx(
      direct, abs=1e-6)


def test_gradients_flow_to_the_reconstruction_inside_tf_function():
  model = lpips_lib.LPIPS("alex")
  x = tf.constant(_load("images/chelsea.png"))
  x_hat = tf.Variable(_load("images/chelsea_jpeg.png"))

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      distance = tf.reduce_mean(model(x_hat, x))
    return distance, tape.gradient(distance, x_hat)

  distance, gradient = step()
  assert float(distance) > 0.01
  assert np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).max() > 0
  assert not model.trainable_weights


def test_mixed_precision_policy_still_computes_in_float32():
  a, b = _load("images/rocket.png"), _load("images/rocket_blur.png")
  expected = float(lpips_lib.LPIPS("alex")(a, b)[0])
  tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = lpips_lib.LPIPS("alex")
    got = model(tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16))
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  assert got.dtype == tf.float32
  assert float(got[0]) == pytest.approx(expected, abs=2e-3)  # Inputs were rounded to bf16.


def test_works_inside_a_saved_model(tmp_path):
  module = tf.Module()
  module.lpips = lpips_lib.LPIPS("alex")
  module.distance = tf.function(
      lambda a, b: module.lpips(a, b),
      input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)] * 2)
  tf.saved_model.save(module, str(tmp_path / "lpips"))
  loaded = tf.saved_model.load(str(tmp_path / "lpips"))
  a, b = _load("images/coffee.png"), _load("images/coffee_blur.png")
  assert float(loaded.distance(a, b)[0]) == pytest.approx(float(module.lpips(a, b)[0]), abs=1e-6)


def test_no_jax_flax_or_torch_import_in_the_package():
  # One exception: `hific import` reads the PyTorch port's checkpoints with torch, imported
  # inside the function that needs it (never when the package or another command loads).
  pattern = re.compile(r"^\s*(import|from)\s+(jax|flax|torch)\b", re.M)
  reader = REPO / "hific_tf" / "models" / "hific" / "port_checkpoint.py"
  for path in (REPO / "hific_tf").rglob("*.py"):
    if path != reader:
      assert not pattern.search(path.read_text()), path
  assert not re.search(r"^(import|from)\s+torch\b", reader.read_text(), re.M)
  assert re.search(r"^\s+import torch$", reader.read_text(), re.M)


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
  from hific_tf.measure import weights
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.delenv("HIFIC_WEIGHTS_DIR", raising=False)
  with pytest.raises(weights.WeightsNotFoundError, match="hific weights"):
    lpips_lib.LPIPS("alex")


def test_public_import_path_is_the_port():
  """`hific_tf.lpips.LPIPS(net=...)` is the documented Python entry point."""
  import hific_tf.lpips
  assert hific_tf.lpips.LPIPS is lpips_lib.LPIPS
  pair = json.loads(REFERENCE.read_text())[0]
  model = hific_tf.lpips.LPIPS(net="alex")
  distance = float(model(_load(pair["a"]), _load(pair["b"]))[0])
  assert distance == pytest.approx(pair["alex"], abs=1e-4)
