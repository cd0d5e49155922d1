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

STAGES = ("mselpips", "hific", "decoder")


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
  set).

  Rate control: every model codes at any `rate` r, a float that scales its quantization gain
  by 2^r (r = 0 is the rate it was trained at). `rate_points` makes a model of one codec for
  every rate (gain units, Cui et al., CVPR 2021): pairs [r, crop target bpp]; the model learns
  per-channel gains at each r, a training step samples one of the points, and rates between
  points interpolate the gains. `rate_range` is the span of r that `--target_bpp` and
  `--max_bytes` search.

  The decoder stage (stage "decoder", training/decoder_stage.py) freezes E, the hyperprior and
  the gains, so files keep decoding, and trains G against D on latents cached once per
  training crop (`latent_crops_per_photo` crops of each photo, both flips). `realism` gives G
  the realism knob (MRIC, Agustsson et al. CVPR 2023; models/hific/realism.py), decoded at
  `default_realism` unless asked otherwise. `diff_augment` ("color", "cutout" or both,
  comma-separated) augments both of D's inputs (Zhao et al., NeurIPS 2020); `ema_decay` > 0
  keeps an exponential moving average of G's weights, which is what is saved.
  `discriminator_learning_rate` defaults to `learning_rate`; `discriminator_spectral_norm`
  False makes D's convolutions plain (a fresh spectrally normalised D stayed at chance for
  hundreds of decoder-stage steps on small-lo, a plain one separated within about 50).
  `discriminator` is "patchgan" (HiFiC's conditional D on pixels) or "projected" (read by
  the decoder stage; the full GAN stage keeps the PatchGAN): heads on the frozen LPIPS
  features (Sauer et al., NeurIPS 2021; models/hific/projected_discriminator.py), which tell
  held-out crops apart within 10 steps.

  `fingerprint_scope` is what the weights fingerprint in a file's header names: "weights" (all
  of them, the default) or "bitstream" (E, hyperprior and gains: a decoder retrained on the
  same bitstream reads the files). `reads_fingerprints` lists earlier fingerprints of the
  same bitstream (a codec the decoder stage started from) whose files this codec decodes.

  The layout fields say how the transforms and the entropy model compute, with the official
  code's behaviour as the default. The PyTorch port (Justin-Tan/high-fidelity-generative-
  compression) computes differently in each of them, and `hific import` sets them so that the
  port's trained weights compute the port's functions (docs/ARCHITECTURE.md, "where we
  differ"):
    conv_padding            "zeros": Keras' same padding; "reflect": E's and G's stride-1
                            convs reflect-pad, E's stride-2 convs reflect-pad one row at the
                            top and one column at the right.
    transposed_alignment    "keras": G's transposed convs as Conv2DTranspose(padding="same");
                            "torch": as torch's (padding=1, output_padding=1), one pixel earlier.
    input_range             "unit": E sees [0, 1], G's output is the image; "signed": E sees
                            [-1, 1] and the image is (tanh(G) + 1) / 2.
    hyper_padding           "zeros"; "reflect": the hyper-analysis' two stride-2 convs
                            reflect-pad (its first conv pads with zeros either way).
    scale_parameterization  "log_index": the scale synthesis predicts a continuous index into
                            the scale table; "sigma": it predicts the scale itself, bounded
                            below by scale_min and coded with the first table entry at or above.
    side_prior_filters, side_prior_last_factor
                            the factorized prior on z: hidden widths, and whether its last
                            layer has a tanh factor too (tfc's has none).
    side_quantization       "median": z is rounded around tfc's offsets (the prior's medians);
                            "round": around integers.
    likelihood              "gaussian" or "logistic": the conditional distribution of y.
    image_pad_multiple      64: images are reflect-padded to whole z cells; 16: images are
                            reflect-padded to whole y cells and y to whole z cells.
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
  conv_padding: str = "zeros"
  transposed_alignment: str = "keras"
  input_range: str = "unit"
  hyper_padding: str = "zeros"
  scale_parameterization: str = "log_index"
  side_prior_filters: tuple = (3, 3)
  side_prior_last_factor: bool = False
  side_quantization: str = "median"
  likelihood: str = "gaussian"
  image_pad_multiple: int = 64
  rate_points: tuple = ()
  rate_range: tuple = (-1.5, 1.5)
  realism: bool = False
  default_realism: float = 0.
  diff_augment: str = ""
  ema_decay: float = 0.
  latent_crops_per_photo: int = 8
  discriminator_learning_rate: float | None = None
  discriminator_spectral_norm: bool = True
  discriminator: str = "patchgan"
  fingerprint_scope: str = "weights"
  reads_fingerprints: tuple = ()
  source: dict | None = None

  def __post_init__(self):
    # JSON has lists; a frozen config keeps tuples (hashable, equal to the defaults).
    object.__setattr__(self, "side_prior_filters", tuple(self.side_prior_filters))
    object.__setattr__(self, "rate_points", tuple(tuple(p) for p in self.rate_points))
    object.__setattr__(self, "rate_range", tuple(self.rate_range))
    object.__setattr__(self, "reads_fingerprints", tuple(self.reads_fingerprints))

  @property
  def training_target_bpp(self):
    """r_t of the rate loss on training crops."""
    return self.target_bpp if self.crop_target_bpp is None else self.crop_target_bpp

  @property
  def use_gan(self):
    return self.stage in ("hific", "decoder")

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text):
    return cls(**json.loads(text))

  def check(self):
    """Raises UsageError naming the first field whose value is not one the code computes."""
    for field, allowed in LAYOUT_CHOICES.items():
      if getattr(self, field) not in allowed:
        raise UsageError(f"config '{self.name}': {field} must be one of "
                         f"{', '.join(map(str, allowed))}, got {getattr(self, field)!r}")
    if self.stage not in STAGES:
      raise UsageError(f"config '{self.name}': stage must be one of {STAGES}, got "
                       f"'{self.stage}'")
    if len(self.rate_range) != 2 or not self.rate_range[0] < self.rate_range[1]:
      raise UsageError(f"config '{self.name}': rate_range must be [lowest, highest], got "
                       f"{list(self.rate_range)}")
    rates = [point[0] for point in self.rate_points]
    if any(len(point) != 2 for point in self.rate_points) or rates != sorted(set(rates)):
      raise UsageError(f"config '{self.name}': rate_points must be [rate, crop target bpp] "
                       "pairs in increasing rate")
    if self.fingerprint_scope not in ("weights", "bitstream"):
      raise UsageError(f"config '{self.name}': fingerprint_scope must be weights or bitstream")
    if self.discriminator not in ("patchgan", "projected"):
      raise UsageError(f"config '{self.name}': discriminator must be patchgan or projected")
    if not 0. <= self.default_realism <= 1.:
      raise UsageError(f"config '{self.name}': default_realism must be in [0, 1]")
    if set(filter(None, self.diff_augment.split(","))) - {"color", "cutout"}:
      raise UsageError(f"config '{self.name}': diff_augment takes color and cutout, got "
                       f"'{self.diff_augment}'")
    if not self.lambda_a > self.lambda_b:
      raise UsageError(f"config '{self.name}': lambda_a must exceed lambda_b "
                       "(the rate must cost more above the target than below)")
    return self


# The values each layout field may take; the first is the official code's (the default).
LAYOUT_CHOICES = {
    "conv_padding": ("zeros", "reflect"),
    "transposed_alignment": ("keras", "torch"),
    "input_range": ("unit", "signed"),
    "hyper_padding": ("zeros", "reflect"),
    "scale_parameterization": ("log_index", "sigma"),
    "side_quantization": ("median", "round"),
    "likelihood": ("gaussian", "logistic"),
    "image_pad_multiple": (64, 16),
}


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
  return Config(**raw).check()
