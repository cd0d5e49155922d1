"""Exporting a trained HiFiC as a SavedModel codec, and using one.

The SavedModel holds two signatures, `compress` (uint8 [H, W, 3] and a rate -> strings and
shapes) and `decompress` (strings, shapes and the rate -> uint8 [H, W, 3]), plus `model_info`
(JSON: config, fingerprint). The rate is a float, 0 for the model's own rate
(models/hific/gains.py). It
loads in a process that imports only tensorflow and tensorflow_compression (for the range
coding ops): no hific_tf needed to serve it.

Any image size works: HiFiC.compress reflect-pads to a multiple of the total downsampling
(z is at 1/64) and decompress crops back. The hyperprior stays float32 even when the
generator runs in bfloat16, so both sides derive identical scale indexes from z_hat.
"""

import json
import os
import pathlib
import shutil
import tempfile

import tensorflow as tf
import tensorflow_compression  # noqa: F401  (registers the range-coding ops SavedModels use)

from hific_tf import bitstream, geometry
from hific_tf.errors import InvalidModelError, UsageError
from hific_tf.models import sources
from hific_tf.models.hific import stored_weights
from hific_tf.serving import guard, split, windows

# What an exported SavedModel contains, beyond the weights: the cache of bundled codecs keys
# on it, so a newer hific_tf rebuilds SavedModels that lack its functions. 2: tiled pieces,
# estimate_bits apart from compress; 3: a bfloat16 generator holds bfloat16 weights; 4: every
# coding function takes the rate, and `analyze` gives y for a search over rates; 5: a decoder
# with the realism knob adds `decompress_realism` and `synthesis_trunk_realism`; 6: the
# `--serving` export's analysis, hyper_synthesis and synthesis take the image (symbols) alone
# again, at rate 0, and the rate-taking ones are `*_at_rate`.
EXPORT_VERSION = 6


class CodecModule(tf.Module):
  """What `hific export` saves: the codec parts of a trained HiFiC, its signatures, and the
  pieces of the tiled path.

  The codec contract (compress, decompress, estimate_bits) is the model's own tf.functions;
  this module chooses what is saved (no discriminator, no LPIPS, no optimizer state) and
  adds the tiled path's pieces: images larger than one window go through the encoder and
  the generator's tail window by window, so that memory grows with the window, not with
  the image. Channel counts are left open in the signatures; the layers are built.
  """

  def __init__(self, model, info):
    super().__init__(name="hific_codec")
    self.encoder = model.encoder
    self.generator = model.generator
    self.hyperprior = model.hyperprior
    self.rate_gains = model.rate_gains
    self.hyperprior.build_coders()
    self.model_info = tf.Variable(json.dumps(info), trainable=False, name="model_info")
    self.compress = model.compress
    self.decompress = model.decompress
    self.estimate_bits = model.estimate_bits
    # Bound methods are not tracked: the SavedModel holds the parts above, not the model.
    self._encode, self._compress_y, self._image_from, self._pad_image = (
        model.encode, model.compress_y, model.image_from, model.pad_image)
    self._analyze, self._decompress_y = model.analyze, model.decompress_y
    if model.realism is not None:
      self.realism = model.realism
      self.decompress_realism = model.decompress_realism
      self._realism_biases = model.realism_biases
      self.synthesis_trunk_realism = tf.function(self._trunk_at_realism, input_signature=[
          tf.TensorSpec([1, None, None, None], tf.float32), tf.TensorSpec([], tf.float32)])

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  def analyze(self, image):
    """y of a whole image as `compress` codes it: a search over rates encodes once."""
    return {"y": self._analyze(image)}

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  def pad_image(self, image):
    """The padded image the encoder sees (windows of it go to `analysis_window`)."""
    return {"padded": self._pad_image(image)}

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  def analysis_window(self, window):
    """E on a window of the padded image, at offsets and sides that are multiples of 16."""
    return {"y": self._encode(window)}

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float32),
                                tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.float32)])
  def compress_latents(self, y, image_shape, rate):
    """`compress` from y on: range-codes a y assembled from windows (or searched) at `rate`."""
    return self._compress_y(y, image_shape, rate)

  @tf.function(input_signature=[
      tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int32),
      tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.float32)])
  def decompress_latents(self, y_string, z_string, y_shape, z_shape, rate):
    """`decompress` up to y_hat."""
    return {"y_hat": self._decompress_y(y_string, z_string, y_shape, z_shape, rate)}

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float32)])
  def synthesis_trunk(self, y_hat):
    """G's 1/16-resolution trunk (float32 out; a bfloat16 trunk's values convert exactly)."""
    return {"features": tf.cast(self.generator.trunk(y_hat), tf.float32)}

  def _trunk_at_realism(self, y_hat, realism):
    """`synthesis_trunk` at realism R (decoders with the knob only)."""
    biases = self._realism_biases(realism)
    return {"features": tf.cast(self.generator.trunk(y_hat, biases), tf.float32)}

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float32)])
  def synthesis_window(self, features):
    """G's full-resolution tail on a window of the trunk's output -> uint8 pixels."""
    reconstruction = self._image_from(self.generator.upsample(features))[0]
    return {"image": tf.saturate_cast(tf.round(reconstruction * 255.), tf.uint8)}


# The export info beside the SavedModel, readable without TensorFlow (assets.extra is the
# SavedModel's place for files that serving ignores): the CLI reads the compute types from it
# before TensorFlow loads, to pick kernels that can run them (runtime.kernels_for_bfloat16).
INFO_FILE = sources.EXPORT_INFO

# What `hific export` can write: the full codec SavedModel; the stock-op transforms for stock
# TF Serving, range coding in the client (split.py); E and G as TFLite models (tflite.py).
EXPORT_KINDS = ("codec", "serving", "tflite")


def export(model, directory, kind="codec", tflite_weights="float32"):
  """Writes the codec of `kind` (EXPORT_KINDS); returns its info dict. Builds the coding
  tables (seconds)."""
  if kind not in EXPORT_KINDS:
    raise UsageError(f"kind must be one of {EXPORT_KINDS}, got {kind!r}")
  info = {
      "format": "hific_tf codec",
      "kind": kind,
      "container_version": bitstream.VERSION,
      "export_version": EXPORT_VERSION,
      "config_name": model.config.name,
      "fingerprint": stored_weights.fingerprint(model).hex(),
      # As built: a bfloat16 generator decodes faster; a bfloat16 encoder encodes faster.
      "generator_dtype": model.generator.dtype_policy.name,
      "encoder_dtype": model.encoder.layers[0].dtype_policy.name,
      "config": json.loads(model.config.to_json()),
      "pad_multiple": geometry.PAD_MULTIPLE,
      "latent_downsampling": geometry.LATENT_DOWNSAMPLING,
  }
  if kind == "tflite":
    from hific_tf.serving import tflite
    return tflite.export_tflite(model, directory, info, tflite_weights)
  if kind == "serving":
    info = split.export_serving(model, directory, info)
  else:
    module = CodecModule(model, info)
    signatures = {"compress": module.compress.get_concrete_function(),
                  "decompress": module.decompress.get_concrete_function()}
    if model.realism is not None:
      signatures["decompress_realism"] = module.decompress_realism.get_concrete_function()
    tf.saved_model.save(module, str(directory), signatures=signatures)
  (pathlib.Path(directory) / INFO_FILE).parent.mkdir(exist_ok=True)
  (pathlib.Path(directory) / INFO_FILE).write_text(json.dumps(info, indent=1))
  return info


def export_to(model, target, replace=False, **kinds):
  """Exports into a staging folder beside `target`, then renames it into place.

  Nobody ever sees a half-written SavedModel. With `replace`, an existing `target` is
  removed first; without, a `target` that another process completed meanwhile is kept.
  Returns the info dict; `kinds` are `export`'s.
  """
  target = pathlib.Path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
  try:
    info = export(model, staging, **kinds)
    if replace and target.exists():
      shutil.rmtree(target)
    try:
      os.replace(staging, target)
    except OSError:
      if replace or not (target / "saved_model.pb").is_file():
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return info


class SavedModelCodec(guard.GuardedDecoder):
  """A loaded codec SavedModel, turning images into `HificFile`s and back.

  `tile` (pixels, a multiple of 16) sets the window of the tiled path: None picks it from the
  image size (whole image up to windows.AUTO_TILE_PIXELS, else windows.DEFAULT_TILE), 0 never tiles. Tiled
  and whole-image outputs are the same computation; docs/PERFORMANCE.md states how close
  they come in floating point.
  """

  def __init__(self, directory, max_pixels=bitstream.DEFAULT_MAX_PIXELS, tile=None):
    try:
      self.module = tf.saved_model.load(str(directory))
      info = json.loads(self.module.model_info.numpy().decode())
      self.directory = str(directory)
    except (OSError, IOError, AttributeError, ValueError) as error:
      raise InvalidModelError(
          f"{directory}: not a hific SavedModel ({error.__class__.__name__})") from None
    self._read_info(info, max_pixels)
    self.tile = windows.checked_tile(tile)
    self.has_realism = hasattr(self.module, "decompress_realism")
    # SavedModels exported before tiling existed have no pieces: they decode whole.
    self.can_tile = hasattr(self.module, "synthesis_window")

  def _tile_latents(self, height, width):
    """Core tile side in latents for this image size, or None for the whole-image path."""
    if not self.can_tile:
      return None
    return windows.tile_core(height, width, self.tile, self.pad_multiple, self.latent_downsampling)

  def _analyze_tiled(self, image, core):
    """y of the whole padded image, computed window by window."""
    padded = self.module.pad_image(tf.constant(image, tf.uint8))["padded"].numpy()
    return windows.analyze_in_windows(
        padded, lambda window: self.module.analysis_window(tf.constant(window))["y"].numpy(),
        core, self.latent_downsampling)

  def _synthesize_tiled(self, y_hat, hific_file, core, realism):
    """The decoded image, G's full-resolution tail run window by window."""
    if self.has_realism:
      features = self.module.synthesis_trunk_realism(
          y_hat, tf.constant(realism, tf.float32))["features"].numpy()
    else:
      features = self.module.synthesis_trunk(y_hat)["features"].numpy()
    del y_hat
    image = windows.synthesize_in_windows(
        features,
        lambda part: self.module.synthesis_window(tf.constant(part))["image"].numpy(),
        core, self.latent_downsampling)
    return image[:hific_file.height, :hific_file.width]

  # Set by resolve.load_codec for sources with Keras weights (models/sources.py): where the
  # Keras model that `effort` searches latents with comes from (a SavedModel has none).
  effort_source = None
  _latent_search = None

  def _search_latents(self, image, effort, deadline, progress, rate=0.):
    """y of `image` after the effort's latent search at `rate` (latent_search.py)."""
    from hific_tf.models.hific import latent_search
    iterations = latent_search.iterations_for(effort)
    if self.effort_source is None:
      raise UsageError(f"--effort {effort} needs a codec with weights (a bundled codec, codec "
                       "folder, model_dir or weights file: it searches through the Keras "
                       "model; an exported folder has none)")
    if image.shape[0] * image.shape[1] > windows.AUTO_TILE_PIXELS:
      raise UsageError(f"--effort {effort} works on images up to "
                       f"{windows.AUTO_TILE_PIXELS / 1e6:.1f} MP (this one is "
                       f"{image.shape[1]}x{image.shape[0]}); use --effort 0")
    if self._latent_search is None:
      from hific_tf.measure.lpips import LPIPS
      model = sources.build_model(self.effort_source)
      self._latent_search = latent_search.LatentSearch(model, LPIPS(model.config.lpips_net))
    y, _ = self._latent_search.search(image, iterations, deadline, progress, rate=rate)
    return y

  def latents(self, image, effort=0, deadline=None, progress=None, rate=0.):
    """y of `image` as `compress` codes it: searched (`effort`, for the quantizer of
    `rate`), window by window, or whole.

    A search over rates (serving/rate_control.py) encodes once and range-codes E's y at
    each rate it tries; the effort search then runs once, at the rate found.
    """
    bitstream.check_image_size(image.shape[0], image.shape[1], self.max_pixels)
    if effort:
      return tf.constant(self._search_latents(image, effort, deadline, progress, rate))
    core = self._tile_latents(*image.shape[:2])
    if core is None:
      if not self.takes_rate:
        raise UsageError(f"{self.directory} was exported before rate searches (export "
                         "version < 4): export it again with this hific_tf")
      return self.module.analyze(tf.constant(image, tf.uint8))["y"]
    return tf.constant(self._analyze_tiled(image, core))

  def code_latents(self, y, image_shape, rate=0.):
    """Range-codes `latents(...)` of an image of `image_shape` at `rate` -> HificFile."""
    rate = self.checked_rate(rate)
    out = self.module.compress_latents(y, tf.constant(image_shape[:2], tf.int32),
                                       *self.rate_args(rate))
    return self._file_from(out, rate)

  def _file_from(self, out, rate):
    return bitstream.HificFile(
        self.config_name, self.fingerprint, int(out["image_shape"][0]),
        int(out["image_shape"][1]), tuple(int(v) for v in out["y_shape"].numpy()),
        tuple(int(v) for v in out["z_shape"].numpy()), out["y_string"].numpy(),
        out["z_string"].numpy(), rate)

  def compress(self, image, with_estimate=False, effort=0, deadline=None, progress=None,
               rate=None):
    """uint8 [H, W, 3] -> HificFile (and the model's estimate of its bits, if asked).

    `effort` > 0 searches the latents first (latent_search.ITERATIONS steps; `deadline`, a
    time.monotonic() value, bounds it); the file decodes with every decoder of this codec.
    `rate` (0: the model's own) scales the quantization gain by 2^rate (gains.py).
    """
    rate = self.checked_rate(rate)
    bitstream.check_image_size(image.shape[0], image.shape[1], self.max_pixels)
    out = None
    if not effort and self._tile_latents(*image.shape[:2]) is None:
      out = self.module.compress(tf.constant(image, tf.uint8), *self.rate_args(rate))
      hific_file = self._file_from(out, rate)
    elif not effort:
      hific_file = self.code_latents(self.latents(image), image.shape, rate)
    else:
      hific_file = self.code_latents(self.latents(image, effort, deadline, progress, rate),
                                     image.shape, rate)
      # The search bounds the entropy models' bits; the range coder's bytes may differ by a
      # few. The promise is on bytes: a searched file never outgrows E's.
      encoder_file = self.code_latents(self.latents(image), image.shape, rate)
      if len(hific_file.to_bytes()) > len(encoder_file.to_bytes()):
        hific_file = encoder_file
    if with_estimate:
      if out is not None and "estimated_bits" in out:  # Exported before estimate_bits.
        return hific_file, float(out["estimated_bits"])
      estimate = self.module.estimate_bits(tf.constant(image, tf.uint8),
                                           *self.rate_args(rate))
      return hific_file, float(estimate["estimated_bits"])
    return hific_file

  def _range_decoder(self, hific_file):
    """A function that range-decodes `hific_file` to y_hat (hyper-synthesis included)."""
    strings = (tf.constant(hific_file.y_string), tf.constant(hific_file.z_string))
    shapes = (tf.constant(hific_file.y_shape, tf.int32),
              tf.constant(hific_file.z_shape, tf.int32))
    if not hasattr(self.module, "decompress_latents"):  # Exported before the tiled path.
      image_shape = tf.constant([hific_file.height, hific_file.width], tf.int32)
      return lambda: self.module.decompress(*strings, image_shape, *shapes)["image"]
    rate = self.rate_args(hific_file.rate)
    return lambda: self.module.decompress_latents(*strings, *shapes, *rate)["y_hat"]

  def decompress(self, hific_file, realism=None):
    """HificFile -> uint8 [H, W, 3]; refuses files made by another model or over the limits.

    `realism` (R in [0, 1], default: the codec's) picks the decoder's trade-off between
    distortion and realism; a codec without the knob decodes at its own R only.
    """
    realism = self.checked_realism(realism)
    symbols = self._admit(hific_file)
    core = self._tile_latents(hific_file.height, hific_file.width)
    strings = (tf.constant(hific_file.y_string), tf.constant(hific_file.z_string))
    shapes = (tf.constant(hific_file.y_shape, tf.int32),
              tf.constant(hific_file.z_shape, tf.int32))
    if core is None:
      # Range decoding is the only step a file can stretch: it is proven to end first, under
      # the deadline. Then the one call every earlier version decoded with (same pixels as
      # always), with no deadline: the generator's time is the machine's, never the file's.
      self._ensure_range_decoding_ends(hific_file, guard.deadline_for(symbols))
      image_shape = tf.constant([hific_file.height, hific_file.width], tf.int32)
      if self.has_realism:
        return self.module.decompress_realism(
            *strings, image_shape, *shapes, *self.rate_args(hific_file.rate),
            tf.constant(realism, tf.float32))["image"].numpy()
      return self.module.decompress(*strings, image_shape, *shapes,
                                    *self.rate_args(hific_file.rate))["image"].numpy()
    y_hat = self._range_decode(self._range_decoder(hific_file), guard.deadline_for(symbols),
                               hific_file)
    return self._synthesize_tiled(y_hat, hific_file, core, realism)
