"""G's colour offset: measured through the codec's own quantization, removed exactly."""

import numpy as np
from PIL import Image
import pytest

from conftest import sample_photos
from hific_tf import configs
from hific_tf.errors import UsageError
from hific_tf.models.hific.model import HiFiC
from hific_tf.training import calibration


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory):
  folder = tmp_path_factory.mktemp("calibration")
  files = []
  for name in ("astronaut", "coffee"):
    path = folder / f"{name}.png"
    Image.fromarray(sample_photos()[name]).resize((96, 64)).save(path)
    files.append(str(path))
  return files


def _grey_model():
  """An untrained tiny model whose output sits mid-grey: nothing clips, so the least-squares
  identity below holds to rounding."""
  model = HiFiC(configs.get_config("tiny-hific").replace(stage="mselpips")).build_all()
  last = model.generator.tail.layers[-1]
  last.kernel.assign(last.kernel * 0.01)  # Random weights would spread it over 0..255.
  last.bias.assign([0.45, 0.5, 0.55])
  return model


def _mse(model, files):
  """Per-channel MSE in levels², the mean over the photos."""
  from hific_tf import images
  photos = [images.load_rgb(f) for f in files]
  return np.mean([((photo.astype(np.float64) - calibration._decoded(model, photo)) ** 2)
                  .reshape(-1, 3).mean(axis=0) for photo in photos], axis=0)


def test_removing_the_offset_leaves_none_and_lowers_mse_by_its_square(small_photos):
  model = _grey_model()
  offset = calibration.colour_offset(model, small_photos)
  assert np.all(np.abs(offset) > 5)  # Grey against two photos: far off, per channel.
  before = _mse(model, small_photos)
  calibration.remove_colour_offset(model, offset)
  after = calibration.colour_offset(model, small_photos)
  # Rounding to whole levels moves the mean residual by well under a level.
  np.testing.assert_array_less(np.abs(after), 0.5)
  # A constant c added to every pixel changes the per-channel MSE by c^2 - 2 c mean(r):
  # here -offset^2 (photos of equal size, so the pixel mean is the mean of photos' means).
  np.testing.assert_allclose(_mse(model, small_photos), before - offset ** 2, rtol=0.02,
                             atol=1.0)


def test_the_offset_is_refused_where_g_output_is_not_the_image():
  model = HiFiC(configs.get_config("tiny-hific").replace(
      stage="mselpips", input_range="signed")).build_all()
  with pytest.raises(UsageError, match="input_range"):
    calibration.remove_colour_offset(model, [1., 2., 3.])
