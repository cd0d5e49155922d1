"""From what a user types to the codec it means: one answer for every command and script.

A HiFiC codec (Mentzer et al., NeurIPS 2020) reaches a user in seven forms: a bundled name
(`small-lo`, or a preset such as `small-mi`: the one model at a rate), a codec folder
(`hific import`'s, or a bundled one's path), a training run's model_dir, a weights file
(`checkpoints/NAME.npz`, a rung still in training), a SavedModel (`hific export`), a stock-op
`--serving` SavedModel and a `--tflite` folder. `source_of` tells
them apart from the files alone, without TensorFlow, so the CLI can choose its kernels first;
`build_model` turns the first four into a Keras model with its weights. The serving layer
turns any of them into a codec (`hific_tf.load_codec`, serving/resolve.py).

Layout of a model_dir (training/train.py writes it):
  config.json        the Config the run used
  checkpoints/       tf.train checkpoints (ckpt-STEP) of E, G, the hyperprior and D
"""

import dataclasses
import json
import pathlib
import re

from hific_tf import configs
from hific_tf.models import zoo

# What a source can be; the first four have weights a Keras model can load.
BUNDLED, CODEC_DIR, MODEL_DIR, WEIGHTS = "bundled", "codec folder", "model_dir", "weights file"
SAVED_MODEL, SERVING, TFLITE = "SavedModel", "serving SavedModel", "TFLite folder"
KERAS_KINDS = (BUNDLED, CODEC_DIR, MODEL_DIR, WEIGHTS)

MODEL_DIR_CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
# An exported folder's facts, readable without TensorFlow (serving/codec.py writes them).
EXPORT_INFO = pathlib.Path("assets.extra") / "hific_codec.json"


class SourceError(zoo.UnknownCodecError):
  """What the user named is no codec this package can read."""


@dataclasses.dataclass(frozen=True)
class CodecSource:
  """A codec as the user named it, and which of the seven forms it is.

  Attributes:
    text: what the user typed.
    kind: one of BUNDLED, CODEC_DIR, MODEL_DIR, WEIGHTS, SAVED_MODEL, SERVING, TFLITE.
    path: the file or folder it stands for (a bundled name's folder in the package).
    rate: the rate it codes at unless asked for another: a preset's (bundled/presets.json),
      else 0, the model's own.
  """
  text: str
  kind: str
  path: pathlib.Path
  rate: float = 0.

  @property
  def has_keras_model(self):
    return self.kind in KERAS_KINDS

  @property
  def label(self):
    """A short name for reports: the bundled name, else the folder's or file's name."""
    return self.text if self.kind == BUNDLED else self.path.name


def is_model_dir(path):
  path = pathlib.Path(path)
  return (path / MODEL_DIR_CONFIG).is_file() and (path / CHECKPOINTS).is_dir()


def source_of(text):
  """The CodecSource `text` names; a one-line SourceError when it names none."""
  text = str(text)
  path = pathlib.Path(text)
  if zoo.is_codec_dir(path):
    return CodecSource(text, CODEC_DIR, path)
  if not path.exists() and "/" not in text:
    if text in zoo.names():
      return CodecSource(text, BUNDLED, zoo.codec_dir(text))
    preset = zoo.presets().get(text)
    if preset:
      return CodecSource(text, BUNDLED, zoo.codec_dir(preset["codec"]), float(preset["rate"]))
  if path.is_file() and path.suffix == ".npz":
    return CodecSource(text, WEIGHTS, path)
  if path.is_dir():
    if is_model_dir(path):
      return CodecSource(text, MODEL_DIR, path)
    if any(path.glob("*.tflite")) and (path / "coding" / "saved_model.pb").is_file():
      return CodecSource(text, TFLITE, path)
    if (path / "saved_model.pb").is_file():
      # Folders exported before the info named their kind are told apart by their graph
      # (serving/resolve.py).
      kind = {"serving": SERVING}.get(export_info(path).get("kind"), SAVED_MODEL)
      return CodecSource(text, kind, path)
  bundled = ", ".join(zoo.names() + sorted(zoo.presets())) or "none"
  raise SourceError(f"{text}: not a bundled codec ({bundled}), a codec "
                    f"folder, a model_dir, a weights .npz, a SavedModel or a TFLite folder")


def export_info(folder):
  """The export info an exported folder carries ({} for folders exported before it)."""
  try:
    return json.loads((pathlib.Path(folder) / EXPORT_INFO).read_text())
  except (OSError, ValueError):
    return {}


def read_config(model_dir):
  """The Config a model_dir's run used."""
  path = pathlib.Path(model_dir) / MODEL_DIR_CONFIG
  if not path.is_file():
    raise SourceError(f"{model_dir} is not a hific model_dir (no {MODEL_DIR_CONFIG})")
  try:
    return configs.Config.from_json(path.read_text())
  except (ValueError, TypeError) as error:
    raise SourceError(f"{path}: unreadable ({error.__class__.__name__})") from None


def checkpoint_step(model_dir):
  """The step of a model_dir's latest checkpoint (0 when it has none), without TensorFlow.

  `hific train` numbers checkpoints by step (checkpoints/ckpt-STEP); the index file names
  the latest.
  """
  index = pathlib.Path(model_dir) / CHECKPOINTS / "checkpoint"
  if not index.is_file():
    return 0
  found = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', index.read_text(), re.M)
  return int(found.group(1)) if found else 0


def latest_checkpoint(model_dir):
  import tensorflow as tf
  found = tf.train.latest_checkpoint(str(pathlib.Path(model_dir) / CHECKPOINTS))
  if not found:
    raise SourceError(f"no checkpoint in {model_dir}/{CHECKPOINTS}")
  return found


def config_of(source, config=None):
  """The Config a Keras-kind source was trained with.

  A weights file carries none of its own: it takes `config` (a Config or a config name), else
  the config its card beside it names (`checkpoints/NAME.card.json`).
  """
  if isinstance(config, str):
    config = configs.get_config(config)
  if source.kind in (BUNDLED, CODEC_DIR):
    return config or zoo.load_config(source.path)
  if source.kind == MODEL_DIR:
    return config or read_config(source.path)
  if source.kind == WEIGHTS:
    if config is not None:
      return config
    card = source.path.with_suffix(".card.json")
    try:
      return configs.get_config(json.loads(card.read_text())["config"])
    except (OSError, ValueError, KeyError):
      raise SourceError(f"{source.text}: a weights file needs its config (--config, or a "
                        f"card {card.name} beside it)") from None
  raise SourceError(f"{source.text}: a {source.kind} holds a graph, not weights to build a "
                    f"Keras model from")


def codec_checkpoint(model, with_discriminator=True, parts_present=None):
  """The tf.train.Checkpoint of everything a trained model is (optimizers excluded).

  `parts_present`: restoring, only the parts a checkpoint holds (a model grows the rate
  gains or the realism knob from a checkpoint without them: those start as initialised).
  """
  import tensorflow as tf

  from hific_tf.models.hific import stored_weights
  parts = dict(model.codec_modules)
  if parts_present is not None:
    parts = {name: part for name, part in parts.items()
             if name in parts_present or name not in stored_weights.OPTIONAL_PARTS}
  if with_discriminator and model.discriminator is not None:
    parts["discriminator"] = model.discriminator
  return tf.train.Checkpoint(**parts)


def restore_checkpoint(model, checkpoint_path):
  """Loads E, G, the hyperprior and, when both have one, D from a codec checkpoint.

  Returns whether D was restored.
  """
  import tensorflow as tf
  stored = {name.split("/")[0] for name, _ in tf.train.list_variables(checkpoint_path)}
  with_discriminator = model.discriminator is not None and "discriminator" in stored
  codec_checkpoint(model, with_discriminator=with_discriminator, parts_present=stored).restore(
      checkpoint_path).expect_partial().assert_existing_objects_matched()
  return with_discriminator


def restore(model, source):
  """Loads E, G and the hyperprior of `source` (a CodecSource or its text) into `model`.

  A bundled codec's stored weights (int8 kernels, float16 rest) are the committed state of
  the shipped models' training, so `--init_from small-lo` continues from what is in the
  repository (the optimizers restart). When `model` has a D and the source holds one (a
  stage-2 model_dir, or NAME.discriminator.npz beside the weights), D is restored as well: a
  freshly initialised D took about 700 CPU steps to tell real from fake again. Returns whether
  D was restored. A model with rate gains grows from a single-rate codec's weights: its
  gains start as initialised.
  """
  from hific_tf.models.hific import stored_weights
  source = source if isinstance(source, CodecSource) else source_of(source)
  if source.kind == MODEL_DIR:
    return restore_checkpoint(model, latest_checkpoint(source.path))
  if source.kind in (BUNDLED, CODEC_DIR):
    return stored_weights.load_weights(model, source.path / zoo.WEIGHTS, grow=True)
  if source.kind == WEIGHTS:
    return stored_weights.load_weights(model, source.path, grow=True)
  raise SourceError(f"{source.text}: a {source.kind} holds a graph, not weights to restore "
                    f"(use a bundled codec, codec folder, model_dir or weights .npz)")


def build_model(source, generator_dtype=None, encoder_dtype=None, config=None, lean=True):
  """A Keras HiFiC model with the weights of `source` (no coders), for coding.

  `lean`: a bfloat16 generator then holds its weights in bfloat16 (networks.Generator) and
  keeps the float32 weights' fingerprint, so its files name the same codec.
  """
  from hific_tf import runtime
  source = source if isinstance(source, CodecSource) else source_of(source)
  if source.kind in (BUNDLED, CODEC_DIR):
    return zoo.build_model(source.path, generator_dtype=generator_dtype,
                           encoder_dtype=encoder_dtype)
  import tensorflow as tf

  from hific_tf.models.hific import stored_weights
  from hific_tf.models.hific.model import HiFiC
  trained_config = config_of(source, config)
  runtime.check_bfloat16(f"codec {source.text}", (generator_dtype, encoder_dtype))
  model = HiFiC(trained_config, generator_dtype=generator_dtype,
                encoder_dtype=encoder_dtype).build_all()
  restore(model, source)
  if not lean or model.generator.dtype_policy.variable_dtype == (
      model.generator.dtype_policy.compute_dtype):
    return model
  lean_model = HiFiC(trained_config, generator_dtype=generator_dtype,
                     encoder_dtype=encoder_dtype, lean_generator=True).build_all()
  for (_, target), (_, weights) in zip(lean_model.codec_variables(), model.codec_variables()):
    target.assign(tf.cast(weights, target.dtype))
  lean_model.stored_fingerprint = stored_weights.fingerprint(model)
  return lean_model
