"""How trained weights are stored: large kernels as int8 with per-slice scales, the rest float16.

The bundled codecs (hific_tf/models/zoo.py) and the resume points of rungs in training
(checkpoints/) share this format, and both training (`--init_from`) and serving read it, so it
lives beside the model it stores. Weights are widened to float32 on load, so every machine
rebuilds the same model and the same fingerprint, and decoding stays deterministic.
A stage-2 model's D goes beside its weights (NAME.discriminator.npz), never in the codec.

Files are keyed by where each weight sits in the model ("generator/head.layers.1.gamma":
the part, then the attribute path from the part down, as a tf.train.Checkpoint names it), so
a variable added inside one layer leaves every other key as it was, and a grown model loads
a file written before it grew. Files written before 1.0.0 (every bundled codec's) are keyed
by position ("generator/007/NAME") and load as before; D's file keeps positions.
"""

import hashlib
import io
import pathlib

import numpy as np

from hific_tf import bitstream
from hific_tf import images as images_lib
from hific_tf.errors import HificError, UsageError

# Kernels of at least this many values are stored as int8 codes with one float32 scale per
# slice of the last axis; everything else (biases, norms, the z prior) as float16. On
# small-lo that halves the file (two rungs fit the 40 MB budget) for +0.2% bpp and +0.0015
# LPIPS on the held-out photos (docs/MODELS.md). Widening is one float32 multiply per
# value, so every machine rebuilds the same float32 weights and decoding stays deterministic.
INT8_MIN_VALUES = 4096
SCALE_SUFFIX = ".scale"
# Codes may use fewer than 8 bits: with `bits=7` they span -63..63 with twice the step, and
# the compressed .npz shrinks by 14% (the codes' entropy falls by about a bit); the loader
# is the same (codes times scale). docs/MODELS.md (storage) gives what it costs.
DEFAULT_BITS = 8


def _stored_as_int8(key, values):
  return values.ndim >= 2 and values.size >= INT8_MIN_VALUES and "DeepFactorized" not in key


def quantize_int8(values, bits=DEFAULT_BITS):
  """(int8 codes, float32 scales) per last-axis slice; |error| <= scale / 2 per value."""
  if not 2 <= bits <= 8:
    raise UsageError(f"weights are stored with 2 to 8 bits, not {bits}")
  levels = 2 ** (bits - 1) - 1
  values = np.asarray(values, np.float32)
  scale = np.abs(values).max(axis=tuple(range(values.ndim - 1))) / levels
  scale = np.where(scale > 0, scale, 1.).astype(np.float32)
  return np.clip(np.round(values / scale), -levels, levels).astype(np.int8), scale


def dequantize_int8(codes, scale):
  return codes.astype(np.float32) * scale.astype(np.float32)


# Marks a file keyed by attribute path (`keyed_variables`); files without it go by position.
FORMAT_KEY = "__format__"
NAMED_FORMAT = 2


def _attribute_paths(module):
  """{id(variable): the attribute path from `module` down to it} for its trainable variables.

  tf.Module finds every path to a variable (a Keras layer also lists it in its weights, a
  Sequential its last layer among its outputs); the one with the fewest private steps other
  than Keras' list of sublayers (read as `layers`) is kept. Attribute names and list indices
  are fixed by the code, unlike Keras' variable names, which carry per-process layer
  counters.
  """
  import tensorflow as tf
  layers = "_self_tracked_trackables"  # A Keras layer's own sublayers, in creation order.
  rank = lambda path: (sum(str(step).startswith("_") and step != layers for step in path),
                       len(path), ".".join(map(str, path)))
  best = {}
  for path, variable in module._flatten(  # tf.Module's own traversal (with_path is stable).
      predicate=lambda v: isinstance(v, tf.Variable) and v.trainable, with_path=True):
    if id(variable) not in best or rank(path) < rank(best[id(variable)]):
      best[id(variable)] = path
  return {key: ".".join(str(step) for step in path).replace(layers, "layers")
          for key, path in best.items()}


def keyed_variables(model):
  """(file key, position key, variable) of the codec's weights, in codec_variables' order:
  the file key is "part/attribute.path", the position key codec_variables' "part/index/name"
  (what the fingerprint and the storage precision go by)."""
  paths = {part: _attribute_paths(module) for part, module in model.codec_modules.items()}
  for key, variable in model.codec_variables():
    part = key.split("/")[0]
    yield f"{part}/{paths[part][id(variable)]}", key, variable


def _save(entries, path, bits=DEFAULT_BITS, generator_bits=None, keyed_by_name=True):
  """`entries`: (file key, position key, variable). `bits` None stores every value as
  float32, exactly (imported codecs).

  `generator_bits`, when given, is the precision of G's kernels alone: the rate is set by E
  and the hyperprior, so storing only G with fewer bits shrinks the file without moving a
  single byte of a .hific payload (small-lo at 7 bits everywhere: +4% bpp; G alone: none;
  only the header's weights fingerprint changes).
  """
  arrays = {FORMAT_KEY: np.array(NAMED_FORMAT)} if keyed_by_name else {}
  for key, position_key, variable in entries:
    values = variable.numpy()
    if bits is None:
      arrays[key] = values.astype(np.float32)
    elif _stored_as_int8(position_key, values):
      key_bits = generator_bits if generator_bits and key.startswith("generator/") else bits
      arrays[key], arrays[key + SCALE_SUFFIX] = quantize_int8(values, key_bits)
    else:
      arrays[key] = values.astype(np.float16)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  images_lib.write_atomic(path, buffer.getvalue(), force=True)


GAINS_PART = "rate_gains"  # HiFiC.codec_modules' name of the rate gains.
REALISM_PART = "realism"  # ... and of the realism knob.
# Parts a model may grow or drop when it trains from a codec (`grow`): a missing one starts
# as initialised (gains at 2^rate, the realism knob at zero effect), an extra one is unused.
OPTIONAL_PARTS = (GAINS_PART, REALISM_PART)


def _load(entries, path, skipped_parts=(), grow=False):
  """Assigns the stored tensors (but those of `skipped_parts`) to `entries` (file key,
  position key, variable). A file keyed by name matches by file key, an earlier one by
  position. `grow`: a variable the file lacks keeps its initial value, and a tensor the model
  lacks is left unused (a file keyed by name only). Returns the fingerprint of the float32
  values when some variable is narrower (a lean generator's bfloat16 cannot give them back),
  else None."""
  with np.load(path) as stored:
    by_name = FORMAT_KEY in stored.files
    tensors = [key for key in stored.files if not key.endswith(SCALE_SUFFIX)
               and key != FORMAT_KEY and key.split("/")[0] not in skipped_parts]
    expected = list(entries)
    digest = (hashlib.sha256() if any(v.dtype.name != "float32" for _, _, v in expected)
              else None)
    if by_name:
      lookup = {key: key for key in tensors}
      name_of = lambda entry: entry[0]
      left = set(tensors) - {entry[0] for entry in expected}
      if left and not grow:
        raise HificError(f"{path}: {len(left)} tensors the model has no place for, such as "
                         f"{sorted(left)[0]}")
    else:
      if len(tensors) != len(expected):
        raise HificError(f"{path}: {len(tensors)} tensors, the model has {len(expected)}")
      position = lambda key: "/".join(key.split("/")[:2])  # "part/index"; names may differ.
      lookup = {position(key): key for key in tensors}
      name_of = lambda entry: position(entry[1])
    for entry in expected:
      key, position_key, variable = entry
      stored_key = lookup.get(name_of(entry))
      if stored_key is None and by_name and grow:
        continue  # A variable the model grew since: it keeps its initial value.
      if stored_key is None or stored[stored_key].shape != tuple(variable.shape):
        raise HificError(f"{path}: no tensor of shape {tuple(variable.shape)} for {key}")
      values = stored[stored_key]
      if values.dtype == np.int8:
        values = dequantize_int8(values, stored[stored_key + SCALE_SUFFIX])
      values = np.ascontiguousarray(values, np.float32)
      if digest:
        _update_fingerprint(digest, position_key, values)
      variable.assign(values.astype(variable.dtype.as_numpy_dtype))
  return digest.digest()[:bitstream.FINGERPRINT_BYTES] if digest else None


def _by_position(named_variables):
  """D's (key, variable) pairs as entries of a file keyed by position."""
  return [(key, key, variable) for key, variable in named_variables]


def discriminator_path(weights_path):
  """Where D's weights sit beside a weights file: NAME.npz -> NAME.discriminator.npz."""
  weights_path = pathlib.Path(weights_path)
  return weights_path.with_name(weights_path.stem + ".discriminator.npz")


def save_weights(model, path, bits=DEFAULT_BITS, generator_bits=None):
  """Writes the codec's variables (before build_coders adds coding tables) as a .npz.

  A model with a trained D also writes D beside it (`discriminator_path`): stage 2 can then
  resume from committed files without D starting over, which cost a few hundred CPU steps
  each time it did. `bits` is the codec's large kernels' precision, `generator_bits` G's
  when it differs (D keeps 8).
  """
  _save(keyed_variables(model), path, bits, generator_bits)
  if model.discriminator is not None:
    _save(_by_position(model.discriminator_state()), discriminator_path(path),
          DEFAULT_BITS if bits is not None else None, keyed_by_name=False)


def load_weights(model, path, grow=False):
  """Assigns weights from `save_weights` (int8 + scale or float16) to a built model.

  D's file, when present beside `path` and the model has a D, is loaded too. `grow` (training
  from a codec): a model with rate gains (gains.py) may start from a single-rate codec's file,
  its gains left as initialised (2^rate alone), and a single-rate model from a gain-unit
  codec's, whose gains it has no use for. Returns whether D was loaded.
  """
  entries = list(keyed_variables(model))
  skipped = ()
  if grow:
    with np.load(path) as stored:
      stored_parts = {key.split("/")[0] for key in stored.files}
    model_parts = {key.split("/")[0] for key, _, _ in entries}
    missing = [part for part in OPTIONAL_PARTS if part in model_parts - stored_parts]
    entries = [entry for entry in entries if entry[0].split("/")[0] not in missing]
    skipped = tuple(part for part in OPTIONAL_PARTS if part in stored_parts - model_parts)
  # A lean bfloat16 G cannot give its float32 values back: the fingerprint is kept here.
  model.stored_fingerprint = _load(entries, path, skipped, grow)  # None when all float32.
  d_path = discriminator_path(path)
  if model.discriminator is None or not d_path.is_file():
    return False
  _load(_by_position(model.discriminator_state()), d_path)
  return True


def fingerprint(model):
  """First 8 bytes of SHA-256 over the codec's weights: position, shape and float32 values
  (over the bitstream's weights alone where the config's fingerprint_scope says so).

  Positions ("encoder/007") rather than Keras names, which depend on how many layers the
  process created before: the same weights give the same fingerprint in any process.
  """
  if model.config.fingerprint_scope == "bitstream":
    return bitstream_fingerprint(model)
  return weights_fingerprint(model)


def weights_fingerprint(model):
  """The fingerprint of all the codec's weights, whatever the config's fingerprint_scope."""
  recorded = getattr(model, "stored_fingerprint", None)
  if recorded is not None:
    # Only a lean generator's model has one (load_weights, sources.build_model): it holds
    # bfloat16 copies of the loaded weights, and files carry the float32 values' fingerprint.
    return recorded
  digest = hashlib.sha256()
  for key, variable in model.codec_variables():
    _update_fingerprint(digest, key, np.ascontiguousarray(variable.numpy(), np.float32))
  return digest.digest()[:bitstream.FINGERPRINT_BYTES]


def bitstream_fingerprint(model):
  """First 8 bytes of SHA-256 over the weights that decide a file's bits: E, the hyperprior
  and the gains (HiFiC.bitstream_modules), as `fingerprint` but without the decoder.

  A codec whose card says `"fingerprint": "bitstream"` writes this into its files, so a later
  decoder trained on the same frozen bitstream (training/decoder_stage.py) reads them.
  """
  digest = hashlib.sha256()
  for key, variable in model.bitstream_variables():
    _update_fingerprint(digest, key, np.ascontiguousarray(variable.numpy(), np.float32))
  return digest.digest()[:bitstream.FINGERPRINT_BYTES]


def _update_fingerprint(digest, key, values):
  position = "/".join(key.split("/")[:2])
  digest.update(f"{position}:{tuple(values.shape)}".encode())
  digest.update(values.tobytes())
