"""From what a user types to a working codec: `hific_tf.load_codec`.

One call for the command line, the server, bin/ and bench/, in the spirit of CompressAI's
zoo: a bundled name, a codec folder, a training run's model_dir, a weights .npz, a SavedModel,
a `--serving` SavedModel or a `--tflite` folder (models/sources.py tells them apart). The
first four have Keras weights: their SavedModel is exported into the user cache on first use
(keyed by the weights' fingerprint and config) and reused afterwards.
"""

import hashlib
import os
import pathlib

from hific_tf import images as images_lib
from hific_tf.errors import HificError, UsageError
from hific_tf.models import sources, zoo


def cache_root():
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "hific_tf" / "codecs"


def saved_model_path(source, log=None, generator_dtype="float32", config=None):
  """The SavedModel folder of a codec with Keras weights, exported into the cache on first
  use, its generator computing in `generator_dtype`.

  The export goes to a temporary folder and is renamed into place, so two processes that
  race each produce a complete SavedModel and one of them wins; neither sees a partial one.
  A bundled codec or codec folder is found by its card's fingerprint without building the
  model; a model_dir or weights file is built first (its fingerprint names the cache entry).
  """
  from hific_tf.models.hific import stored_weights
  from hific_tf.serving import codec
  source = source if isinstance(source, sources.CodecSource) else sources.source_of(source)
  model = None
  if source.kind in (sources.BUNDLED, sources.CODEC_DIR):
    card = zoo.load_card(source.path)
    label, fingerprint = card.get("name") or source.path.name, card["fingerprint"]
    config_text = (source.path / zoo.CONFIG).read_bytes()
    weights_id = images_lib.sha256_of(source.path / zoo.WEIGHTS)[:8]
  else:
    model = sources.build_model(source, config=config)
    label = source.label
    fingerprint = stored_weights.fingerprint(model).hex()
    config_text = model.config.to_json().encode()
    weights_id = stored_weights.weights_fingerprint(model).hex()[:8]
  # The config too: the same weights under another layout are another codec. And the weights
  # themselves: a fingerprint may name only the bitstream, which retrained decoders share.
  layout = hashlib.sha256(config_text).hexdigest()[:8]
  target = (cache_root() /
            f"{label}-{fingerprint}-{weights_id}-{layout}-v{codec.EXPORT_VERSION}")
  if generator_dtype != "float32":
    target = target.with_name(f"{target.name}-g-{generator_dtype.replace('mixed_', '')}")
  if (target / "saved_model.pb").is_file():
    return target
  if log:
    log(f"building the SavedModel of '{source.text}' (first use, seconds to a minute)")
  if model is None or generator_dtype != "float32":
    model = sources.build_model(source, generator_dtype=generator_dtype, config=config)
  if stored_weights.fingerprint(model).hex() != fingerprint:
    raise HificError(f"codec '{source.text}': weights fingerprint "
                     f"{stored_weights.fingerprint(model).hex()} does not match its card "
                     f"({fingerprint})")
  codec.export_to(model, target)
  return target


def load_codec(source, max_pixels=None, log=None, precision="auto", config=None):
  """A codec with `compress(image)` and `decompress(file)` from any of the seven sources.

  Args:
    source: what the user typed (models/sources.py), or a CodecSource.
    max_pixels: the largest image the codec codes or decodes (default: the container's).
    log: called with a line when a SavedModel is built on first use.
    precision: runtime.CODING_PRECISIONS, the generator's compute type for a codec with Keras
      weights, built for this machine; "auto" is bfloat16 where the CPU computes it natively.
      An exported folder computes in the types it was exported with: asking it for another
      one is refused rather than ignored.
    config: a weights file's config (a name or Config) when no card beside it names one.
  """
  from hific_tf import runtime
  from hific_tf.serving import codec, split, tflite
  limits = {} if max_pixels is None else {"max_pixels": max_pixels}
  source = source if isinstance(source, sources.CodecSource) else sources.source_of(source)
  if source.has_keras_model:
    directory = saved_model_path(source, log=log, config=config,
                                 generator_dtype=runtime.generator_dtype(precision))
    loaded = codec.SavedModelCodec(directory, **limits)
    loaded.effort_source = source  # Its Keras model, for `compress(effort=)`.
    loaded.default_rate = loaded.checked_rate(source.rate)  # A preset's rate.
  else:
    if source.kind == sources.TFLITE:
      loaded = tflite.TfliteCodec(source.path, **limits)
    elif source.kind == sources.SERVING or split.is_serving_model(source.path):
      loaded = split.SplitCodec(source.path, **limits)
    else:
      loaded = codec.SavedModelCodec(source.path, **limits)
    exported = loaded.info.get("generator_dtype", "float32")
    if precision not in ("auto", exported):
      raise UsageError(f"--precision {precision}: {source.text} computes its generator in "
                       f"{exported}, fixed when it was exported (`hific export "
                       f"--generator_dtype`)")
  loaded.label = source.label  # The name the user gave, for /health and the page.
  return loaded


def codec_name(model=None, target_bpp=None):
  """--model, else the default bundled codec: the one model codes at every rate, so a
  --target_bpp picks its rate, not another codec."""
  if target_bpp is not None and target_bpp <= 0:
    raise UsageError("--target_bpp must be positive")
  if model:
    return model
  if zoo.DEFAULT_CODEC not in zoo.names():
    raise UsageError("no bundled codec in this installation; pass --model SAVEDMODEL")
  return zoo.DEFAULT_CODEC
