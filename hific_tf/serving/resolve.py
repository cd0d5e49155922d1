"""From what a user types to a codec: a bundled name, a codec folder (`hific import`'s), a
SavedModel folder or a serving one.

One resolver for the command line, the server and the benchmarks. The SavedModel of a bundled
codec or codec folder is exported into the user cache on first use (keyed by its weights'
fingerprint) and reused afterwards.
"""

import hashlib
import os
import pathlib

from hific_tf import zoo
from hific_tf.errors import HificError, UsageError
from hific_tf.models.hific import stored_weights


def cache_root():
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "hific_tf" / "codecs"


def saved_model_path(name, log=None, generator_dtype="float32"):
  """The SavedModel folder of bundled codec (or codec folder) `name`, exported into the
  cache on first use, its generator computing in `generator_dtype`.

  The export goes to a temporary folder and is renamed into place, so two processes that
  race each produce a complete SavedModel and one of them wins; neither sees a partial one.
  """
  from hific_tf.serving import codec
  card = zoo.load_card(name)
  label = card.get("name") or pathlib.Path(name).name
  # The config too: the same weights under another layout are another codec.
  layout = hashlib.sha256((zoo.codec_dir(name) / zoo.CONFIG).read_bytes()).hexdigest()[:8]
  target = cache_root() / f"{label}-{card['fingerprint']}-{layout}-v{codec.EXPORT_VERSION}"
  if generator_dtype != "float32":
    target = target.with_name(f"{target.name}-g-{generator_dtype.replace('mixed_', '')}")
  if (target / "saved_model.pb").is_file():
    return target
  if log:
    log(f"building the SavedModel of '{name}' (first use, seconds to a minute)")
  model = zoo.build_model(name, generator_dtype=generator_dtype)
  fingerprint = stored_weights.fingerprint(model).hex()
  if fingerprint != card["fingerprint"]:
    raise HificError(f"bundled codec '{name}': weights fingerprint {fingerprint} "
                     f"does not match its card ({card['fingerprint']})")
  codec.export_to(model, target)
  return target


def load_codec(source, max_pixels=None, log=None, precision="auto"):
  """A codec from a SavedModel folder (full or `--serving`), a TFLite codec folder
  (`--tflite`), a codec folder or a bundled codec name.

  `precision` (runtime.CODING_PRECISIONS) is the generator's compute type for a bundled
  codec or codec folder, built for this machine; "auto" is bfloat16 where the CPU computes it
  natively. An exported folder computes in the types it was exported with: asking it for
  another one is refused rather than ignored.
  """
  from hific_tf import runtime
  from hific_tf.serving import codec, split, tflite
  limits = {} if max_pixels is None else {"max_pixels": max_pixels}
  path = pathlib.Path(source)
  if zoo.is_codec_dir(path) or (not path.is_dir() and source in zoo.names()):
    directory = saved_model_path(source, log=log,
                                 generator_dtype=runtime.generator_dtype(precision))
    loaded = codec.SavedModelCodec(directory, **limits)
    loaded.effort_source = source  # Its Keras model, for `compress(effort=)`.
    return loaded
  if path.is_dir():
    if tflite.is_tflite_codec(path):
      loaded = tflite.TfliteCodec(path, **limits)
    elif split.is_serving_model(path):
      loaded = split.SplitCodec(path, **limits)
    else:
      loaded = codec.SavedModelCodec(path, **limits)
    exported = loaded.info.get("generator_dtype", "float32")
    if precision not in ("auto", exported):
      raise UsageError(f"--precision {precision}: {source} computes its generator in "
                       f"{exported}, fixed when it was exported (`hific export "
                       f"--generator_dtype`)")
    return loaded
  raise zoo.UnknownCodecError(f"--model {source}: neither a SavedModel folder, a codec folder "
                              f"nor a bundled codec (bundled: "
                              f"{', '.join(zoo.names()) or 'none'})")


def codec_name(model=None, target_bpp=None):
  """--model, else the bundled codec nearest --target_bpp, else the default bundled codec."""
  if model and target_bpp is not None:
    raise UsageError("give --model or --target_bpp, not both")
  if target_bpp is not None:
    if target_bpp <= 0:
      raise UsageError("--target_bpp must be positive")
    return zoo.closest_to_rate(target_bpp)
  if model:
    return model
  if zoo.DEFAULT_CODEC not in zoo.names():
    raise UsageError("no bundled codec in this installation; pass --model SAVEDMODEL")
  return zoo.DEFAULT_CODEC
