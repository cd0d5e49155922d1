"""The split codec: neural transforms in a stock-op SavedModel, range coding in the client.

Stock TensorFlow Serving cannot load `hific export`'s SavedModel: its signatures contain
tensorflow-compression's range-coding ops (`CreateRangeEncoder`, ...), and stock servers fail
with "Op type not registered" (tensorflow/compression#119). So `hific export --serving` writes
a second kind of SavedModel, with only stock ops and integer symbols at its edges:

  analysis(image uint8 [H, W, 3])
      -> z_symbols, y_symbols, scale_indexes (int32 [h, w, C]), image_shape, y_shape, z_shape
  hyper_synthesis(z_symbols, y_shape) -> scale_indexes (what the decoder needs for y)
  synthesis(z_symbols, y_symbols, image_shape) -> image uint8 [H, W, 3]

and the same three at any rate, `analysis_at_rate(image, rate)`, `hyper_synthesis_at_rate(
z_symbols, y_shape, rate)` and `synthesis_at_rate(z_symbols, y_symbols, image_shape, rate)`;
a decoder with the realism knob adds `synthesis_realism(..., rate, realism)`. `rate` is a
float32 scalar, 0 for the model's own (models/hific/gains.py); the client reads it from the
`.hific` header and hands the same value to both decoding signatures. The signatures without
a rate code at rate 0, as they did before rates existed: a client written for those exports
sends the image alone and keeps working (export versions 4 and 5 had the rate in these three
names; docs/COMPATIBILITY.md).

The range coder's tables travel inside it as plain variables (`z_cdf`, `y_cdf`, ...), readable
with `tf.train.load_checkpoint`. `SplitCodec` is the client: it runs (or asks a server for) the
transforms and codes the symbols with tfc's range coder and exactly those tables. Its `.hific`
files are byte-identical to the full SavedModel's for the same model (tested), because both
sides compute the symbols with the same ops on the same weights (`TransformsModule.analysis`
and `Hyperprior.latent_coding_parameters` mirror tfc's compress op for op).

Model: Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020.
"""

import json

import numpy as np
import tensorflow as tf

from hific_tf import bitstream
from hific_tf.errors import InvalidModelError
from hific_tf.serving import guard

# Variables of the serving SavedModel that hold the range coder's tables.
TABLE_NAMES = ("z_cdf", "z_cdf_offset", "z_quantization_offset", "y_cdf", "y_cdf_offset")


class CodingModule(tf.Module):
  """The hyperprior and the coding tables: the stock-op half of the codec around symbols.

  On its own it is the TensorFlow part of `hific export --tflite` (the encoder and generator
  run in TFLite there); `TransformsModule` adds E and G for `hific export --serving`. Both
  keep the hyperprior in TensorFlow so that encoder and decoder derive identical scale
  indexes from z, whatever runs the transforms.
  """

  def __init__(self, model, info, name="hific_coding"):
    super().__init__(name=name)
    model.hyperprior.build_coders()
    # Bound methods are not tracked, so the SavedModel holds only the parts assigned below.
    self._pad_image, self._pad_latent = model.pad_image, model.pad_latent
    self.hyperprior = model.hyperprior
    self.rate_gains = model.rate_gains
    self.model_info = tf.Variable(json.dumps(info), trainable=False, name="model_info")
    for name, value in model.hyperprior.coding_tables().items():
      setattr(self, name, tf.Variable(value, trainable=False, name=name))

  def _hyper_values(self, z_symbols):
    """z_hat from symbols, with the exported offset (a variable of this module)."""
    return tf.cast(z_symbols, tf.float32)[None] + self.z_quantization_offset

  def _symbols(self, y, image_shape, rate):
    """y (as the encoder wrote it) -> what the range coder codes, and the shapes."""
    y = self._pad_latent(y)
    z = self.hyperprior.analysis(y)
    z_symbols = tf.cast(tf.round(z - self.z_quantization_offset), tf.int32)
    y_shape = tf.shape(y)[1:3]
    log_gain = self.rate_gains(rate)
    loc, scale_indexes = self.hyperprior.latent_coding_parameters(
        self._hyper_values(z_symbols[0]), y_shape, log_gain)
    # tfc's compress op for op: the gained y (hyperprior._gained) less the gained mean.
    y_symbols = tf.cast(tf.round(y * tf.math.exp(log_gain) - loc), tf.int32)
    return {
        "z_symbols": z_symbols[0], "y_symbols": y_symbols[0],
        "scale_indexes": scale_indexes[0], "image_shape": image_shape,
        "y_shape": y_shape, "z_shape": tf.shape(z)[1:3],
    }

  def _latent_values(self, z_symbols, y_symbols, rate):
    log_gain = self.rate_gains(rate)
    loc, _ = self.hyperprior.latent_coding_parameters(
        self._hyper_values(z_symbols), tf.shape(y_symbols)[:2], log_gain)
    return (tf.cast(y_symbols, tf.float32)[None] + loc) * tf.math.exp(-log_gain)

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
  def pad_image(self, image):
    """The padded image the encoder sees (whole, or in windows)."""
    return {"padded": self._pad_image(image)}

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float32, name="y"),
                                tf.TensorSpec([2], tf.int32, name="image_shape"),
                                tf.TensorSpec([], tf.float32, name="rate")])
  def hyper_analysis(self, y, image_shape, rate):
    """The encoder's y -> z_symbols, y_symbols, scale_indexes and the shapes."""
    return self._symbols(y, image_shape, rate)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.int32, name="z_symbols"),
                                tf.TensorSpec([2], tf.int32, name="y_shape"),
                                tf.TensorSpec([], tf.float32, name="rate")])
  def hyper_synthesis_at_rate(self, z_symbols, y_shape, rate):
    _, scale_indexes = self.hyperprior.latent_coding_parameters(
        self._hyper_values(z_symbols), y_shape, self.rate_gains(rate))
    return {"scale_indexes": scale_indexes[0]}

  @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.int32, name="z_symbols"),
                                tf.TensorSpec([2], tf.int32, name="y_shape")])
  def hyper_synthesis(self, z_symbols, y_shape):
    """`hyper_synthesis_at_rate` at rate 0: the signature of exports before rates."""
    return self.hyper_synthesis_at_rate(z_symbols, y_shape, tf.constant(0.))

  @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.int32, name="z_symbols"),
                                tf.TensorSpec([None, None, None], tf.int32, name="y_symbols"),
                                tf.TensorSpec([], tf.float32, name="rate")])
  def latent_values(self, z_symbols, y_symbols, rate):
    """Decoded symbols -> y_hat [1, h, w, C], the generator's input."""
    return {"y_hat": self._latent_values(z_symbols, y_symbols, rate)}

  def signatures(self):
    return {"pad_image": self.pad_image.get_concrete_function(),
            "hyper_analysis": self.hyper_analysis.get_concrete_function(),
            "hyper_synthesis": self.hyper_synthesis.get_concrete_function(),
            "hyper_synthesis_at_rate": self.hyper_synthesis_at_rate.get_concrete_function(),
            "latent_values": self.latent_values.get_concrete_function()}


class TransformsModule(CodingModule):
  """What `hific export --serving` saves: stock-op transforms and the coding tables."""

  def __init__(self, model, info):
    super().__init__(model, info, name="hific_transforms")
    self._encode, self._synthesize = model.encode, model.synthesize
    self.encoder = model.encoder
    self.generator = model.generator
    self.has_realism = model.realism is not None
    if self.has_realism:
      self.realism = model.realism
      self.synthesis_realism = tf.function(self._synthesis_at_realism, input_signature=[
          tf.TensorSpec([None, None, None], tf.int32, name="z_symbols"),
          tf.TensorSpec([None, None, None], tf.int32, name="y_symbols"),
          tf.TensorSpec([2], tf.int32, name="image_shape"),
          tf.TensorSpec([], tf.float32, name="rate"),
          tf.TensorSpec([], tf.float32, name="realism")])

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                                tf.TensorSpec([], tf.float32, name="rate")])
  def analysis_at_rate(self, image, rate):
    return self._symbols(self._encode(self._pad_image(image)), tf.shape(image)[:2], rate)

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
  def analysis(self, image):
    """`analysis_at_rate` at rate 0: the signature of exports before rates."""
    return self.analysis_at_rate(image, tf.constant(0.))

  @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.int32, name="z_symbols"),
                                tf.TensorSpec([None, None, None], tf.int32, name="y_symbols"),
                                tf.TensorSpec([2], tf.int32, name="image_shape"),
                                tf.TensorSpec([], tf.float32, name="rate")])
  def synthesis_at_rate(self, z_symbols, y_symbols, image_shape, rate):
    return {"image": self._synthesize(self._latent_values(z_symbols, y_symbols, rate),
                                      image_shape)}

  @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.int32, name="z_symbols"),
                                tf.TensorSpec([None, None, None], tf.int32, name="y_symbols"),
                                tf.TensorSpec([2], tf.int32, name="image_shape")])
  def synthesis(self, z_symbols, y_symbols, image_shape):
    """`synthesis_at_rate` at rate 0: the signature of exports before rates."""
    return self.synthesis_at_rate(z_symbols, y_symbols, image_shape, tf.constant(0.))

  def _synthesis_at_realism(self, z_symbols, y_symbols, image_shape, rate, realism):
    """`synthesis` at realism R (decoders with the knob); `synthesis` uses the default R."""
    return {"image": self._synthesize(self._latent_values(z_symbols, y_symbols, rate),
                                      image_shape, realism)}

  def signatures(self):
    signatures = dict(super().signatures(), analysis=self.analysis.get_concrete_function(),
                      analysis_at_rate=self.analysis_at_rate.get_concrete_function(),
                      synthesis=self.synthesis.get_concrete_function(),
                      synthesis_at_rate=self.synthesis_at_rate.get_concrete_function())
    if self.has_realism:
      signatures["synthesis_realism"] = self.synthesis_realism.get_concrete_function()
    return signatures


def export_serving(model, directory, info):
  """Writes the stock-op SavedModel (signatures: analysis, hyper_synthesis, synthesis)."""
  info = dict(info, format="hific_tf serving transforms")
  module = TransformsModule(model, info)
  tf.saved_model.save(module, str(directory), signatures=module.signatures())
  return info


def is_serving_model(directory):
  """True if `directory` is a SavedModel written by `hific export --serving`."""
  try:
    info = read_variable(directory, "model_info")
  except (ValueError, tf.errors.OpError):
    return False
  return json.loads(info.decode()).get("format") == "hific_tf serving transforms"


def read_variable(directory, name):
  """A variable of a SavedModel read from its checkpoint: no graph, no custom ops needed."""
  reader = tf.train.load_checkpoint(str(directory) + "/variables/variables")
  for key in reader.get_variable_to_shape_map():
    if key.split("/")[0] == name:
      return reader.get_tensor(key)
  raise InvalidModelError(f"{directory}: no variable '{name}'")


class RangeCoder:
  """tfc's range coder around integer symbols, with a serving model's tables (client side)."""

  def __init__(self, tables):
    import tensorflow_compression as tfc  # Only the client needs the range-coding ops.
    self._tfc = tfc
    self.tables = {name: tf.constant(tables[name]) for name in TABLE_NAMES}

  def encode(self, z_symbols, y_symbols, scale_indexes):
    tfc, t = self._tfc, self.tables
    handle = tfc.create_range_encoder([1], t["z_cdf"])
    handle = tfc.entropy_encode_channel(handle, z_symbols[None] - t["z_cdf_offset"])
    z_string = tfc.entropy_encode_finalize(handle)[0]
    y_symbols = y_symbols - tf.gather(t["y_cdf_offset"], scale_indexes)
    handle = tfc.create_range_encoder([1], t["y_cdf"])
    handle = tfc.entropy_encode_index(handle, scale_indexes[None], y_symbols[None])
    y_string = tfc.entropy_encode_finalize(handle)[0]
    return y_string.numpy(), z_string.numpy()

  def decode_side(self, z_string, z_shape, channels):
    tfc, t = self._tfc, self.tables
    handle = tfc.create_range_decoder([z_string], t["z_cdf"])
    handle, symbols = tfc.entropy_decode_channel(handle, [*z_shape, channels], tf.int32)
    self._check(tfc.entropy_decode_finalize(handle))
    return symbols[0] + t["z_cdf_offset"]

  def decode_latent(self, y_string, scale_indexes):
    tfc, t = self._tfc, self.tables
    handle = tfc.create_range_decoder([y_string], t["y_cdf"])
    handle, symbols = tfc.entropy_decode_index(
        handle, scale_indexes[None], tf.shape(scale_indexes), tf.int32)
    self._check(tfc.entropy_decode_finalize(handle))
    return symbols[0] + tf.gather(t["y_cdf_offset"], scale_indexes)

  @staticmethod
  def _check(sanity):
    if not bool(np.all(sanity.numpy())):
      raise guard.rejected_payload_error()


class SplitCodec(guard.GuardedDecoder):
  """Client of a `--serving` SavedModel: the same `.hific` files as `SavedModelCodec`.

  The transforms run in this process through the loaded SavedModel; a deployment that puts
  them on TF Serving replaces the three `self.module` calls with REST requests (docs/SERVING.md).
  """

  def __init__(self, directory, max_pixels=bitstream.DEFAULT_MAX_PIXELS):
    try:
      info = json.loads(read_variable(directory, "model_info").decode())
      self.coder = RangeCoder({name: read_variable(directory, name) for name in TABLE_NAMES})
      self.module = tf.saved_model.load(str(directory))
      self.directory = str(directory)
    except (OSError, ValueError, tf.errors.OpError) as error:
      raise InvalidModelError(f"{directory}: not a hific serving SavedModel "
                       f"({error.__class__.__name__})") from None
    self._read_info(info, max_pixels)
    self.has_realism = hasattr(self.module, "synthesis_realism")
    # From export version 6 the rate-taking signatures are `*_at_rate`; in 4 and 5 they held
    # the plain names, and before 4 there was no rate. (A TFLite codec's coding module has
    # only hyper_synthesis: its transforms run in TFLite.)
    self._analysis, self._hyper_synthesis, self._synthesis = (
        getattr(self.module, name + "_at_rate", None) or getattr(self.module, name, None)
        for name in ("analysis", "hyper_synthesis", "synthesis"))

  def compress(self, image, with_estimate=False, rate=None):
    """uint8 [H, W, 3] -> HificFile (and None: the transforms estimate no rate)."""
    rate = self.checked_rate(rate)
    bitstream.check_image_size(image.shape[0], image.shape[1], self.max_pixels)
    hific_file = self._file_from(self._analysis(tf.constant(image, tf.uint8),
                                                      *self.rate_args(rate)), rate)
    return (hific_file, None) if with_estimate else hific_file

  def _file_from(self, symbols, rate):
    """The HificFile of `CodingModule._symbols`' output: range-coded here."""
    y_string, z_string = self.coder.encode(symbols["z_symbols"], symbols["y_symbols"],
                                           symbols["scale_indexes"])
    shapes = {key: tuple(int(v) for v in symbols[key].numpy()) for key in
              ("image_shape", "y_shape", "z_shape")}
    return bitstream.HificFile(self.config_name, self.fingerprint, *shapes["image_shape"],
                               shapes["y_shape"], shapes["z_shape"], y_string, z_string, rate)

  def _range_decoder(self, hific_file):
    """A function that range-decodes `hific_file` to its z and y symbols."""
    def range_decode():
      z_symbols = self.coder.decode_side(hific_file.z_string, hific_file.z_shape,
                                         self.hyper_channels)
      indexes = self._hyper_synthesis(z_symbols, tf.constant(hific_file.y_shape),
                                            *self.rate_args(hific_file.rate))
      return z_symbols, self.coder.decode_latent(hific_file.y_string,
                                                 indexes["scale_indexes"])
    return range_decode

  def decompress(self, hific_file, realism=None):
    """HificFile -> uint8 [H, W, 3], under the same checks as `SavedModelCodec`."""
    realism = self.checked_realism(realism)
    symbols = self._admit(hific_file)
    z_symbols, y_symbols = self._range_decode(self._range_decoder(hific_file),
                                              guard.deadline_for(symbols), hific_file)
    image_shape = tf.constant([hific_file.height, hific_file.width], tf.int32)
    if self.has_realism:
      out = self.module.synthesis_realism(z_symbols, y_symbols, image_shape,
                                          *self.rate_args(hific_file.rate),
                                          tf.constant(realism, tf.float32))
    else:
      out = self._synthesis(z_symbols, y_symbols, image_shape,
                                  *self.rate_args(hific_file.rate))
    return out["image"].numpy()
