"""Reading any photo as RGB uint8 and writing files atomically.

A codec is judged on real files: grayscale, palette, RGBA, 16-bit PNGs and rotated phone
JPEGs must all arrive as the RGB pixels a viewer would show, and no output is ever left
half-written (a crash leaves the old file or nothing).
"""

import hashlib
import io
import os
import pathlib
import tempfile
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hific_tf.errors import HificError, OutputExistsError

# The one list of readable photo suffixes: training, compress and evaluate all use it, and all
# decode through `load_rgb` (Pillow), so whatever one accepts the others accept too.
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm",
            ".gif")
SUFFIXES_TEXT = "PNG, JPEG, WebP, BMP, TIFF, PPM/PGM or GIF"


def is_image_name(path):
  """Whether `path` has one of the photo suffixes (case-insensitive)."""
  return str(path).lower().endswith(SUFFIXES)


class ImageError(HificError, ValueError):
  """An input that is not a readable image; the message is one line for the CLI."""


def list_images(pattern):
  """Sorted image files matching a glob, or every image in a folder (by SUFFIXES)."""
  import glob
  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, "*")
  files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f) and is_image_name(f))
  if not files:
    raise ImageError(f"no images match '{pattern}' ({SUFFIXES_TEXT})")
  return files


def load_rgb(path, name=None):
  """uint8 [H, W, 3] with EXIF orientation applied; alpha is dropped with a warning.

  `path` may be a file object (an upload); `name` then labels it in error messages.
  """
  name = name or path
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      image.load()
  except Image.DecompressionBombError:
    raise ImageError(f"{name}: image too large to decode safely (more than "
                     f"{2 * Image.MAX_IMAGE_PIXELS} pixels)") from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
    raise ImageError(f"{name}: not a readable image ({error.__class__.__name__})") from None
  if image.mode in ("I;16", "I;16B", "I;16L", "I"):
    wide = np.asarray(image, dtype=np.float64)
    scale = 257. if wide.max(initial=0) > 255 or image.mode.startswith("I;16") else 1.
    gray = np.clip(np.round(wide / scale), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
  if image.mode in ("RGBA", "LA", "PA"):
    warnings.warn(f"{name}: alpha channel dropped (HiFiC codes RGB)", stacklevel=2)
  return np.asarray(image.convert("RGB"), dtype=np.uint8)


def bits_per_pixel(num_bytes, height, width):
  """The rate of a file of `num_bytes` for an image of height x width: 8 bytes / pixels.

  The one definition of bpp in hific_tf: .hific files, classical codecs and reports all use
  it, so rates compare whole files, headers included.
  """
  return 8. * num_bytes / (height * width)


def side_by_side(tiles):
  """One uint8 image of (label, image) tiles placed left to right, each label on a black box."""
  from PIL import ImageDraw
  canvas = Image.fromarray(np.concatenate([np.asarray(t, np.uint8) for _, t in tiles], axis=1))
  draw = ImageDraw.Draw(canvas)
  x = 0
  for label, tile in tiles:
    draw.rectangle([x, 0, x + 7 * len(label) + 8, 16], fill=(0, 0, 0))
    draw.text((x + 4, 2), label, fill=(255, 255, 255))
    x += tile.shape[1]
  return np.asarray(canvas)


def encode_png(array):
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def write_atomic(path, data, force=False):
  """Writes bytes to `path` through a temporary file in the same folder and a rename."""
  path = pathlib.Path(path)
  if path.exists() and not force:
    raise OutputExistsError(f"{path} exists (use --force to overwrite)")
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
  try:
    with os.fdopen(handle, "wb") as f:
      f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def sha256_of(path):
  """Hex SHA-256 of a file, read in 1 MB blocks (weights and checkpoints are large)."""
  digest = hashlib.sha256()
  with open(path, "rb") as stream:
    for block in iter(lambda: stream.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
