"""The codecs that ship inside hific_tf: trained here, stored in the repository, used by name.

Mentzer et al. (NeurIPS 2020) publish HiFiC weights that cannot be fetched on an offline
machine, and the full model cannot be trained on a CPU. So hific_tf ships small models of the
paper's topology trained with its own recipe (docs/MODELS.md). Each lives in
`bundled/NAME/`:

  card.json     name, config, target and measured bpp, parameters, held-out figures
  config.json   the Config it was trained with
  weights.npz   encoder, generator and hyperprior variables in a fixed order: large kernels as
                int8 with per-channel scales, the rest in float16
  weights.discriminator.npz
                stage 2's D in the same format (not part of the codec): with it,
                `hific train --init_from NAME` continues the GAN instead of restarting D

Narrow storage keeps two rungs inside the repository's 40 MB budget; the weights are widened
to float32 on load, so every machine computes the same model and the same fingerprint, and
decoding stays deterministic.
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


# Kernels of at least this many values are stored as int8 codes with one float32 scale per
# slice of the last axis; everything else (biases, norms, the z prior) as float16. On
# small-lo that halves the file (two rungs fit the 40 MB budget) for +0.2% bpp and +0.0015
# LPIPS on the held-out photos (docs/MODELS.md). Widening is one float32 multiply per
# value, so every machine rebuilds the same float32 weights and decoding stays deterministic.
INT8_MIN_VALUES = 4096
SCALE_SUFFIX = ".scale"


def _stored_as_int8(key, values):
  return values.ndim >= 2 and values.size >= INT8_MIN_VALUES and "DeepFactorized" not in key


def quantize_int8(values):
  """(int8 codes, float32 scales) per last-axis slice; |error| <= scale / 2 per value."""
  values = np.asarray(values, np.float32)
  scale = np.abs(values).max(axis=tuple(range(values.ndim - 1))) / 127.
  scale = np.where(scale > 0, scale, 1.).astype(np.float32)
  return np.clip(np.round(values / scale), -127, 127).astype(np.int8), scale


def dequantize_int8(codes, scale):
  return codes.astype(np.float32) * scale.astype(np.float32)


def _save(named_variables, path):
  arrays = {}
  for key, variable in named_variables:
    values = variable.numpy()
    if _stored_as_int8(key, values):
      arrays[key], arrays[key + SCALE_SUFFIX] = quantize_int8(values)
    else:
      arrays[key] = values.astype(np.float16)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  images_lib.write_atomic(path, buffer.getvalue(), force=True)


def _load(named_variables, path):
  with np.load(path) as stored:
    tensors = [key for key in stored.files if not key.endswith(SCALE_SUFFIX)]
    expected = list(named_variables)
    if len(tensors) != len(expected):
      raise HificError(f"{path}: {len(tensors)} tensors, the model has {len(expected)}")
    position = lambda key: "/".join(key.split("/")[:2])  # "part/index"; names may differ.
    by_position = {position(key): key for key in tensors}
    for key, variable in expected:
      stored_key = by_position.get(position(key))
      if stored_key is None or stored[stored_key].shape != tuple(variable.shape):
        raise HificError(f"{path}: no tensor of shape {tuple(variable.shape)} for {key}")
      values = stored[stored_key]
      if values.dtype == np.int8:
        values = dequantize_int8(values, stored[stored_key + SCALE_SUFFIX])
      variable.assign(values.astype(variable.dtype.as_numpy_dtype))


def discriminator_path(weights_path):
  """Where D's weights sit beside a weights file: NAME.npz -> NAME.discriminator.npz."""
  weights_path = pathlib.Path(weights_path)
  return weights_path.with_name(weights_path.stem + ".discriminator.npz")


def save_weights(model, path):
  """Writes the codec's variables (before build_coders adds coding tables) as a .npz.

  A model with a trained D also writes D beside it (`discriminator_path`): stage 2 can then
  resume from committed files without D starting over, which cost a few hundred CPU steps
  each time it did.
  """
  _save(model.codec_variables(), path)
  if model.discriminator is not None:
    _save(model.discriminator_state(), discriminator_path(path))


def load_weights(model, path):
  """Assigns weights from `save_weights` (int8 + scale or float16) to a built model.

  D's file, when present beside `path` and the model has a D, is loaded too.
  Returns whether D was loaded.
  """
  _load(model.codec_variables(), path)
  d_path = discriminator_path(path)
  if model.discriminator is None or not d_path.is_file():
    return False
  _load(model.discriminator_state(), d_path)
  return True


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
