"""The PyTorch port's HiFiC checkpoints as hific_tf weights and config.

Justin-Tan/high-fidelity-generative-compression, a PyTorch implementation of Mentzer et al.,
"High-Fidelity Generative Image Compression" (NeurIPS 2020), publishes hific-low, -med and
-high checkpoints trained on OpenImages. They are torch.save dicts: `model_state_dict`
(Encoder.*, Generator.*, Hyperprior.*, and when trained with the GAN, Discriminator.* and the
LPIPS network under perceptual_loss.*), optimizer states, `steps`, `epoch` and `args`.

The port computes the same architecture differently in several places (reflection padding,
transposed-conv alignment, [-1, 1] inputs with a tanh output, sigma rather than a log-index,
a prior on z with one more tanh factor, integer rounding of z). Each one is a layout field of
`Config`, set here from the checkpoint, so the imported weights compute the port's functions
in the one HiFiC model (docs/ARCHITECTURE.md, "where we differ").

Strict by design: every tensor of the model state is either assigned (shape checked) or
belongs to a group that is named and left out (the port's discriminator, whose layout is not
ours; its LPIPS network; entropy-coding tables, which hific_tf rebuilds from the prior), and
anything else is refused with its name. torch is needed only here, and only to unpickle.
"""

import pathlib
import zipfile

import numpy as np

from hific_tf import configs, images
from hific_tf.errors import HificError, InputNotFoundError

TORCH_HINT = ("hific import needs PyTorch to read the checkpoint: "
              "pip install torch==2.13.0 (the CPU build)")

# Model-state groups that are not the codec: named in the import record, never assigned.
LEFT_OUT = {
    "Discriminator.": "the port's discriminator (4 stride-2 convs and a 1x1 output, not "
                      "hific_tf's D): a fine-tuning run starts D fresh",
    "perceptual_loss.": "the port's LPIPS network (hific_tf has its own LPIPS)",
    "Hyperprior.hyperprior_entropy_model.": "the port's range-coding tables for z "
                                            "(rebuilt from the prior)",
    "Hyperprior.prior_entropy_model.": "the port's range-coding tables for y (rebuilt)",
    "Hyperprior.prior_density.": "the port's scale table (rebuilt)",
}

# The port's regimes and their rates (its default_config.py) -> the paper's configs here.
REGIMES = {"low": "hific-lo", "med": "hific-mi", "high": "hific-hi"}


class PortCheckpointError(HificError):
  """A file that is not a checkpoint of the port, or one whose settings cannot be mapped."""


def load(path):
  """(model_state as {key: float32 numpy}, args dict, metadata) from a port checkpoint.

  torch.load with weights_only=True: a pickle that would run code, or holds anything but
  tensors and plain values, is refused before anything is built.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise InputNotFoundError(f"{path} does not exist")
  try:
    import torch
  except ImportError:
    raise PortCheckpointError(TORCH_HINT) from None
  if not zipfile.is_zipfile(path):
    raise PortCheckpointError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip "
                              "archive)")
  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises many types: pickle, zip, runtime.
    reason = " ".join(str(error).split())[:160]
    raise PortCheckpointError(f"{path}: not a loadable checkpoint of tensors "
                              f"({error.__class__.__name__}: {reason})") from None
  if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
    raise PortCheckpointError(f"{path}: no model_state_dict (not a checkpoint of the "
                              "HiFiC PyTorch port)")
  args = checkpoint.get("args")
  if not isinstance(args, dict):
    raise PortCheckpointError(f"{path}: no args dict (the port saves its settings there)")
  state = {}
  for key, value in checkpoint["model_state_dict"].items():
    if not isinstance(value, torch.Tensor):
      raise PortCheckpointError(f"{path}: model_state_dict[{key!r}] is not a tensor")
    state[key] = value.detach().to(torch.float32).numpy() if value.is_floating_point() \
        else value.numpy()
  metadata = {"file": path.name, "sha256": images.sha256_of(path),
              "steps": _plain(checkpoint.get("steps")), "epoch": _plain(checkpoint.get("epoch")),
              "has_discriminator_state": "discriminator_state_dict" in checkpoint}
  return state, args, metadata


def _plain(value):
  """A JSON-safe copy of a checkpoint value (numbers, strings, lists, dicts)."""
  if isinstance(value, (bool, int, float, str)) or value is None:
    return value
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  return str(value)


def _shape(state, key):
  if key not in state:
    raise PortCheckpointError(f"model_state_dict has no {key} (not a HiFiC checkpoint of the "
                              "port, or a version it never wrote)")
  return state[key].shape


def config_for(state, args, metadata, name):
  """The Config whose layout computes the port's functions with these weights.

  Widths come from the tensors, rates and loss weights from the checkpoint's args; settings
  the model cannot compute are refused with the setting's name.
  """
  if args.get("use_latent_mixture_model"):
    raise PortCheckpointError("use_latent_mixture_model: the port's logistic-mixture "
                              "hyperprior has no counterpart in hific_tf")
  if args.get("sample_noise"):
    raise PortCheckpointError("sample_noise: a generator fed with noise channels has no "
                              "counterpart in hific_tf")
  if args.get("use_channel_norm", True) is not True:
    raise PortCheckpointError("use_channel_norm=False: instance-norm transforms have no "
                              "counterpart in hific_tf")
  likelihood = args.get("likelihood_type", "gaussian")
  if likelihood not in ("gaussian", "logistic"):
    raise PortCheckpointError(f"likelihood_type={likelihood!r}: only gaussian and logistic "
                              "likelihoods can be mapped")
  regime = args.get("regime", "low")
  if regime not in REGIMES:
    raise PortCheckpointError(f"regime={regime!r}: not one of {', '.join(REGIMES)}")
  base = configs.get_config(REGIMES[regime])
  width = _shape(state, "Encoder.conv_block1.1.weight")[0]
  latent_channels = _shape(state, "Encoder.conv_block_out.1.weight")[0]
  hyper_filters = _shape(state, "Hyperprior.analysis_net.conv1.weight")[0]
  blocks = len({key.split(".")[1] for key in state
                if key.startswith("Generator.resblock_")})
  if blocks != int(args.get("n_residual_blocks", blocks)):
    raise PortCheckpointError(f"n_residual_blocks={args.get('n_residual_blocks')} but the "
                              f"state holds {blocks} residual blocks")
  prior_layers = len([key for key in state
                      if key.startswith("Hyperprior.hyperlatent_likelihood.H_")])
  if prior_layers < 2:
    raise PortCheckpointError("Hyperprior.hyperlatent_likelihood holds no density layers")
  prior_filters = tuple(int(_shape(state, f"Hyperprior.hyperlatent_likelihood.H_{k}")[1])
                        for k in range(prior_layers - 1))
  gan = args.get("model_type") == "compression_gan" or metadata["has_discriminator_state"]
  rate = args.get("target_rate", base.target_bpp)
  return configs.Config(**dict(
      vars(base),
      name=name,
      description=(f"Imported from the PyTorch port's checkpoint {metadata['file']} "
                   f"({metadata['steps']} steps); trained by a third party on OpenImages."),
      stage="hific" if gan else "mselpips",
      target_bpp=float(rate),
      lambda_a=float(args.get("lambda_A", base.lambda_a)),
      lambda_b=float(args.get("lambda_B", base.lambda_b)),
      k_mse=float(args.get("k_M", base.k_mse)),
      k_lpips=float(args.get("k_P", base.k_lpips)),
      beta_gan=float(args.get("beta", base.beta_gan)),
      num_filters_base=int(width),
      num_residual_blocks=blocks,
      latent_channels=int(latent_channels),
      hyper_filters=int(hyper_filters),
      warmup_steps=0,  # A fine-tuning run continues a trained model: no rate warm-up.
      conv_padding="reflect",
      transposed_alignment="torch",
      input_range="signed" if args.get("normalize_input_image") else "unit",
      hyper_padding="reflect",
      scale_parameterization="sigma",
      side_prior_filters=prior_filters,
      side_prior_last_factor=True,
      side_quantization="round",
      likelihood=likelihood,
      image_pad_multiple=16,
      source=dict(metadata, format="Justin-Tan/high-fidelity-generative-compression",
                  args={key: _plain(args[key]) for key in sorted(args)}),
  )).check()


# --- Where each tensor goes. -------------------------------------------------------------

def _conv(weight):
  """torch Conv2d (out, in, kh, kw) and ConvTranspose2d (in, out, kh, kw) -> Keras layouts
  (kh, kw, in, out) and (kh, kw, out, in): the same transpose."""
  return weight.transpose(2, 3, 1, 0)


def _signal_transposed(weight):
  """torch ConvTranspose2d (in, out, kh, kw) -> tfc SignalConv2D(corr=False) (kh, kw, in, out)."""
  return weight.transpose(2, 3, 0, 1)


def _norm(value):
  return value.reshape(-1)


def assignments(model):
  """[(port key, variable, converter)] for every codec tensor of the port's model state."""
  pairs = []

  def conv(prefix, layer, convert=_conv):
    pairs.append((f"{prefix}.weight", layer.kernel, convert))
    pairs.append((f"{prefix}.bias", layer.bias, np.asarray))

  def norm(prefix, layer):
    pairs.append((f"{prefix}.gamma", layer.gamma, _norm))
    pairs.append((f"{prefix}.beta", layer.beta, _norm))

  encoder = model.encoder.layers
  conv("Encoder.conv_block1.1", encoder[0])
  norm("Encoder.conv_block1.2", encoder[1])
  for block in range(4):
    conv(f"Encoder.conv_block{block + 2}.1", encoder[3 + 3 * block])
    norm(f"Encoder.conv_block{block + 2}.2", encoder[4 + 3 * block])
  conv("Encoder.conv_block_out.1", encoder[15])

  generator = model.generator
  norm("Generator.conv_block_init.0", generator.head.layers[0])
  conv("Generator.conv_block_init.2", generator.head.layers[1])
  norm("Generator.conv_block_init.3", generator.head.layers[2])
  for index, block in enumerate(generator.blocks.layers):
    body = block.body.layers
    conv(f"Generator.resblock_{index}.conv1", body[0])
    norm(f"Generator.resblock_{index}.norm1", body[1])
    conv(f"Generator.resblock_{index}.conv2", body[3])
    norm(f"Generator.resblock_{index}.norm2", body[4])
  tail = generator.tail.layers
  for block in range(4):
    conv(f"Generator.upconv_block{block + 1}.0", tail[3 * block])
    norm(f"Generator.upconv_block{block + 1}.1", tail[3 * block + 1])
  conv("Generator.conv_block_out.1", tail[12])

  hyperprior = model.hyperprior
  for prefix, network, convert in (
      ("Hyperprior.analysis_net", hyperprior.analysis, _conv),
      ("Hyperprior.synthesis_mu", hyperprior.synthesis_mean, _signal_transposed),
      ("Hyperprior.synthesis_std", hyperprior.synthesis_scale, _signal_transposed)):
    convolutions = [layer for layer in network.layers if hasattr(layer, "kernel_parameter")]
    for index, layer in enumerate(convolutions):
      pairs.append((f"{prefix}.conv{index + 1}.weight", layer.kernel_parameter, convert))
      pairs.append((f"{prefix}.conv{index + 1}.bias", layer.bias_parameter, np.asarray))
  density = hyperprior.side_prior.base
  for k, (matrix, bias, factor) in enumerate(zip(density._matrices, density._biases,  # noqa: SLF001
                                                 density._factors)):  # noqa: SLF001
    for letter, variable in (("H", matrix), ("b", bias), ("a", factor)):
      pairs.append((f"Hyperprior.hyperlatent_likelihood.{letter}_{k}", variable, np.asarray))
  return pairs


def _assign(target, values, key):
  """Assigns to a variable, or to a tfc kernel parameter (an RDFT one: via its own encoding)."""
  import tensorflow as tf
  import tensorflow_compression as tfc
  if isinstance(target, tfc.RDFTParameter):
    shape = tuple(target().shape)
    if values.shape != shape:
      raise PortCheckpointError(f"{key}: shape {values.shape}, hific_tf expects {shape}")
    encoded = tfc.RDFTParameter(tf.constant(values, tf.float32))
    for variable, value in zip(target.variables, encoded.variables):
      variable.assign(value)
    return
  if isinstance(target, tfc.Parameter):
    target = target.variable
  if values.shape != tuple(target.shape):
    raise PortCheckpointError(f"{key}: shape {values.shape}, hific_tf expects "
                              f"{tuple(target.shape)}")
  target.assign(values.astype(np.float32))


def assign_weights(model, state):
  """Assigns the port's tensors to a built HiFiC; returns {left-out group: tensor count}.

  Refuses (naming the tensor) any key that is neither assigned nor in a LEFT_OUT group, and
  any codec tensor the model expects but the state lacks.
  """
  pairs = assignments(model)
  wanted = {key for key, _, _ in pairs}
  left_out = {}
  for key in state:
    if key in wanted:
      continue
    group = next((prefix for prefix in LEFT_OUT if key.startswith(prefix)), None)
    if group is None:
      raise PortCheckpointError(f"model_state_dict[{key!r}] has no place in hific_tf's HiFiC "
                                "(refusing rather than dropping it)")
    left_out[group] = left_out.get(group, 0) + 1
  missing = [key for key in wanted if key not in state]
  if missing:
    raise PortCheckpointError(f"model_state_dict has no {sorted(missing)[0]} (not a checkpoint "
                              "of the port's HiFiC, or one with another layout)")
  for key, target, convert in pairs:
    _assign(target, convert(state[key]), key)
  return left_out
