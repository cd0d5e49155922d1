"""Training and held-out photos, assembled offline and reproducibly from Debian packages.

HiFiC (Mentzer et al., NeurIPS 2020) trains on large natural photos; none of the paper's sets
(OpenImages, CLIC, DIV2K) can be fetched here. Debian ships licensed photographs as desktop
wallpapers, and scikit-image ships a few sample photos, so `hific data` builds a training set
from those alone: `apt-get download` and `dpkg -x`, no other network access.

Only photographs are taken (the packages also hold illustrations and gradients, which teach a
photo codec the wrong statistics); the list is fixed here so that every machine builds the
same set. A fixed split of natural photos is held out: it never enters training and is what
`make demo` and the shipped figures are measured on. Each photo is decoded and downscaled once
and written as PNG (the cache the training pipeline crops from), with its source and licence
in SOURCES.tsv.
"""

import csv
import gzip
import io
import pathlib
import re
import subprocess
import tempfile

import numpy as np
from PIL import Image

from hific_tf import images as images_lib
from hific_tf.errors import HificError, OutputExistsError

# Debian packages whose photographs may be used (others are reserved for independent checks).
PACKAGES = ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "mate-backgrounds",
            "ukui-wallpapers", "gnome-backgrounds")

# The photographs in those packages, by path under /usr/share/backgrounds. The rest of each
# package is illustrations and gradients (and gnome-backgrounds 43 holds no photograph).
PHOTOS = (
    "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Infinite-Sea_by_Aury88.jpg",
    "Kleiber_by_Lukas_Baubkus.jpg", "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg", "analogpattern_by_Peter_Nerlich.jpg",
    "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
    "mate/nature/Aqua.jpg", "mate/nature/Blinds.jpg", "mate/nature/Dune.jpg",
    "mate/nature/FreshFlower.jpg", "mate/nature/Garden.jpg", "mate/nature/GreenMeadow.jpg",
    "mate/nature/LadyBird.jpg", "mate/nature/RainDrops.jpg", "mate/nature/Storm.jpg",
    "mate/nature/TwoWings.jpg", "mate/nature/Wood.jpg", "mate/nature/YellowFlower.jpg",
)
# scikit-image's bundled photographs (name -> licence, from skimage/data/README.txt).
SKIMAGE_PHOTOS = {
    "astronaut.png": "public domain (NASA)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "rocket.jpg": "public domain (NASA)",
    "motorcycle_left.png": "Middlebury stereo data set (research use)",
}
# Never trained on: a mix of textures, faces of objects, landscapes, macro and night.
HELD_OUT = ("Bridge_by_Sander_Klootwijk.jpg", "Kleiber_by_Lukas_Baubkus.jpg",
            "Picture_0B_by_freespace.jpg", "life_by_Aitzol_Berasategi.jpg",
            "sunset_by_Aitzol_Berasategi.jpg", "mate/nature/LadyBird.jpg",
            "mate/nature/YellowFlower.jpg", "mate/nature/Dune.jpg", "coffee.png")

# Training photos are cached at two scales (shorter side in pixels) so that 256-pixel crops
# see both close-ups and whole scenes; held-out photos are scaled to fit 768x512, the size of
# the usual test sets (Kodak), so that a whole-image evaluation runs in seconds.
TRAIN_SHORT_SIDES = (640, 1024)
HELD_OUT_BOX = (768, 768)
HELD_OUT_SHORT_SIDE = 512


class PhotoDataError(HificError):
  """A package could not be fetched or unpacked; the message is one line."""


def _safe_name(relative):
  return re.sub(r"[^A-Za-z0-9_.-]", "_", pathlib.PurePosixPath(relative).stem)


def _licences(copyright_text):
  """{basename: (copyright, licence)} from a Debian machine-readable copyright file."""
  found = {}
  for stanza in re.split(r"\n\s*\n", copyright_text):
    fields = dict(re.findall(r"^(Files|Copyright|License):[ \t]*(.*)$", stanza, re.M))
    if "Files" in fields and "License" in fields:
      for pattern in fields["Files"].split():
        found[pathlib.PurePosixPath(pattern).name] = (fields.get("Copyright", ""),
                                                      fields["License"])
  return found


def _read_copyright(root, package):
  path = root / "usr/share/doc" / package / "copyright"
  if not path.is_file():
    gz = path.with_suffix(".gz")
    return gzip.decompress(gz.read_bytes()).decode("utf-8", "replace") if gz.is_file() else ""
  return path.read_text("utf-8", "replace")


def unpack_packages(work_dir, debs_dir=None):
  """Downloads (unless found in `debs_dir`) and unpacks PACKAGES; returns the unpacked root."""
  work_dir = pathlib.Path(work_dir)
  debs = pathlib.Path(debs_dir) if debs_dir else work_dir / "debs"
  debs.mkdir(parents=True, exist_ok=True)
  root = work_dir / "root"
  for package in PACKAGES:
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
      result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True,
                              text=True, check=False)
      found = sorted(debs.glob(f"{package}_*.deb"))
      if not found:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PhotoDataError(f"apt-get download {package} failed ({last}); run "
                             "`apt-get update` first, or pass --debs with the .deb files")
    subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
  return root


def _resize_short_side(array, short_side):
  """Antialiased downscale so that the shorter side is `short_side` (never upscales)."""
  height, width = array.shape[:2]
  scale = short_side / min(height, width)
  if scale >= 1:
    return array
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  return np.asarray(Image.fromarray(array).resize(size, Image.LANCZOS))


def _fit_box(array, box, short_side):
  """Held-out size: shorter side `short_side`, longer side at most box (centre crop)."""
  array = _resize_short_side(array, short_side)
  height, width = array.shape[:2]
  if height > width:
    limit = box[0]
    top = (height - limit) // 2 if height > limit else 0
    return array[top:top + limit]
  limit = box[1]
  left = (width - limit) // 2 if width > limit else 0
  return array[:, left:left + limit]


def fit_heldout(array):
  """An image scaled and cut as the held-out photos are (512-pixel short side, <= 768 wide)."""
  return _fit_box(array, HELD_OUT_BOX, HELD_OUT_SHORT_SIDE)


def _sources(root):
  """(relative name, path, package, copyright, licence) for every photo, in a fixed order."""
  backgrounds = root / "usr/share/backgrounds"
  licences = {}
  owners = {}
  for package in PACKAGES:
    for name, value in _licences(_read_copyright(root, package)).items():
      licences.setdefault(name, value)
      owners.setdefault(name, package)
  for relative in PHOTOS:
    path = backgrounds / relative
    if not path.is_file():
      raise PhotoDataError(f"{relative} is missing from the unpacked packages")
    base = pathlib.PurePosixPath(relative).name
    copyright_, licence = licences.get(base, ("see the package's copyright file", ""))
    package = owners.get(base, "mate-backgrounds" if relative.startswith("mate/")
                         else "lomiri-wallpapers-20.04")
    if relative.startswith("mate/") and not licence:
      licence = "GPL-2+"
    yield relative, path, package, copyright_, licence
  import skimage  # Heavy; only the data builder needs it.
  skimage_dir = pathlib.Path(skimage.__file__).parent / "data"
  for name, licence in SKIMAGE_PHOTOS.items():
    yield name, skimage_dir / name, f"scikit-image {skimage.__version__}", "", licence


def assemble(out_dir, debs_dir=None, force=False, log=print):
  """Builds out_dir/train, out_dir/heldout and out_dir/SOURCES.tsv; returns the file counts."""
  out_dir = pathlib.Path(out_dir)
  if (out_dir / "SOURCES.tsv").exists() and not force:
    raise OutputExistsError(f"{out_dir} already holds a data set (use --force to rebuild)")
  rows = []
  counts = {"train": 0, "heldout": 0}
  with tempfile.TemporaryDirectory(prefix="hific-data-") as tmp:
    root = unpack_packages(tmp, debs_dir)
    for relative, path, package, copyright_, licence in _sources(root):
      pixels = images_lib.load_rgb(path)
      split = "heldout" if relative in HELD_OUT else "train"
      if split == "heldout":
        variants = [(_safe_name(relative), fit_heldout(pixels))]
      else:
        variants = [(f"{_safe_name(relative)}_s{side}", _resize_short_side(pixels, side))
                    for side in TRAIN_SHORT_SIDES]
        # Small photos (scikit-image's) would repeat at both scales; keep one.
        variants = list({v[1].shape: v for v in variants}.values())
      for name, array in variants:
        target = out_dir / split / f"{name}.png"
        images_lib.write_atomic(target, images_lib.encode_png(array), force=True)
        rows.append((f"{split}/{name}.png", split, package, relative, f"{array.shape[1]}x"
                     f"{array.shape[0]}", licence, copyright_.replace("\t", " ")))
        counts[split] += 1
      log(f"{split:8s} {relative}")
  buffer = io.StringIO()
  writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
  writer.writerow(("file", "split", "package", "source", "size", "licence", "copyright"))
  writer.writerows(rows)
  images_lib.write_atomic(out_dir / "SOURCES.tsv", buffer.getvalue().encode(), force=True)
  return counts

