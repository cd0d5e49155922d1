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

The storage format is models/hific/stored_weights.py's. This module is the catalogue: names,
cards, the weights a name stands for and the Keras model built from them; it loads TensorFlow
only to build a model. serving/resolve.py turns a name into a codec.
"""

import json
import pathlib

from hific_tf.configs import Config
from hific_tf.errors import HificError, UsageError

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


def weights_file(source):
  """The weights .npz that `source` names (a bundled codec or a .npz file), or None."""
  if str(source).endswith(".npz") and pathlib.Path(source).is_file():
    return pathlib.Path(source)
  if source in names():
    return BUNDLED_DIR / source / "weights.npz"
  return None


def build_model(name, generator_dtype=None, encoder_dtype=None):
  """The bundled codec `name` as a HiFiC Keras model with its weights (coders not built)."""
  # TensorFlow: only when a model is needed.
  from hific_tf.models.hific import stored_weights
  from hific_tf.models.hific.model import HiFiC
  load_card(name)
  config = Config.from_json((BUNDLED_DIR / name / "config.json").read_text())
  model = HiFiC(config.replace(stage="mselpips"), generator_dtype=generator_dtype,
                encoder_dtype=encoder_dtype).build_all()
  stored_weights.load_weights(model, BUNDLED_DIR / name / "weights.npz")
  return model
