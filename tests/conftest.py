"""Shared fixtures: sample photos, and one tiny model trained and exported per pytest run.

Training goes through the real `hific` command in a subprocess, so every codec test runs on a
model produced the way users produce one.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO / "tests" / "data" / "reference"  # Official implementations' values; see its README.
TRAIN_STEPS = 30


def run_hific(*args, env=None, check=True, timeout=1800):
  """Runs `hific ARGS` in a fresh process; returns the CompletedProcess."""
  command = [sys.executable, "-m", "hific_tf.cli", *map(str, args)]
  full_env = dict(os.environ, **(env or {}))
  done = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout,
                        stdin=subprocess.DEVNULL)
  if check and done.returncode != 0:
    raise AssertionError(f"hific {' '.join(map(str, args))} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
  return done


def sample_photos():
  """scikit-image's bundled colour photos (no download), as name -> uint8 array."""
  import skimage.data
  names = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
           "immunohistochemistry"]
  return {name: getattr(skimage.data, name)() for name in names}


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("photos")
  for name, array in sample_photos().items():
    Image.fromarray(array).save(folder / f"{name}.png")
  return folder


@pytest.fixture(scope="session")
def stage1_dir(tmp_path_factory, photo_dir):
  model_dir = tmp_path_factory.mktemp("runs") / "stage1"
  run_hific("train", "--config", "tiny-mselpips", "--train_glob", f"{photo_dir}/*.png",
            "--steps", TRAIN_STEPS, "--checkpoint_every", 15, "--model_dir", model_dir)
  return model_dir


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, stage1_dir):
  out = tmp_path_factory.mktemp("export") / "codec"
  run_hific("export", "--model_dir", stage1_dir, "--out", out)
  return out


@pytest.fixture(scope="session")
def codec(saved_model):
  from hific_tf.serving.codec import SavedModelCodec
  return SavedModelCodec(saved_model)


def random_image(height, width, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


# Fixtures that train, export or serve a model: tests using them are end-to-end.
_END_TO_END_FIXTURES = {"stage1_dir", "saved_model", "codec", "serving_model", "server",
                        "other_model", "cache_env"}
_END_TO_END_CALLS = ("run_hific(", "subprocess.", "zoo.build_model", "zoo.load_codec",
                     "zoo.saved_model")


def pytest_collection_modifyitems(items):
  """Marks end-to-end tests (`-m "not e2e"` is `make check`, the fast unit tier).

  A test is end-to-end when it uses a trained or exported model, runs a process, or builds a
  bundled codec; the rest are unit tests of one part. Marking by what a test does, rather than
  by hand, keeps the fast tier honest as tests are added.
  """
  import inspect

  def source_of(function):
    try:
      return inspect.getsource(function)
    except (OSError, TypeError):
      return ""

  for item in items:
    function = getattr(item, "function", None)
    source = ""
    if function is not None:
      source = source_of(function)
      # Helpers of the same module that the test calls count as the test's own code.
      module = inspect.getmodule(function)
      for name in function.__code__.co_names:
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == function.__module__:
          source += source_of(helper)
    uses = set(getattr(item, "fixturenames", ()))
    if uses & _END_TO_END_FIXTURES or any(call in source for call in _END_TO_END_CALLS):
      item.add_marker(pytest.mark.e2e)
