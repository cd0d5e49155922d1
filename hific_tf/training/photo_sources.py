"""The photographs beyond the wallpaper packages: where each one lives and under which licence.

HiFiC's realism is learned from the textures of its training photos (Mentzer et al., NeurIPS
2020, train on 2 M OpenImages crops), and a codec trained on 24 scenes does not carry its
textures over to new kinds of scene. About 200 more licensed photographs ship inside Debian and
PyPI packages, most of them not as loose files: GCompris keeps its pictures in Qt resource
bundles, Enlightenment its backgrounds in Eet archives, the BBC's VC-2 conformance data its
frames as raw 16-bit planes. This module lists them (explicit lists, every file reviewed by
eye: automatic photo-or-drawing tests fail on blurred macros and night shots) and yields each
as pixels with its package, origin and licence.

Rules the lists follow:
- Photographs only: no drawings, renders, logos or screenshots (an alpha channel almost always
  means a drawing; lxqt's Valendas.png is the exception).
- A file stored with fewer than 0.3 bits per pixel (18 of GCompris's WebPs) is downscaled by 2
  first, so that the codec does not learn the first encoder's smoothing.
- A file without a licence note (GCompris's aulaPalatina) is left out, as are greyscale
  archive photos (castleClinton).
"""

import dataclasses
import io
import json
import pathlib
import re
import subprocess
import zipfile

import numpy as np
from PIL import Image

from hific_tf.errors import HificError
from hific_tf.training import archives

# Below this many bits per pixel a stored photo carries its encoder's smoothing.
SMOOTHED_BPP = 0.3


class SourceError(HificError):
  """A package could not be fetched or read; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Photo:
  """One photograph, decoded: pixels (uint8 HxWx3) and where it came from."""
  name: str  # Unique and file-name safe: SOURCE_STEM.
  pixels: np.ndarray
  package: str
  origin: str  # Path inside the package (and inside the archive).
  licence: str
  copyright: str
  stored_bpp: float  # Bits per pixel of the stored file (how compressed it was).


# --- Debian packages --------------------------------------------------------------------

# GCompris: resource bundle -> photographs in it (under gcompris/src/activities/NAME/resource/).
GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"
# Two bundles hold a giraffe and a horse each: names carry the bundle's prefix.
GCOMPRIS_PREFIX = {"explore_world_animals": "wild_", "explore_farm_animals": "farm_",
                   "explore_world_music": "music_"}
GCOMPRIS = {
    "erase": (
        "alpaca bee butterfly calf camels caterpillar chamaeleon cheetah crab dolphin "
        "flying_fox gibbon giraffe goat gorilla gosling heron horse kingfisher kitten "
        "long_nosed_monkey macaque meerkats northern_harrier nubian_ibex penguin pika "
        "red_panda rhinoceros spoonbills squirrel swans toucan"),
    "explore_world_animals": (
        "animals/bison animals/chameleon animals/crocodile animals/dragon animals/giraffe "
        "animals/hedgehog animals/jaguar animals/kangaroo animals/koala animals/lemur "
        "animals/moose animals/narwhal animals/panda animals/polar_bear animals/scarlet_macaw"),
    "explore_farm_animals": (
        "animals/cat animals/chicken animals/cow animals/dog animals/duck animals/horse "
        "animals/owl animals/pig animals/sheep"),
    "explore_monuments": (
        "egypt/bentPyramid egypt/greatPyramidOfGiza egypt/meidumPyramid egypt/redPyramid "
        "france/arlesAmphitheater france/chateaudeChambord france/chateaudeChenonceau "
        "france/citedeCarcassonne france/eiffelTower france/montStMichel france/palaisdesPapes "
        "france/pontduGard france/reimsCathedral france/rocamadour germany/berlinCathedral "
        "germany/brandenburgGate germany/neuschwansteinCastle germany/schwerinPalace "
        "germany/trierImperialBaths germany/wormsCathedral india/ajantaCave india/charminar "
        "india/gatewayofIndia india/goldenTemple india/greatStupa india/hawaMahal "
        "india/konarkSunTemple india/mysorePalace india/qutubMinar india/rangGhar "
        "india/victoriaMemorial usa/canyondeChelly usa/castillodeSanMarcos usa/fortSumter "
        "usa/georgeWashingtonBirthplace usa/lincolnMemorial usa/mountRushmore usa/navajo "
        "usa/statueofLiberty wonders/chichenItza wonders/christTheRedeemer wonders/colosseum "
        "wonders/greatWallofChina wonders/machuPicchu wonders/petra wonders/tajMahal"),
    "explore_world_music": (
        "music/africa music/america music/australia music/ireland music/italy music/japan "
        "music/mexico music/middleeast music/orchestra"),
    "clickgame": "sea1 sea2 sea3 sea4 sea5 sea6",
}

# Enlightenment: the photographic backgrounds (the other .edj files are illustrations).
ENLIGHTENMENT_DIR = "usr/share/enlightenment/data/backgrounds"
ENLIGHTENMENT = ("Bamboo Foggy-Trees God-Rays Green-Maple Lichen-Branches Mountain Peaks "
                 "Red-Maple Sea-of-Lanterns Snow-Trees Spruce-Needles Sunset-Clouds "
                 "White-Flower Yellow-Flower").split()

# Loose files: package -> (licence as its copyright file or folder states it, paths).
LOOSE_FILES = {
    "lxqt-themes": ("CC-BY-SA-3.0", (
        "usr/share/lxqt/wallpapers/Valendas.png usr/share/lxqt/wallpapers/after-the-rain.jpg "
        "usr/share/lxqt/wallpapers/appleflower.png usr/share/lxqt/wallpapers/beam.png "
        "usr/share/lxqt/wallpapers/butterfly.png usr/share/lxqt/wallpapers/cloud.png "
        "usr/share/lxqt/wallpapers/drop.png usr/share/lxqt/wallpapers/flowers.png "
        "usr/share/lxqt/wallpapers/fog.jpg usr/share/lxqt/wallpapers/this-is-not-windows.jpg "
        "usr/share/lxqt/wallpapers/Butterfly-Kenneth-Wimer.jpg")),
    "tuxpaint-data": ("GPL-2+", " ".join(
        f"usr/share/tuxpaint/templates/{name}.jpg" for name in (
            "burnt_bark cliff corn_maze jellyfish lighthouse mossy_bark mossy_log mudstone "
            "ocean_splash ocean_waves redwoods_above rocks sheep spiders_web sun_behind_clouds "
            "sun_behind_leaves trees_above trees_at_dusk wool_mill_machine").split())),
    "palapeli-data": ("(each photo's .desktop file)", " ".join(
        f"usr/share/palapeli/collection/{name}.jpg" for name in (
            "castle-maintenon cincinnati-bridge citrus-fruits european-honey-bee "
            "panther-chameleon-female").split())),
    "budgie-core": ("CC0-1.0", "usr/share/backgrounds/budgie/default.jpg"),
    "puzzle-jigsaw": ("CC0-1.0", (
        "usr/share/puzzle-jigsaw/samples/cat-animal-cat-portrait-mackerel.jpg "
        "usr/share/puzzle-jigsaw/samples/pexels-photo-302304.jpeg")),
    "scribus-template": ("public domain", (
        "usr/share/scribus/templates/br2/nature.jpg usr/share/scribus/templates/br2/sunset.jpg "
        "usr/share/scribus/templates/menu2/pizza.jpg usr/share/scribus/templates/cal2/moon.jpg")),
    "opencv-doc": ("Apache-2.0 AND BSD-3-Clause", " ".join(
        f"usr/share/doc/opencv-doc/examples/{name}" for name in (
            "data/aloeL.jpg data/building.jpg data/ela_original.jpg data/leuvenA.jpg "
            "data/baboon.jpg data/apple.jpg data/orange.jpg data/graf1.png data/chicky_512.png "
            "text/scenetext01.jpg text/scenetext02.jpg text/scenetext03.jpg "
            "text/scenetext04.jpg text/scenetext05.jpg").split())),
}

DEB_PACKAGES = ("gcompris-qt-data", "enlightenment-data", *LOOSE_FILES)

# --- PyPI packages ----------------------------------------------------------------------

# Wheel -> (licence, copyright, files inside it).
WHEELS = {
    "vc2-conformance-data==1.0.0": ("GPL-3.0-only", "BBC", (
        "vc2_conformance_data/berries.raw vc2_conformance_data/kingswood.raw "
        "vc2_conformance_data/trees.raw")),
    "scipy==1.9.3": ("BSD-3-Clause", "scipy developers", "scipy/misc/face.dat"),
    "imgaug==0.4.0": ("MIT", "imgaug developers", "imgaug/quokka.jpg"),
    "matplotlib==3.8.4": ("PSF-based matplotlib licence (public-domain photo, US Navy)",
                          "Matplotlib Development Team",
                          "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
}


def _stem(path):
  return re.sub(r"[^A-Za-z0-9_-]", "_", pathlib.PurePosixPath(path).stem)


def _decode(data, origin):
  try:
    with Image.open(io.BytesIO(data)) as image:
      return np.asarray(image.convert("RGB"))
  except Exception as error:  # Pillow raises many types for a broken file.
    raise SourceError(f"{origin} does not decode as an image ({error})") from None


def _photo(name, data, package, origin, licence, copyright_):
  pixels = _decode(data, origin)
  bpp = 8 * len(data) / (pixels.shape[0] * pixels.shape[1])
  if bpp < SMOOTHED_BPP:
    height, width = pixels.shape[:2]
    pixels = np.asarray(Image.fromarray(pixels).resize((width // 2, height // 2),
                                                       Image.LANCZOS))
  return Photo(name, pixels, package, origin, licence, copyright_, bpp)


def gcompris_licences(readme):
  """{file name: (copyright, licence)} from a GCompris resource README's stanzas."""
  found = {}
  for stanza in re.split(r"\n\s*\n", readme):
    fields = dict(re.findall(r"^(Copyright|License|Source):[ \t]*(.*)$", stanza, re.M))
    files = re.search(r"^Files:(.*)", stanza, re.M | re.S)
    if not files or "License" not in fields:
      continue
    for name in files.group(1).split():
      found[name] = (fields.get("Copyright", ""), fields["License"])
  return found


def gcompris_photos(root):
  for bundle, names in GCOMPRIS.items():
    path = pathlib.Path(root) / GCOMPRIS_RCC / f"{bundle}.rcc"
    files = archives.read_qt_resources(path)
    prefix = f"gcompris/src/activities/{bundle}/resource/"
    readmes = {pathlib.PurePosixPath(key).parent: value for key, value in files.items()
               if key.startswith(prefix) and key.endswith("README")}
    for name in names.split():
      key = f"{prefix}{name}.webp"
      if key not in files:
        raise SourceError(f"{bundle}.rcc has no {name}.webp")
      # The nearest README above the photo names it by its path from the README's folder.
      file = pathlib.PurePosixPath(key)
      folder = next((f for f in sorted(readmes, key=lambda f: -len(f.parts))
                     if f in file.parents), None)
      notes = gcompris_licences(readmes[folder].decode("utf-8", "replace")) if folder else {}
      relative = str(file.relative_to(folder)) if folder else file.name
      if relative not in notes:
        raise SourceError(f"{key} has no licence note in its README")
      copyright_, licence = notes[relative]
      prefix_name = GCOMPRIS_PREFIX.get(bundle, "")
      yield _photo(f"gcompris_{prefix_name}{_stem(name)}", files[key], "gcompris-qt-data",
                   f"{GCOMPRIS_RCC}/{bundle}.rcc:{key}", licence, copyright_)


def enlightenment_photos(root):
  for name in ENLIGHTENMENT:
    path = pathlib.Path(root) / ENLIGHTENMENT_DIR / f"{name}.edj"
    jpegs = {key: value for key, value in archives.read_eet(path).items()
             if value[:3] == b"\xff\xd8\xff"}
    if not jpegs:
      raise SourceError(f"{path.name} holds no stored JPEG")
    key = max(jpegs, key=lambda k: len(jpegs[k]))  # The full-size copy.
    yield _photo(f"enlightenment_{_stem(name)}", jpegs[key], "enlightenment-data",
                 f"{ENLIGHTENMENT_DIR}/{name}.edj:{key}", "BSD-2-clause",
                 "Enlightenment developers")


def loose_photos(root):
  for package, (licence, paths) in LOOSE_FILES.items():
    for relative in paths.split():
      path = pathlib.Path(root) / relative
      if not path.is_file():
        raise SourceError(f"{relative} is missing from the unpacked {package}")
      copyright_ = f"see /usr/share/doc/{package}/copyright"
      desktop = path.with_suffix(".desktop")  # Palapeli names each photo's author and licence.
      if desktop.is_file():
        fields = dict(re.findall(r"^X-KDE-PluginInfo-(Author|License)=(.*)$",
                                 desktop.read_text("utf-8", "replace"), re.M))
        licence, copyright_ = fields.get("License", licence), fields.get("Author", copyright_)
      yield _photo(f"{package.split('-')[0]}_{_stem(relative)}", path.read_bytes(), package,
                   relative, licence, copyright_)


def _vc2_frame(raw, meta):
  """A VC-2 conformance frame: planar little-endian uint16 in the plane order G, B, R."""
  video = json.loads(meta)["video_parameters"]
  width, height = video["frame_width"], video["frame_height"]
  planes = np.frombuffer(raw, dtype="<u2")
  if planes.size != 3 * width * height:
    raise SourceError(f"a VC-2 frame of {planes.size} samples is not {width}x{height}x3")
  green, blue, red = planes.reshape(3, height, width)
  return (np.stack([red, green, blue], axis=-1) >> 8).astype(np.uint8)


def _raw_photo(name, pixels, package, origin, licence, copyright_):
  return Photo(name, pixels, package, origin, licence, copyright_, stored_bpp=48.0)


def wheel_photos(wheels_dir):
  wheels_dir = pathlib.Path(wheels_dir)
  for requirement, (licence, copyright_, paths) in WHEELS.items():
    project, version = requirement.split("==")
    found = sorted(wheels_dir.glob(f"{project.replace('-', '_')}-{version}-*.whl"))
    if not found:
      raise SourceError(f"no wheel of {requirement} in {wheels_dir}")
    with zipfile.ZipFile(found[-1]) as wheel:
      for relative in paths.split():
        data = wheel.read(relative)
        name = f"{project.split('-')[0]}_{_stem(relative)}"
        if relative.endswith(".raw"):
          meta = wheel.read(relative[:-4] + ".json")
          yield _raw_photo(name, _vc2_frame(data, meta), requirement, relative, licence,
                           copyright_)
        elif relative.endswith(".dat"):  # scipy's face: bz2 of a 768x1024x3 pickle-free array.
          import bz2
          pixels = np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(768, 1024, 3)
          yield _raw_photo(name, pixels, requirement, relative, licence, copyright_)
        else:
          yield _photo(name, data, requirement, relative, licence, copyright_)


def download_wheels(wheels_dir, pip=("python", "-m", "pip")):
  """pip download --no-deps of every wheel in WHEELS not yet in wheels_dir."""
  wheels_dir = pathlib.Path(wheels_dir)
  wheels_dir.mkdir(parents=True, exist_ok=True)
  for requirement in WHEELS:
    project, version = requirement.split("==")
    if sorted(wheels_dir.glob(f"{project.replace('-', '_')}-{version}-*.whl")):
      continue
    done = subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary", ":all:",
                           "-d", str(wheels_dir), requirement], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
      last = (done.stderr.strip().splitlines() or ["no output"])[-1]
      raise SourceError(f"pip download {requirement} failed ({last})")


def all_photos(deb_root, wheels_dir):
  """Every photograph of these sources, in a fixed order."""
  yield from gcompris_photos(deb_root)
  yield from enlightenment_photos(deb_root)
  yield from loose_photos(deb_root)
  yield from wheel_photos(wheels_dir)
