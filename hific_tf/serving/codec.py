"""Exporting a trained HiFiC as a SavedModel codec, and using one.

The SavedModel holds two signatures, `compress` (uint8 [H, W, 3] -> strings and shapes) and
`decompress` (back to uint8 [H, W, 3]), plus `model_info` (JSON: config, fingerprint). It
loads in a process that imports only tensorflow and tensorflow_compression (for the range
coding ops): no hific_tf needed to serve it.

Any image size works: HiFiC.compress reflect-pads to a multiple of the total downsampling
(z is at 1/64) and decompress crops back. The hyperprior stays float32 even when the
generator runs in bfloat16, so both sides derive identical scale indexes from z_hat.
"""

import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from hific_tf.models.hific import networks
from hific_tf.models.hific.model import PAD_MULTIPLE
from hific_tf.serving import bitstream
from hific_tf.serving import split


def weights_fingerprint(model):
  """First 8 bytes of SHA-256 over the codec's weights: position, shape and float32 values.

  Positions ("encoder/007") rather than Keras names, which depend on how many layers the
  process created before: the same weights give the same fingerprint in any process.
  """
  digest = hashlib.sha256()
  for key, variable in model.codec_variables():
    position = "/".join(key.split("/")[:2])
    digest.update(f"{position}:{tuple(variable.shape)}".encode())
    digest.update(np.ascontiguousarray(variable.numpy(), np.float32).tobytes())
  return digest.digest()[:bitstream.FINGERPRINT_BYTES]


class CodecModule(tf.Module):
  """What `hific export` saves: the codec parts of a trained HiFiC and two signatures."""

  def __init__(self, model, info):
    super().__init__(name="hific_codec")
    self.encoder = model.encoder
    self.generator = model.generator
    self.hyperprior = model.hyperprior
    self.hyperprior.build_coders()
    self.model_info = tf.Variable(json.dumps(info), trainable=False, name="model_info")

    # The model's own tf.functions: the codec contract lives on the model, this module only
    # chooses what is saved (no discriminator, no LPIPS, no optimizer state).
    self.compress = model.compress
    self.decompress = model.decompress


def export(model, directory, generator_dtype="float32", serving=False):
  """Writes the SavedModel; returns its info dict. Builds the coding tables (seconds).

  With `serving`, writes the stock-op transforms SavedModel of `split` instead (for stock
  TF Serving; the range coding then runs in the client).
  """
  info = {
      "format": "hific_tf codec",
      "container_version": bitstream.VERSION,
      "config_name": model.config.name,
      "fingerprint": weights_fingerprint(model).hex(),
      "generator_dtype": generator_dtype,
      "config": json.loads(model.config.to_json()),
      "pad_multiple": int(PAD_MULTIPLE),
      "latent_downsampling": int(networks.DOWNSAMPLING_FACTOR),
  }
  if serving:
    return split.export_serving(model, directory, info)
  module = CodecModule(model, info)
  tf.saved_model.save(module, str(directory), signatures={
      "compress": module.compress.get_concrete_function(),
      "decompress": module.decompress.get_concrete_function(),
  })
  return info


def export_to(model, target, generator_dtype="float32", replace=False, serving=False):
  """Exports into a staging folder beside `target`, then renames it into place.

  Nobody ever sees a half-written SavedModel. With `replace`, an existing `target` is
  removed first; without, a `target` that another process completed meanwhile is kept.
  Returns the info dict.
  """
  target = pathlib.Path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
  try:
    info = export(model, staging, generator_dtype=generator_dtype, serving=serving)
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


class SavedModelCodec:
  """A loaded codec SavedModel, turning images into `HificFile`s and back."""

  def __init__(self, directory, max_pixels=bitstream.DEFAULT_MAX_PIXELS):
    try:
      self.module = tf.saved_model.load(str(directory))
      self.info = json.loads(self.module.model_info.numpy().decode())
    except (OSError, IOError, AttributeError, ValueError) as error:
      raise ValueError(f"{directory}: not a hific SavedModel ({error.__class__.__name__})")
    self.fingerprint = bytes.fromhex(self.info["fingerprint"])
    self.config_name = self.info["config_name"]
    self.max_pixels = max_pixels

  def compress(self, image, with_estimate=False):
    """uint8 [H, W, 3] -> HificFile (and the model's estimate of its bits, if asked)."""
    bitstream.check_image_size(image.shape[0], image.shape[1], self.max_pixels)
    out = self.module.compress(tf.constant(image, tf.uint8))
    hific_file = bitstream.HificFile(
        self.config_name, self.fingerprint, int(out["image_shape"][0]),
        int(out["image_shape"][1]), tuple(int(v) for v in out["y_shape"].numpy()),
        tuple(int(v) for v in out["z_shape"].numpy()), out["y_string"].numpy(),
        out["z_string"].numpy())
    if with_estimate:
      return hific_file, float(out["estimated_bits"])
    return hific_file

  def decompress(self, hific_file):
    """HificFile -> uint8 [H, W, 3]; refuses files made by another model or over the limits."""
    hific_file.validate(self.max_pixels, self.info.get("pad_multiple", 64),
                        self.info.get("latent_downsampling", 16))
    bitstream.check_fingerprint(hific_file, self.fingerprint, self.config_name)
    try:
      out = self.module.decompress(
          tf.constant(hific_file.y_string), tf.constant(hific_file.z_string),
          tf.constant([hific_file.height, hific_file.width], tf.int32),
          tf.constant(hific_file.y_shape, tf.int32), tf.constant(hific_file.z_shape, tf.int32))
    except tf.errors.InvalidArgumentError:
      # tfc's range decoder checks that each string is consumed exactly; most damaged or
      # crafted payloads fail that check.
      raise bitstream.FormatError("corrupt .hific payload (the range decoder rejected the "
                                  "latent strings)") from None
    return out["image"].numpy()
