"""Exporting a trained HiFiC as a SavedModel codec, and using one.

The SavedModel holds two signatures, `compress` (uint8 [H, W, 3] -> strings and shapes) and
`decompress` (back to uint8 [H, W, 3]), plus `model_info` (JSON: config, fingerprint). It
loads in a process that imports only tensorflow and tensorflow_compression (for the range
coding ops): no hific_tf needed to serve it.

Any image size works: the image is reflect-padded to a multiple of 64 (the latent z is at
1/64) and the reconstruction cropped back. The hyperprior stays float32 even when the
generator runs in bfloat16, so both sides derive identical scale indexes from z_hat.
"""

import hashlib
import json

import numpy as np
import tensorflow as tf

from hific_tf import bitstream
from hific_tf.model import PAD_MULTIPLE

STRING_SPEC = tf.TensorSpec([], tf.string)
SHAPE_SPEC = tf.TensorSpec([2], tf.int32)


def weights_fingerprint(model):
  """First 8 bytes of SHA-256 over the codec's variables (names and float32 values)."""
  digest = hashlib.sha256()
  for module in model.codec_modules.values():
    for variable in sorted(module.variables, key=lambda v: v.name):
      digest.update(variable.name.encode())
      digest.update(np.ascontiguousarray(variable.numpy(), np.float32).tobytes())
  return digest.digest()[:bitstream.FINGERPRINT_BYTES]


def reflect_pad(image, multiple):
  """Pads [H, W, C] at the bottom/right to multiples of `multiple`, mirroring any distance.

  tf.pad's REFLECT needs the pad to be smaller than the image; a 17x31 image needs 47 rows.
  Gathering with mirrored indexes handles every size, down to 1 pixel.
  """
  def indexes(size):
    padded = (size + multiple - 1) // multiple * multiple
    period = tf.maximum(2 * (size - 1), 1)
    position = tf.math.floormod(tf.range(padded), period)
    return tf.where(position < size, position, period - position)

  shape = tf.shape(image)
  image = tf.gather(image, indexes(shape[0]), axis=0)
  return tf.gather(image, indexes(shape[1]), axis=1)


class CodecModule(tf.Module):
  """What `hific export` saves: the codec parts of a trained HiFiC and two signatures."""

  def __init__(self, model, info):
    super().__init__(name="hific_codec")
    self.encoder = model.encoder
    self.generator = model.generator
    self.hyperprior = model.hyperprior
    self.hyperprior.build_coders()
    self.model_info = tf.Variable(json.dumps(info), trainable=False, name="model_info")

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  def compress(self, image):
    shape = tf.shape(image)[:2]
    padded = reflect_pad(image, PAD_MULTIPLE)
    x = tf.cast(padded, tf.float32)[None] / 255.
    y = tf.cast(self.encoder(x), tf.float32)
    compressed, _ = self.hyperprior.compress(y)
    return {
        "y_string": compressed.y_strings[0],
        "z_string": compressed.z_strings[0],
        "image_shape": shape,
        "y_shape": tf.cast(compressed.y_shape, tf.int32),
        "z_shape": tf.cast(compressed.z_shape, tf.int32),
        "estimated_bits": compressed.estimated_bits[0],
    }

  @tf.function(input_signature=[STRING_SPEC, STRING_SPEC, SHAPE_SPEC, SHAPE_SPEC, SHAPE_SPEC])
  def decompress(self, y_string, z_string, image_shape, y_shape, z_shape):
    y_hat = self.hyperprior.decompress(y_string[None], z_string[None], y_shape, z_shape)
    reconstruction = tf.cast(self.generator(y_hat), tf.float32)[0]
    reconstruction = reconstruction[:image_shape[0], :image_shape[1], :]
    return {"image": tf.saturate_cast(tf.round(reconstruction * 255.), tf.uint8)}


def export(model, directory, generator_dtype="float32"):
  """Writes the SavedModel; returns its info dict. Builds the coding tables (seconds)."""
  info = {
      "format": "hific_tf codec",
      "container_version": bitstream.VERSION,
      "config_name": model.config.name,
      "fingerprint": weights_fingerprint(model).hex(),
      "generator_dtype": generator_dtype,
      "config": json.loads(model.config.to_json()),
  }
  module = CodecModule(model, info)
  tf.saved_model.save(module, str(directory), signatures={
      "compress": module.compress.get_concrete_function(),
      "decompress": module.decompress.get_concrete_function(),
  })
  return info


class SavedModelCodec:
  """A loaded codec SavedModel, turning images into `HificFile`s and back."""

  def __init__(self, directory):
    try:
      self.module = tf.saved_model.load(str(directory))
      self.info = json.loads(self.module.model_info.numpy().decode())
    except (OSError, IOError, AttributeError, ValueError) as error:
      raise ValueError(f"{directory}: not a hific SavedModel ({error.__class__.__name__})")
    self.fingerprint = bytes.fromhex(self.info["fingerprint"])
    self.config_name = self.info["config_name"]

  def compress(self, image, with_estimate=False):
    """uint8 [H, W, 3] -> HificFile (and the model's estimate of its bits, if asked)."""
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
    """HificFile -> uint8 [H, W, 3]; refuses files made by another model."""
    if hific_file.fingerprint != self.fingerprint:
      raise bitstream.FormatError(
          f"file was made by model '{hific_file.config_name}' "
          f"({hific_file.fingerprint.hex()}), not by this one "
          f"('{self.config_name}', {self.fingerprint.hex()})")
    out = self.module.decompress(
        tf.constant(hific_file.y_string), tf.constant(hific_file.z_string),
        tf.constant([hific_file.height, hific_file.width], tf.int32),
        tf.constant(hific_file.y_shape, tf.int32), tf.constant(hific_file.z_shape, tf.int32))
    return out["image"].numpy()
