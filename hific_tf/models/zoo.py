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

`bundled/presets.json` names rates of the one model: `small-mi` and `small-hi` are small-lo at
the rate where its files are no larger than those of the codecs the names stood for until
1.0.0. Those codecs' weights stay, unchanged, in `bundled/compat/NAME-vN/` as decoders of the
files they wrote (found by the fingerprint in a file's header); nothing new is coded with them.

A codec directory is any folder with these files: `hific import` writes one from the PyTorch
port's checkpoints (weights stored as float32, exactly as imported), and every command that
takes a bundled name takes such a folder's path too. Placed in `bundled/`, it is listed by
`hific models` like the codecs that ship.

The storage format is models/hific/stored_weights.py's. This module is the catalogue: names,
cards, the weights a name stands for and the Keras model built from them; it loads TensorFlow
only to build a model. serving/resolve.py turns a name into a codec.
"""

import datetime
import json
import pathlib
import shutil
import tempfile

from hific_tf import runtime
from hific_tf.configs import Config
from hific_tf.errors import HificError, OutputExistsError, UsageError

BUNDLED_DIR = pathlib.Path(__file__).parents[1] / "bundled"
COMPAT_DIR = BUNDLED_DIR / "compat"
PRESETS = BUNDLED_DIR / "presets.json"
DEFAULT_CODEC = "small-lo"
CARD, CONFIG, WEIGHTS = "card.json", "config.json", "weights.npz"


class UnknownCodecError(UsageError):
  """A --model that is neither a bundled codec name nor a SavedModel folder."""


def names():
  """Bundled codec names, sorted by target rate."""
  cards = [load_card(p.parent.name) for p in sorted(BUNDLED_DIR.glob("*/card.json"))
           if (p.parent / "weights.npz").is_file()] if BUNDLED_DIR.is_dir() else []
  return [c["name"] for c in sorted(cards, key=lambda c: c["target_bpp"])]


def presets():
  """{name: {"codec", "rate", "replaces", ...}}: names that stand for a bundled codec at a rate."""
  if not PRESETS.is_file():
    return {}
  entries, available = json.loads(PRESETS.read_text())["presets"], names()
  return {name: entry for name, entry in entries.items() if entry["codec"] in available}


def compat_decoders():
  """The folders of earlier bundled codecs kept to decode the files they wrote, by name."""
  if not COMPAT_DIR.is_dir():
    return []
  return sorted(p for p in COMPAT_DIR.iterdir() if is_codec_dir(p))


def is_codec_dir(path):
  """True if `path` is a folder holding a codec's card, config and weights."""
  path = pathlib.Path(path)
  return all((path / part).is_file() for part in (CARD, CONFIG, WEIGHTS))


def codec_dir(source):
  """The folder a bundled codec name or a codec directory's path stands for."""
  if is_codec_dir(source):
    return pathlib.Path(source)
  if "/" not in str(source) and is_codec_dir(BUNDLED_DIR / str(source)):
    return BUNDLED_DIR / str(source)
  known = ", ".join(names()) or "none"
  raise UnknownCodecError(f"no bundled codec or codec folder '{source}' (bundled: {known})")


def load_card(source):
  try:
    return json.loads((codec_dir(source) / CARD).read_text())
  except (ValueError, OSError) as error:
    raise HificError(f"{source}: unreadable {CARD} ({error.__class__.__name__})") from None


def load_config(source):
  """The Config a bundled codec or codec directory was trained (or imported) with."""
  try:
    return Config.from_json((codec_dir(source) / CONFIG).read_text()).check()
  except (ValueError, TypeError, OSError) as error:
    raise HificError(f"{source}: unreadable {CONFIG} ({error.__class__.__name__})") from None


def by_fingerprint(fingerprint_hex):
  """What reads files with this fingerprint, or None: a bundled codec (its own files, or the
  files of a codec its decoder was retrained from), else a kept compatibility decoder's
  folder (as a path a --model takes)."""
  for name in names():
    if load_card(name).get("fingerprint") == fingerprint_hex:
      return name
  for name in names():
    if fingerprint_hex in load_config(name).reads_fingerprints:
      return name
  for folder in compat_decoders():
    if load_card(folder).get("fingerprint") == fingerprint_hex:
      return str(folder)
  return None


def codec_version(fingerprint_hex):
  """'NAME vN' of the codec version whose files carry this fingerprint, or None."""
  cards = [load_card(name) for name in names()] + [load_card(p) for p in compat_decoders()]
  for card in cards:
    if card.get("fingerprint") == fingerprint_hex:
      return f"{card['name']} v{card.get('version', 1)}"
  entry = released_codec(fingerprint_hex)
  return None if entry is None else f"{entry['codec']} v{entry['version']}"


def released_codec(fingerprint_hex):
  """What bundled/history.json knows of a codec version the repository once shipped, by the
  fingerprint its files carry: {codec, version, date, releases, commit}, or None."""
  path = BUNDLED_DIR / "history.json"
  if not path.is_file():
    return None
  return json.loads(path.read_text()).get("codecs", {}).get(fingerprint_hex)


def where_it_decodes(fingerprint_hex):
  """A sentence naming the release (or commit) that decodes files of an earlier codec
  version that no bundled codec reads any more, or None for an unknown fingerprint."""
  entry = released_codec(fingerprint_hex)
  if entry is None:
    return None
  made_by = f"{entry['codec']} v{entry['version']} ({entry['date']})"
  if entry["releases"]:
    release = entry["releases"][-1]
    return f"{made_by}, which hific_tf {release} decodes (its git commit {entry['commit']})"
  return (f"{made_by}, shipped between releases: git checkout {entry['commit']} of hific_tf "
          "decodes it")


def weights_file(source):
  """The weights .npz that `source` names (a bundled codec, a codec folder or a .npz file),
  or None."""
  if str(source).endswith(".npz") and pathlib.Path(source).is_file():
    return pathlib.Path(source)
  if is_codec_dir(source) or source in names():
    return codec_dir(source) / WEIGHTS
  return None


def build_model(source, generator_dtype=None, encoder_dtype=None):
  """A bundled codec or codec folder as a HiFiC Keras model with its weights (no coders), for
  coding: a bfloat16 generator keeps its weights in bfloat16 (networks.Generator's `lean`)."""
  # TensorFlow: only when a model is needed.
  from hific_tf.models.hific import stored_weights
  from hific_tf.models.hific.model import HiFiC
  config = load_config(source)
  runtime.check_bfloat16(f"codec {source}", (generator_dtype, encoder_dtype))
  model = HiFiC(config.replace(stage="mselpips"), generator_dtype=generator_dtype,
                encoder_dtype=encoder_dtype, lean_generator=True).build_all()
  stored_weights.load_weights(model, codec_dir(source) / WEIGHTS)
  return model


def write_codec_dir(model, directory, card, bits=None, force=False):
  """Writes `model` as a codec folder (card, config, weights), all at once or not at all.

  The files are written into a staging folder beside `directory` and renamed into place, so
  no reader ever sees a partial codec. `bits` None stores every weight as float32 (lossless);
  2 to 8 store large kernels as integer codes (models/hific/stored_weights.py). The card gets
  the weights' fingerprint, parameter count and today's date.
  """
  from hific_tf.models.hific import stored_weights
  directory = pathlib.Path(directory)
  if directory.exists() and not force:
    raise OutputExistsError(f"{directory} exists (use --force to replace it)")
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
  try:
    card = dict(card, config=model.config.name,
                fingerprint=stored_weights.fingerprint(model).hex(),
                parameters=sum(int(v.shape.num_elements()) for _, v in model.codec_variables()),
                weights_bits=bits or 32, date=card.get("date") or str(datetime.date.today()))
    stored_weights.save_weights(model, staging / WEIGHTS, bits=bits)
    (staging / CONFIG).write_text(model.config.to_json())
    (staging / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    if directory.exists():
      shutil.rmtree(directory)
    staging.rename(directory)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return card
