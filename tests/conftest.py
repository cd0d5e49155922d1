"""Shared fixtures: sample photos, and one tiny model trained and exported per pytest run.

Training goes through the real `hific` command in a subprocess, so every codec test runs on a
model produced the way users produce one.
"""

import contextlib
import fcntl
import io
import os
import pathlib
import shutil
import subprocess
import sys
import types
import warnings

import numpy as np
from PIL import Image
import pytest

# Before any test module imports TensorFlow: the kernels are chosen as the library chooses
# them, whatever order the modules are collected in (the choice is process-wide).
from hific_tf import runtime  # noqa: F401  pylint: disable=unused-import

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


def hific_here(*args, env=None, check=True):
  """Runs `hific ARGS` in this process: for checks whose point is the command's answer (exit
  code, one-line error, output), not a fresh process, it saves starting Python and TensorFlow.
  `env` is set for the call and restored after it."""
  from hific_tf.cli import main as cli_main
  saved = {key: os.environ.get(key) for key in env or {}}
  os.environ.update({key: str(value) for key, value in (env or {}).items()})
  out, err = io.StringIO(), io.StringIO()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
        warnings.catch_warnings():
      code = cli_main.run(["hific", *map(str, args)])
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
  done = types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
  if check and code != 0:
    raise AssertionError(f"hific {' '.join(map(str, args))} failed ({code}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
  return done


def built_once(tmp_path_factory, name, build):
  """A folder that `build(folder)` makes once per test run, shared by every pytest worker.

  Fixtures that train or export a model cost tens of seconds; with `pytest -n 2` each worker
  would build its own. The first worker to ask builds under a lock in the run's shared temp
  folder; the others wait and reuse it.
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # Shared by the workers of this run.
  folder, done = base / f"shared-{name}", base / f"shared-{name}.done"
  with open(base / f"shared-{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir(parents=True)
      build(folder)
      done.touch()
  return folder


def sample_photos():
  """scikit-image's bundled colour photos (no download), as name -> uint8 array."""
  import skimage.data
  names = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
           "immunohistochemistry"]
  return {name: getattr(skimage.data, name)() for name in names}


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
  def build(folder):
    for name, array in sample_photos().items():
      Image.fromarray(array).save(folder / f"{name}.png")
  return built_once(tmp_path_factory, "photos", build)


@pytest.fixture(scope="session")
def stage1_dir(tmp_path_factory, photo_dir):
  def build(folder):
    run_hific("train", "--config", "tiny-mselpips", "--train_glob", f"{photo_dir}/*.png",
              "--steps", TRAIN_STEPS, "--checkpoint_every", 15, "--model_dir", folder / "run")
  return built_once(tmp_path_factory, "stage1", build) / "run"


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, stage1_dir):
  def build(folder):
    run_hific("export", "--model_dir", stage1_dir, "--out", folder / "codec")
  return built_once(tmp_path_factory, "export", build) / "codec"


@pytest.fixture(scope="session")
def serving_model(tmp_path_factory, stage1_dir):
  def build(folder):
    run_hific("export", "--model_dir", stage1_dir, "--out", folder / "transforms", "--serving")
  return built_once(tmp_path_factory, "serving", build) / "transforms"


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory, stage1_dir):
  def build(folder):
    run_hific("export", "--model_dir", stage1_dir, "--out", folder / "codec", "--tflite")
  return built_once(tmp_path_factory, "tflite", build) / "codec"


@pytest.fixture(scope="session")
def cache_env(tmp_path_factory):
  """A fresh user cache for the run: every bundled SavedModel is built on first use, as for a
  new user, once per run; the LPIPS and Inception weights are still found where they are."""
  from hific_tf.measure import weights
  return {"XDG_CACHE_HOME": str(built_once(tmp_path_factory, "cache", lambda folder: None)),
          "HIFIC_WEIGHTS_DIR": str(weights.cache_dir())}


@pytest.fixture(scope="session")
def codec(saved_model):
  from hific_tf.serving.codec import SavedModelCodec
  return SavedModelCodec(saved_model)


def random_image(height, width, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


# Fixtures that train, export or serve a model: tests using them are end-to-end.
_END_TO_END_FIXTURES = {"stage1_dir", "saved_model", "codec", "serving_model", "tflite_model",
                        "server", "other_model", "cache_env"}
_END_TO_END_CALLS = ("run_hific(", "hific_here(", "subprocess.", "zoo.build_model", "zoo.load_codec",
                     "zoo.saved_model")


# The costliest modules first (their share of a one-worker run), so that `make test`'s two
# workers, which take whole modules in this order (--dist loadfile), finish together.
MODULE_ORDER = ("test_import", "test_training", "test_decoder_stage", "test_codec", "test_zoo",
                "test_effort", "test_compat", "test_sources",
                "test_server", "test_rates", "test_serving", "test_tflite", "test_evaluation",
                "test_fuzz",
                "test_lpips")


def pytest_collection_modifyitems(items):
  """Puts the costliest modules first, and marks end-to-end tests (`-m "not e2e"` is
  `make check`, the fast unit tier).

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

  def rank(item):
    name = pathlib.Path(str(item.fspath)).stem
    return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)
  items.sort(key=rank)  # Stable: tests keep their order within a module.
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
