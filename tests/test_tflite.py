"""The TFLite codec (`hific export --tflite`): E and G in TFLite, the hyperprior in TensorFlow.

What holds across backends, and is tested here: every file either side writes decodes on the
other; the hyperprior's symbols agree exactly whenever E's latents round the same way; G's
pixels agree with the SavedModel's to a level in a small fraction of values.
"""

import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_hific, sample_photos
from hific_tf.errors import InvalidModelError
from hific_tf.models.hific import layers


def _crop(name, shape=None):
  image = sample_photos()[name]
  return np.ascontiguousarray(image[:shape[0], :shape[1]]) if shape else image


def _levels(a, b):
  return np.abs(a.astype(np.int32) - b.astype(np.int32))


@pytest.mark.parametrize("name,shape", [("astronaut", None), ("coffee", (77, 131)),
                                        ("rocket", (1, 1))])
def test_tflite_files_decode_through_the_saved_model_and_back(tflite_model, codec, name, shape):
  from hific_tf.serving.tflite import TfliteCodec
  lite = TfliteCodec(tflite_model)
  image = _crop(name, shape)
  full_file, lite_file = codec.compress(image), lite.compress(image)
  assert lite_file.y_shape == full_file.y_shape and lite_file.z_shape == full_file.z_shape
  # E in TFLite sums in another order: a latent within float round-off of a rounding
  # boundary may pick the neighbouring symbol. The files differ by a few bytes at most.
  assert abs(len(lite_file.to_bytes()) - len(full_file.to_bytes())) <= 4
  from_full = codec.decompress(full_file)
  # Each side decodes the other's file.
  assert codec.decompress(lite_file).shape == image.shape
  lite_pixels = lite.decompress(full_file)
  assert lite_pixels.shape == image.shape and lite_pixels.dtype == np.uint8
  differing = _levels(lite_pixels, from_full)
  assert differing.max() <= 2 and (differing > 0).mean() < 0.005
  # At another rate, carried by the header, each side still decodes the other's file.
  shifted = lite.compress(image, rate=0.6)
  assert shifted.rate == float(np.float32(0.6)) and shifted.version == 2
  differing = _levels(lite.decompress(shifted), codec.decompress(shifted))
  assert differing.max() <= 2 and (differing > 0).mean() < 0.005


def test_tiled_tflite_matches_one_window(tflite_model):
  from hific_tf.serving.tflite import TfliteCodec
  whole, tiled = TfliteCodec(tflite_model, tile=0), TfliteCodec(tflite_model, tile=128)
  image = _crop("astronaut", (320, 448))  # 3 x 4 windows of 128 pixels.
  whole_file, tiled_file = whole.compress(image), tiled.compress(image)
  assert abs(len(whole_file.to_bytes()) - len(tiled_file.to_bytes())) <= 4
  differing = _levels(tiled.decompress(whole_file), whole.decompress(whole_file))
  assert differing.max() <= 1 and (differing > 0).mean() < 0.001


@pytest.mark.parametrize("alignment", ["keras", "torch"])
def test_transposed_convs_become_subpixel_convs_with_the_same_values(alignment):
  from hific_tf.serving import tflite
  layer = layers.transposed_conv(5, alignment, bias_initializer="random_normal")
  x = tf.random.stateless_normal([1, 6, 9, 7], [0, 1])
  expected = layer(x)
  phase = {id(layer): layers.SubpixelConv2DTranspose.phase_kernel(layer.kernel).numpy()}
  got = tflite._tail_layer(layer, x, phase)
  assert got.shape == expected.shape == (1, 12, 18, 5)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cli_round_trip_through_the_tflite_codec(tflite_model, saved_model, tmp_path,
                                                 photo_dir):
  source = photo_dir / "chelsea.png"
  run_hific("compress", "--model", tflite_model, source, tmp_path / "lite.hific")
  run_hific("decompress", "--model", saved_model, tmp_path / "lite.hific",
            tmp_path / "full.png")
  run_hific("decompress", "--model", tflite_model, tmp_path / "lite.hific",
            tmp_path / "lite.png")
  from PIL import Image
  full, lite = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("full", "lite"))
  assert full.shape == lite.shape == (300, 451, 3)
  assert (_levels(full, lite) > 0).mean() < 0.005
  done = run_hific("export", "--model_dir", "x", "--out", tmp_path / "o", "--tflite",
                   "--generator_dtype", "mixed_bfloat16", check=False)
  assert done.returncode != 0 and "float32" in done.stderr.strip().splitlines()[-1]


def test_float16_weights_halve_the_files_and_keep_the_pixels(stage1_dir, tflite_model,
                                                             tmp_path):
  from hific_tf.serving.tflite import TRUNK, TfliteCodec
  half = tmp_path / "half"
  run_hific("export", "--model_dir", stage1_dir, "--out", half, "--tflite",
            "--tflite_weights", "float16")
  ratio = (half / TRUNK).stat().st_size / (tflite_model / TRUNK).stat().st_size
  assert 0.45 < ratio < 0.6
  full, small = TfliteCodec(tflite_model), TfliteCodec(half)
  hific_file = full.compress(_crop("coffee", (128, 192)))
  a, b = full.decompress(hific_file), small.decompress(hific_file)
  mse = np.mean((a.astype(np.float64) - b) ** 2)
  assert 10 * np.log10(255 ** 2 / max(mse, 1e-10)) > 40


def test_a_damaged_tflite_file_is_refused_in_one_line(tflite_model, tmp_path):
  from hific_tf.serving import resolve
  from hific_tf.serving.tflite import TAIL
  damaged = tmp_path / "damaged"
  shutil.copytree(tflite_model, damaged)
  data = bytearray((damaged / TAIL).read_bytes())
  data[len(data) // 2] ^= 1  # TFLite itself would load and run this.
  (damaged / TAIL).write_bytes(bytes(data))
  with pytest.raises(InvalidModelError, match="damaged or replaced"):
    resolve.load_codec(str(damaged))
