"""Named HiFiC configurations.

Configs are data: one JSON file per name in the repository's `configs/` folder (installed as
`hific_tf/configs_data`). A file may name another with "extends" and override some of its keys,
so stage 2 (`hific-lo`) is stage 1 (`mselpips-lo`) plus the GAN. The numbers are those of
Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020 (arXiv 2006.09965),
as released in tensorflow/compression models/hific; see docs/ARCHITECTURE.md for the one
deliberate difference (lambda_b).
"""

import dataclasses
import json
import pathlib

from hific_tf.errors import InputNotFoundError, UsageError

_SEARCH_PATHS = (
    pathlib.Path(__file__).parent / "configs_data",   # Installed wheel.
    pathlib.Path(__file__).parent.parent / "configs",  # Source checkout / editable install.
)

STAGES = ("mselpips", "hific")


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number a HiFiC model and its training recipe are built from.

  Rates are in bits per pixel; `lambda_a`/`lambda_b` weigh the rate above/below the target
  (lambda' in the paper); `k_mse` weighs the MSE of [0, 255] pixel values, `k_lpips` LPIPS and
  `beta_gan` the generator's non-saturating GAN loss. `entropy_learning_rate` (default: the
  `learning_rate`) drives the factorized prior on z: tfc's prior starts about ten times too
  wide, and at 2e-4 it needs ~10k steps to fit, so a short run pays ~1.5 bits per z symbol
  (docs/MODELS.md); the official 1M-step recipe never notices. `crop_target_bpp` (default:
  `target_bpp`) is the r_t that training applies to its crops: whole photos cost more bits per
  pixel than 256² crops (small-lo: 0.155 against about 0.12), so a codec meant to land whole
  photos on `target_bpp` trains against a lower crop target. `random_flip` mirrors half of
  the training crops (the paper's recipe has no flips; on a few dozen photos they widen the
  set: bench/generalisation.py).
  """
  name: str
  stage: str
  target_bpp: float
  lambda_a: float
  lambda_b: float
  k_mse: float
  k_lpips: float
  beta_gan: float
  num_filters_base: int
  num_residual_blocks: int
  latent_channels: int
  hyper_filters: int
  disc_filters_base: int
  disc_latent_channels: int
  num_scales: int
  scale_min: float
  scale_max: float
  lpips_net: str
  warmup_steps: int
  warmup_target_factor: float
  warmup_lambda_factor: float
  learning_rate: float
  lr_drop_step: int
  lr_drop_factor: float
  batch_size: int
  crop_size: int
  num_steps: int
  description: str = ""
  entropy_learning_rate: float | None = None
  crop_target_bpp: float | None = None
  random_flip: bool = False

  @property
  def training_target_bpp(self):
    """r_t of the rate loss on training crops."""
    return self.target_bpp if self.crop_target_bpp is None else self.crop_target_bpp

  @property
  def use_gan(self):
    return self.stage == "hific"

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text):
    return cls(**json.loads(text))


def _config_dir():
  for path in _SEARCH_PATHS:
    if path.is_dir():
      return path
  raise InputNotFoundError("hific_tf: no configs folder found in " +
                          ", ".join(map(str, _SEARCH_PATHS)))


def list_configs():
  """Names of all configs shipped with hific_tf, sorted."""
  return sorted(p.stem for p in _config_dir().glob("*.json"))


def _load_raw(name, seen=()):
  path = _config_dir() / f"{name}.json"
  if not path.is_file():
    raise UsageError(f"unknown config '{name}' (known: {', '.join(list_configs())})")
  if name in seen:
    raise UsageError(f"config '{name}' extends itself through {' -> '.join(seen)}")
  raw = json.loads(path.read_text())
  parent = raw.pop("extends", None)
  if parent:
    merged = _load_raw(parent, seen + (name,))
    merged.pop("description", None)
    merged.update(raw)
    raw = merged
  return raw


def get_config(name):
  """Returns the `Config` called `name`; ValueError names the known ones if it is unknown."""
  raw = _load_raw(name)
  raw["name"] = name
  fields = {f.name for f in dataclasses.fields(Config)}
  unknown = set(raw) - fields
  if unknown:
    raise UsageError(f"config '{name}' has unknown keys: {', '.join(sorted(unknown))}")
  config = Config(**raw)
  if config.stage not in STAGES:
    raise UsageError(f"config '{name}': stage must be one of {STAGES}, got '{config.stage}'")
  if not config.lambda_a > config.lambda_b:
    raise UsageError(f"config '{name}': lambda_a must exceed lambda_b "
                     "(the rate must cost more above the target than below)")
  return config
