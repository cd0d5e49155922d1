"""The TFLite codec: E and G as TFLite models (XNNPACK), the hyperprior in TensorFlow.

`hific export --tflite` writes a folder that `hific compress/decompress --model DIR` and
`hific serve` use like any other codec, and that a phone or a small server can run with the
TFLite runtime:

  encoder.tflite          padded uint8 image (or a window of it) [H, W, 3] -> y [1, h, w, C]
  synthesis_trunk.tflite  y_hat [1, h, w, C] -> G's 1/16-resolution features
  synthesis_tail.tflite   features (or a window of them) -> uint8 pixels [H, W, 3]
  coding/                 a stock-op SavedModel (`split.CodingModule`): padding, the
                          hyperprior (y -> symbols and scale indexes, z -> scale indexes,
                          symbols -> y_hat) and the range coder's tables

Why the hyperprior stays in TensorFlow: the decoder must derive bit-identical scale indexes
from z_hat to the encoder's, or range decoding goes astray. Kept in the same TensorFlow ops
on both ends, they are; E and G may run on any backend, because a different y only picks
other (still valid) symbols and a different G only moves pixels. So every file this codec
writes decodes through the SavedModel codecs and back (tested), and its pixels agree with
the SavedModel's to about a level, not bit for bit.

G's 3x3 stride-2 transposed convs are converted as a 2x2 conv and depth_to_space (the
`layers.SubpixelConv2DTranspose` identity): TFLite's TRANSPOSE_CONV needs a static output
shape for XNNPACK, which images of any size do not have, while CONV_2D and DEPTH_TO_SPACE
run in XNNPACK at any size. Large images go through the same windows as the SavedModel
codec's tiled path (windows.py), so memory follows the window.

Model: Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020.
"""

import os
import pathlib
import threading

import numpy as np
import tensorflow as tf

from hific_tf import bitstream, images
from hific_tf.errors import InvalidModelError, UsageError
from hific_tf.models.hific import layers
from hific_tf.serving import guard, split, windows

CODING = "coding"
ENCODER, TRUNK, TAIL = "encoder.tflite", "synthesis_trunk.tflite", "synthesis_tail.tflite"
FORMAT = "hific_tf tflite codec"
# What TFLite stores the weights as. float16 and int8 shrink the files (2x, 4x); XNNPACK
# computes in float32 either way for float16, while int8 runs TFLite's dynamic-range kernels.
WEIGHT_TYPES = ("float32", "float16", "int8")


def _tail_layer(layer, x, phase_kernels):
  """One layer of G's tail as TFLite-friendly ops (transposed convs as sub-pixel convs)."""
  if not isinstance(layer, tf.keras.layers.Conv2DTranspose):
    return layer(x)
  kernel = tf.constant(phase_kernels[id(layer)])
  subpixel = layers.SubpixelConv2DTranspose.subpixel
  if not isinstance(layer, layers.TorchAlignedConv2DTranspose):
    return tf.nn.bias_add(subpixel(x, kernel), layer.bias)
  # torch's placement is the "valid" transposed conv without its first row and column: the
  # same-padded one of the input with a zero row and column appended, shifted by one.
  rows, cols = tf.shape(x)[1], tf.shape(x)[2]
  out = subpixel(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), kernel)
  out = out[:, 1:2 * rows + 1, 1:2 * cols + 1, :]
  return tf.nn.bias_add(out, layer.bias)


def _functions(model):
  """The three tf.functions that become the .tflite files (float32 throughout)."""
  generator = model.generator
  channels = int(generator.head.layers[0].gamma.shape[0])
  features = int(generator.tail.layers[0].kernel.shape[-1])
  default_biases = model.realism_biases(None)
  if default_biases is not None:
    default_biases = tf.constant(default_biases.numpy())
  # Evaluated now, in eager mode: the converter sees the phase kernels as constants.
  phase_kernels = {id(layer): layers.SubpixelConv2DTranspose.phase_kernel(
      tf.constant(layer.kernel.numpy())).numpy()
                   for layer in generator.tail.layers
                   if isinstance(layer, tf.keras.layers.Conv2DTranspose)}

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="padded")])
  def encode(padded):
    return model.encode(padded)

  @tf.function(input_signature=[
      tf.TensorSpec([1, None, None, channels], tf.float32, name="y_hat")])
  def trunk(y_hat):
    # A decoder with the realism knob runs at its default R here: the biases are constants.
    return tf.cast(generator.trunk(y_hat, default_biases), tf.float32)

  @tf.function(input_signature=[
      tf.TensorSpec([1, None, None, features], tf.float32, name="features")])
  def tail(trunk_features):
    x = trunk_features
    for layer in generator.tail.layers:
      x = _tail_layer(layer, x, phase_kernels)
    reconstruction = model.image_from(x)[0]
    # saturate_cast's ClipByValue is not a TFLite builtin; minimum and maximum are.
    return tf.cast(tf.minimum(tf.maximum(tf.round(reconstruction * 255.), 0.), 255.), tf.uint8)

  return {ENCODER: encode, TRUNK: trunk, TAIL: tail}


def convert(function, weights="float32"):
  """A tf.function with one input -> .tflite bytes, weights stored as `weights`."""
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function.get_concrete_function()])
  if weights == "float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif weights == "int8":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # Dynamic-range: int8 weights.
  return converter.convert()


def export_tflite(model, directory, info, weights="float32"):
  """Writes the TFLite codec folder (see the module docstring); returns its info dict.

  The model must be float32 (TFLite computes in float32 here); its weights are stored as
  `weights`.
  """
  if weights not in WEIGHT_TYPES:
    raise UsageError(f"weights must be one of {WEIGHT_TYPES}, got {weights!r}")
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  digests = {}
  for name, function in _functions(model).items():
    (directory / name).write_bytes(convert(function, weights))
    digests[name] = images.sha256_of(directory / name)
  # The digests let the client refuse a damaged or swapped .tflite in one line: TFLite
  # itself loads a truncated or bit-flipped model without complaint.
  info = dict(info, format=FORMAT, tflite_weights=weights, tflite_sha256=digests,
              generator_dtype="float32", encoder_dtype="float32")
  module = split.CodingModule(model, info)
  tf.saved_model.save(module, str(directory / CODING), signatures=module.signatures())
  return info


def is_tflite_codec(directory):
  directory = pathlib.Path(directory)
  return (directory / CODING / "saved_model.pb").is_file() and all(
      (directory / name).is_file() for name in (ENCODER, TRUNK, TAIL))


class TfliteFunction:
  """One .tflite model with one input and one output, callable on numpy arrays.

  The interpreter is resized whenever the input's shape changes (TFLite plans its memory
  per shape); calls are serialised, since an interpreter is not thread-safe.
  """

  def __init__(self, path, threads, sha256):
    if images.sha256_of(path) != sha256:
      raise InvalidModelError(f"{path}: damaged or replaced (its SHA-256 is not the one "
                              "recorded at export)")
    try:
      self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    except (ValueError, RuntimeError) as error:
      raise InvalidModelError(f"{path}: not a TFLite model ({error.__class__.__name__})"
                              ) from None
    self.input = self.interpreter.get_input_details()[0]
    self.output = self.interpreter.get_output_details()[0]["index"]
    self.shape = None
    self.lock = threading.Lock()

  def __call__(self, array):
    array = np.ascontiguousarray(array, self.input["dtype"])
    with self.lock:
      if self.shape != array.shape:
        self.interpreter.resize_tensor_input(self.input["index"], array.shape, strict=True)
        self.interpreter.allocate_tensors()
        self.shape = array.shape
      self.interpreter.set_tensor(self.input["index"], array)
      self.interpreter.invoke()
      return self.interpreter.get_tensor(self.output).copy()


def cpu_threads():
  """The cores this process may use (its affinity mask, not the machine's count)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


class TfliteCodec(split.SplitCodec):
  """A `hific export --tflite` folder as a codec: the same `.hific` files as the others.

  `tile` as `SavedModelCodec`'s (None: windows above about 1 MP, 0: never).
  """

  def __init__(self, directory, max_pixels=bitstream.DEFAULT_MAX_PIXELS, tile=None,
               threads=None):
    directory = pathlib.Path(directory)
    if not is_tflite_codec(directory):
      raise InvalidModelError(f"{directory}: not a hific TFLite codec folder")
    super().__init__(directory / CODING, max_pixels)
    if self.info.get("format") != FORMAT:
      raise InvalidModelError(f"{directory}: not a hific TFLite codec folder")
    self.directory = str(directory)
    self.tile = windows.checked_tile(tile)
    threads = threads or cpu_threads()
    digests = self.info.get("tflite_sha256", {})
    self.encode_window, self.trunk, self.tail = (
        TfliteFunction(directory / name, threads, digests.get(name))
        for name in (ENCODER, TRUNK, TAIL))

  def _core(self, height, width):
    return windows.tile_core(height, width, self.tile, self.pad_multiple,
                           self.latent_downsampling)

  def compress(self, image, with_estimate=False, rate=None):
    """uint8 [H, W, 3] -> HificFile (and None: TFLite's transforms estimate no rate)."""
    rate = self.checked_rate(rate)
    bitstream.check_image_size(image.shape[0], image.shape[1], self.max_pixels)
    padded = self.module.pad_image(tf.constant(image, tf.uint8))["padded"].numpy()
    core = self._core(*image.shape[:2])
    if core is None:
      y = self.encode_window(padded)
    else:
      y = windows.analyze_in_windows(padded, self.encode_window, core, self.latent_downsampling)
    out = self.module.hyper_analysis(tf.constant(y), tf.constant(image.shape[:2], tf.int32),
                                     *self.rate_args(rate))
    hific_file = self._file_from(out, rate)
    return (hific_file, None) if with_estimate else hific_file

  def decompress(self, hific_file, realism=None):
    """HificFile -> uint8 [H, W, 3], under the same checks as the other codecs. The TFLite
    generator runs at the codec's default realism only (its biases are constants)."""
    self.checked_realism(realism)
    symbols = self._admit(hific_file)
    z_symbols, y_symbols = self._range_decode(self._range_decoder(hific_file),
                                              guard.deadline_for(symbols), hific_file)
    y_hat = self.module.latent_values(z_symbols, y_symbols,
                                      *self.rate_args(hific_file.rate))["y_hat"].numpy()
    features = self.trunk(y_hat)
    image = windows.synthesize_in_windows(
        features, self.tail, self._core(hific_file.height, hific_file.width),
        self.latent_downsampling)
    return image[:hific_file.height, :hific_file.width]

