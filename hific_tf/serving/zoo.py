"""The codecs that ship inside hific_tf: trained here, stored in the repository, used by name.

Mentzer et al. (NeurIPS 2020) publish HiFiC weights that cannot be fetched on an offline
machine, and the full model cannot be trained on a CPU. So hific_tf ships small models of the
paper's topology trained with its own recipe (docs/MODELS.md). Each lives in
`bundled/NAME/`:

  card.json     name, config, target and measured bpp, parameters, held-out figures
  config.json   the Config it was trained with
  weights.npz   encoder, generator and hyperprior variables in float16, in a fixed order

float16 halves the repository's size; the weights are widened to float32 on load, so every
machine computes the same model and the same fingerprint, and decoding stays deterministic.
The SavedModel of a bundled codec is exported on first use into the user cache (keyed by
its fingerprint) and reused afterwards.
"""

import io
import json
import os
import pathlib

import numpy as np

from hific_tf.configs import Config
from hific_tf.errors import HificError, UsageError
from hific_tf import images as images_lib

BUNDLED_DIR = pathlib.Path(__file__).parent / "bundled"
DEFAULT_CODEC = "small-lo"


class UnknownCodecError(UsageError):
  """A --model that is neither a bundled codec name nor a SavedModel folder."""


def names():
  """Bundled codec names, sorted by target rate."""
  cards = [load_card(p.parent.name) for p in sorted(BUNDLED_DIR.glob("*/card.json"))
           if (p.parent / "weights.npz").is_file()] if BUNDLED_DIR.is_dir() else []
  return [c["name"] for c in sorted(cards, key=lambda c: c["target_bpp"])]


def load_card(name):
  path = BUNDLED_DIR / name / "card.json"
  if not path.is_file():
    known = ", ".join(names()) or "none"
    raise UnknownCodecError(f"no bundled codec '{name}' (bundled: {known})")
  return json.loads(path.read_text())


def closest_to_rate(target_bpp):
  """The bundled codec whose measured held-out rate is closest to `target_bpp` (as tfci)."""
  available = names()
  if not available:
    raise HificError("this installation has no bundled codecs")
  cards = [load_card(n) for n in available]
  rate = lambda card: card.get("heldout", {}).get("bpp", card["target_bpp"])
  return min(cards, key=lambda card: abs(rate(card) - target_bpp))["name"]


def by_fingerprint(fingerprint_hex):
  """The bundled codec with these weights, or None."""
  for name in names():
    if load_card(name).get("fingerprint") == fingerprint_hex:
      return name
  return None


def save_weights(model, path):
  """Writes the codec's variables as float16 .npz (before build_coders adds coding tables)."""
  arrays = {key: variable.numpy().astype(np.float16) for key, variable in
            model.codec_variables()}
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  images_lib.write_atomic(path, buffer.getvalue(), force=True)


def load_weights(model, path):
  """Assigns float16 weights from `save_weights` to a freshly built model, checking shapes."""
  with np.load(path) as stored:
    expected = list(model.codec_variables())
    if len(stored.files) != len(expected):
      raise HificError(f"{path}: {len(stored.files)} tensors, the model has {len(expected)}")
    position = lambda key: "/".join(key.split("/")[:2])  # "part/index"; names may differ.
    by_position = {position(key): key for key in stored.files}
    for key, variable in expected:
      stored_key = by_position.get(position(key))
      if stored_key is None or stored[stored_key].shape != tuple(variable.shape):
        raise HificError(f"{path}: no tensor of shape {tuple(variable.shape)} for {key}")
      variable.assign(stored[stored_key].astype(variable.dtype.as_numpy_dtype))


def build_model(name, generator_dtype=None, encoder_dtype=None):
  """The bundled codec `name` as a HiFiC Keras model with its weights (coders not built)."""
  from hific_tf.models.hific.model import HiFiC  # TensorFlow: only when a model is needed.
  load_card(name)
  config = Config.from_json((BUNDLED_DIR / name / "config.json").read_text())
  model = HiFiC(config.replace(stage="mselpips"), generator_dtype=generator_dtype,
                encoder_dtype=encoder_dtype).build_all()
  load_weights(model, BUNDLED_DIR / name / "weights.npz")
  return model


def cache_root():
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "hific_tf" / "codecs"


def saved_model_path(name, log=None):
  """The SavedModel folder of bundled codec `name`, exported into the cache on first use.

  The export goes to a temporary folder and is renamed into place, so two processes that
  race each produce a complete SavedModel and one of them wins; neither sees a partial one.
  """
  from hific_tf.serving import codec  # pylint: disable=g-import-not-at-top
  card = load_card(name)
  target = cache_root() / f"{name}-{card['fingerprint']}-v{codec.EXPORT_VERSION}"
  if (target / "saved_model.pb").is_file():
    return target
  if log:
    log(f"building the SavedModel of '{name}' (first use, a few seconds)")
  model = build_model(name)
  fingerprint = codec.weights_fingerprint(model).hex()
  if fingerprint != card["fingerprint"]:
    raise HificError(f"bundled codec '{name}': weights fingerprint {fingerprint} "
                     f"does not match its card ({card['fingerprint']})")
  codec.export_to(model, target)
  return target
