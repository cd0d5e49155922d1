"""What each `hific` subcommand does, given parsed arguments (see cli.py for the flags)."""

import json
import os
import pathlib
import shutil
import sys
import tempfile
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

tf.get_logger().setLevel("ERROR")

# pylint: disable=g-import-not-at-top
from hific_tf import bitstream
from hific_tf import configs
from hific_tf import images as images_lib


class BadUsage(ValueError):
  """Arguments that parse but make no sense (unknown config...): exit code 2."""


def _show_warning(message, category, filename, lineno, file=None, line=None):
  print(f"hific: warning: {message}", file=sys.stderr)


warnings.showwarning = _show_warning


def _config(name):
  try:
    return configs.get_config(name)
  except ValueError as error:
    raise BadUsage(str(error)) from None


def _progress(items, description):
  from tqdm import tqdm
  return tqdm(items, desc=description, unit="img", disable=len(items) < 2, file=sys.stderr)


# --- train / export ------------------------------------------------------------------------

def train(args):
  from hific_tf import train as train_lib
  config = _config(args.config)
  train_lib.train(
      config, args.model_dir, train_glob=args.train_glob, tfds_name=args.tfds,
      steps=args.steps, init_from=args.init_from, batch_size=args.batch_size,
      crop_size=args.crop_size, checkpoint_every=args.checkpoint_every,
      val_glob=args.val_glob, seed=args.seed, precision=args.precision,
      tfds_data_dir=args.tfds_data_dir)
  print(f"trained {config.name} into {args.model_dir}")


def export(args):
  from hific_tf import codec, train as train_lib
  out = pathlib.Path(args.out)
  if out.exists() and not args.force:
    raise FileExistsError(f"{out} exists (use --force to replace it)")
  model = train_lib.load_trained(args.model_dir, generator_dtype=args.generator_dtype)
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
  try:
    info = codec.export(model, staging, generator_dtype=args.generator_dtype)
    if out.exists():
      shutil.rmtree(out)
    os.replace(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  print(f"exported {info['config_name']} (weights {info['fingerprint']}) to {out}")


# --- compress / decompress -----------------------------------------------------------------

def _plan(input_path, output, is_input, suffix):
  """(source, destination) pairs for one file or every matching file of a folder."""
  source = pathlib.Path(input_path)
  if not source.exists():
    raise FileNotFoundError(f"{source} does not exist")
  if source.is_dir():
    files = sorted(p for p in source.iterdir() if p.is_file() and is_input(p))
    if not files:
      raise FileNotFoundError(f"{source} holds no input files")
    folder = pathlib.Path(output) if output else source
    return [(f, folder / (f.stem + suffix)) for f in files]
  return [(source, pathlib.Path(output) if output else source.with_suffix(suffix))]


def _check_outputs(plan, force):
  if not force:
    for _, destination in plan:
      if destination.exists():
        raise FileExistsError(f"{destination} exists (use --force to overwrite)")


def _load_codec(path):
  from hific_tf import codec
  return codec.SavedModelCodec(path)


def compress(args):
  is_image = lambda p: p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif",
                                            ".tiff", ".gif", ".ppm")
  plan = _plan(args.input, args.output, is_image, ".hific")
  _check_outputs(plan, args.force)
  model = _load_codec(args.model)
  for source, destination in _progress(plan, "compress"):
    image = images_lib.load_rgb(source)
    hific_file, estimated_bits = model.compress(image, with_estimate=True)
    data = hific_file.to_bytes()
    images_lib.write_atomic(destination, data, force=args.force)
    if args.verbose:
      pixels = image.shape[0] * image.shape[1]
      reconstruction = model.decompress(hific_file)
      psnr = float(tf.image.psnr(image, reconstruction, 255))
      print(f"{destination}: {image.shape[1]}x{image.shape[0]}, estimated "
            f"{estimated_bits / pixels:.4f} bpp, real {8 * len(data) / pixels:.4f} bpp, "
            f"PSNR {psnr:.2f} dB")


def decompress(args):
  plan = _plan(args.input, args.output, lambda p: p.suffix == ".hific", ".png")
  _check_outputs(plan, args.force)
  model = _load_codec(args.model)
  for source, destination in _progress(plan, "decompress"):
    hific_file = bitstream.HificFile.from_bytes(source.read_bytes())
    reconstruction = model.decompress(hific_file)
    images_lib.write_atomic(destination, images_lib.encode_png(reconstruction), force=args.force)
    if args.verbose:
      print(f"{destination}: {hific_file.width}x{hific_file.height}, "
            f"{hific_file.bits_per_pixel():.4f} bpp")


# --- info / weights ------------------------------------------------------------------------

def parameter_counts(module):
  """(kernel parameters, stored variables) of a module's trainable variables.

  tfc's SignalConv2D may store a kernel as its real DFT (the RDFT parameterization of the
  official hyperprior), which has more numbers than the kernel it represents; the first count
  is the size of the kernels as used, the one the paper's parameter counts refer to.
  """
  stored = sum(int(np.prod(v.shape)) for v in module.trainable_variables)
  effective = stored
  for layer in getattr(module, "submodules", ()):
    parameter = getattr(layer, "kernel_parameter", None)
    if isinstance(layer, tfc.SignalConv2D) and isinstance(parameter, tf.Module):
      effective += int(np.prod(layer.kernel.shape)) - sum(
          int(np.prod(v.shape)) for v in parameter.trainable_variables)
  return effective, stored


def _info_config(name):
  from hific_tf.model import HiFiC
  config = _config(name)
  model = HiFiC(config.replace(stage="hific")).build_all()
  parts = dict(model.codec_modules, discriminator=model.discriminator)
  print(f"config {config.name} (stage {config.stage}): {config.description}")
  total = 0
  for part, module in parts.items():
    effective, stored = parameter_counts(module)
    note = f" ({stored / 1e6:.2f} M stored variables)" if stored != effective else ""
    print(f"  {part:<14} {effective / 1e6:8.2f} M parameters{note}")
    if part != "discriminator":
      total += effective
  print(f"  {'codec total':<14} {total / 1e6:8.2f} M parameters (E + G + hyperprior)")
  print(f"  target {config.target_bpp} bpp, lambda_a {config.lambda_a}, lambda_b "
        f"{config.lambda_b}, k_M {config.k_mse:.6g}, k_P {config.k_lpips}, beta "
        f"{config.beta_gan if config.use_gan else 0}")


def info(args):
  if args.config:
    return _info_config(args.config)
  path = pathlib.Path(args.path)
  if path.is_dir():
    if not (path / "saved_model.pb").is_file():
      raise FileNotFoundError(f"{path} is not a SavedModel folder")
    model = _load_codec(path)
    print(json.dumps(model.info, indent=2))
    return None
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist")
  hific_file = bitstream.HificFile.from_bytes(path.read_bytes())
  print(f"{path}: .hific v{bitstream.VERSION}, model {hific_file.config_name} "
        f"(weights {hific_file.fingerprint.hex()})")
  print(f"  image {hific_file.width}x{hific_file.height}, y {hific_file.y_shape[1]}x"
        f"{hific_file.y_shape[0]}, z {hific_file.z_shape[1]}x{hific_file.z_shape[0]}")
  print(f"  y {len(hific_file.y_string)} B, z {len(hific_file.z_string)} B, container "
        f"{hific_file.overhead_bytes} B, {hific_file.bits_per_pixel():.4f} bpp")
  return None


def weights(args):
  from hific_tf import weights as weights_lib
  for name, path in weights_lib.fetch(destination=args.dir).items():
    print(f"{name}: {path}")


def evaluate(args):
  from hific_tf import evaluation
  evaluation.run_cli(args)
