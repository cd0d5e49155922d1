"""What each `hific` subcommand does, given parsed arguments (see cli.py for the flags)."""

import json
import pathlib
import sys
import time
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

tf.get_logger().setLevel("ERROR")

from hific_tf import bitstream, configs, runtime
from hific_tf import images as images_lib
from hific_tf.errors import InputNotFoundError, OutputExistsError, UsageError
from hific_tf.measure import metrics


def _show_warning(message, category, filename, lineno, file=None, line=None):
  print(f"hific: warning: {message}", file=sys.stderr)


warnings.showwarning = _show_warning


def _config(name):
  try:
    return configs.get_config(name)
  except ValueError as error:
    raise UsageError(str(error)) from None


def _progress(items, description):
  from tqdm import tqdm
  return tqdm(items, desc=description, unit="img", disable=len(items) < 2, file=sys.stderr)


# --- train / export ------------------------------------------------------------------------

def train(args):
  from hific_tf.models import sources
  from hific_tf.training import train as train_lib
  if args.init_from:
    init_from = sources.source_of(args.init_from)  # A typo fails before anything is built.
  if args.config:
    config = _config(args.config)
  elif args.init_from and init_from.kind in (sources.BUNDLED, sources.CODEC_DIR):
    # Fine-tuning a codec: its own layout and loss weights, with the GAN.
    config = sources.config_of(init_from).replace(stage="hific")
  else:
    raise UsageError("--config is required unless --init_from is a codec folder or a "
                     "bundled codec")
  train_lib.train(
      config, args.model_dir, train_glob=args.train_glob, tfds_name=args.tfds,
      steps=args.steps, init_from=args.init_from, batch_size=args.batch_size,
      crop_size=args.crop_size, checkpoint_every=args.checkpoint_every,
      val_glob=args.val_glob, seed=args.seed, precision=args.precision,
      jit_compile=args.jit_compile, tfds_data_dir=args.tfds_data_dir)
  print(f"trained {config.name} into {args.model_dir}")


def import_checkpoint(args):
  from hific_tf.models import zoo
  from hific_tf.models.hific import port_checkpoint
  from hific_tf.models.hific.model import HiFiC
  out = pathlib.Path(args.out)
  if out.exists() and not args.force:
    raise OutputExistsError(f"{out} exists (use --force to replace it)")
  state, port_args, metadata = port_checkpoint.load(args.checkpoint)
  name = args.name or out.name
  config = port_checkpoint.config_for(state, port_args, metadata, name)
  model = HiFiC(config.replace(stage="mselpips")).build_all()
  left_out = port_checkpoint.assign_weights(model, state)
  model.config = config
  card = {"name": name, "target_bpp": config.target_bpp, "version": 1,
          "steps": metadata["steps"],
          "training": f"imported from {metadata['file']} (PyTorch port, third-party training)",
          "source": {"file": metadata["file"], "sha256": metadata["sha256"],
                     "left_out": {group: {"tensors": count,
                                          "why": port_checkpoint.LEFT_OUT[group]}
                                  for group, count in left_out.items()}}}
  card = zoo.write_codec_dir(model, out, card, force=args.force)
  for group, count in left_out.items():
    print(f"hific: not imported: {count} tensors of {group}* "
          f"({port_checkpoint.LEFT_OUT[group]})", file=sys.stderr)
  print(f"imported {metadata['file']} as codec '{name}' (weights {card['fingerprint']}, "
        f"{card['parameters'] / 1e6:.2f}M parameters, {config.likelihood}, inputs "
        f"{'[-1, 1]' if config.input_range == 'signed' else '[0, 1]'}) into {out}")


def export(args):
  from hific_tf.models import sources
  from hific_tf.serving import codec
  out = pathlib.Path(args.out)
  if args.serving and args.tflite:
    raise UsageError("give --serving or --tflite, not both")
  if args.tflite and {args.generator_dtype, args.encoder_dtype} != {"float32"}:
    raise UsageError("--tflite computes in float32: leave --generator_dtype and "
                     "--encoder_dtype at float32")
  if out.exists() and not args.force:
    raise OutputExistsError(f"{out} exists (use --force to replace it)")
  model = sources.build_model(args.model_dir, generator_dtype=args.generator_dtype,
                              encoder_dtype=args.encoder_dtype)
  kind = "serving" if args.serving else "tflite" if args.tflite else "codec"
  info = codec.export_to(model, out, replace=True, kind=kind,
                         tflite_weights=args.tflite_weights)
  described = {"codec": "codec SavedModel", "serving": "stock-op serving transforms",
               "tflite": f"TFLite codec ({args.tflite_weights} weights)"}[kind]
  print(f"exported {info['config_name']} (weights {info['fingerprint']}) as {described} "
        f"to {out}")


# --- compress / decompress -----------------------------------------------------------------

def _plan(input_path, output, is_input, suffix):
  """(source, destination) pairs for one file or every matching file of a folder."""
  source = pathlib.Path(input_path)
  if not source.exists():
    raise InputNotFoundError(f"{source} does not exist")
  if source.is_dir():
    files = sorted(p for p in source.iterdir() if p.is_file() and is_input(p))
    if not files:
      raise InputNotFoundError(f"{source} holds no input files")
    folder = pathlib.Path(output) if output else source
    return [(f, folder / (f.stem + suffix)) for f in files]
  return [(source, pathlib.Path(output) if output else source.with_suffix(suffix))]


def _check_outputs(plan, force):
  if not force:
    for _, destination in plan:
      if destination.exists():
        raise OutputExistsError(f"{destination} exists (use --force to overwrite)")


def _log(message):
  print(f"hific: {message}", file=sys.stderr)


def _load_codec(model, max_pixels=None, precision="auto"):
  from hific_tf.serving import resolve
  runtime.return_large_buffers()  # Coding large images: buffers go back when freed.
  return resolve.load_codec(model, max_pixels, log=_log, precision=precision)


def _compress_model_name(model, target_bpp=None):
  from hific_tf.serving import resolve
  return resolve.codec_name(model, target_bpp)


def compress(args):
  plan = _plan(args.input, args.output, images_lib.is_image_name, ".hific")
  _check_outputs(plan, args.force)
  from hific_tf.models.hific import latent_search
  latent_search.iterations_for(args.effort)  # A bad value fails before anything loads.
  if args.effort_seconds is not None and args.effort_seconds <= 0:
    raise UsageError("--effort_seconds must be positive")
  from hific_tf.serving import rate_control
  model = _load_codec(_compress_model_name(args.model, args.target_bpp),
                      precision=args.precision)
  rate = model.checked_rate(args.rate)
  for source, destination in _progress(plan, "compress"):
    image = images_lib.load_rgb(source)
    options = {}
    if args.effort:
      options = dict(effort=args.effort, progress=_effort_bar(source, args.effort),
                     deadline=None if args.effort_seconds is None else
                     time.monotonic() + args.effort_seconds)
    estimated_bits = None
    if args.target_bpp is not None:
      hific_file = rate_control.compress_to_bpp(model, image, args.target_bpp, **options)
    elif args.max_bytes is not None:
      hific_file = rate_control.compress_to_bytes(model, image, args.max_bytes, **options)
    else:
      options["rate"] = rate
      hific_file, estimated_bits = model.compress(image, with_estimate=True, **options) \
          if args.verbose else (model.compress(image, **options), None)
    data = hific_file.to_bytes()
    images_lib.write_atomic(destination, data, force=args.force)
    if getattr(args, "verbose", False):
      pixels = image.shape[0] * image.shape[1]
      reconstruction = model.decompress(hific_file)
      psnr = metrics.psnr(image, reconstruction)
      estimate = ("" if estimated_bits is None else
                  f"estimated {estimated_bits / pixels:.4f} bpp, ")
      print(f"{destination}: {image.shape[1]}x{image.shape[0]}, {estimate}real "
            f"{images_lib.bits_per_pixel(len(data), *image.shape[:2]):.4f} bpp, "
            f"PSNR {psnr:.2f} dB")


def _effort_bar(source, effort):
  """A progress callback for one image's latent search (a bar on a terminal)."""
  from tqdm import tqdm

  from hific_tf.models.hific import latent_search
  bar = tqdm(total=latent_search.iterations_for(effort), desc=f"effort {effort} {source.name}",
             unit="step", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)

  def update(done, total):
    bar.update(done - bar.n)
    if done >= total:
      bar.close()
  return update


def decompress(args):
  plan = _plan(args.input, args.output, lambda p: p.suffix == ".hific", ".png")
  _check_outputs(plan, args.force)
  models = {}
  for source, destination in _progress(plan, "decompress"):
    hific_file = bitstream.HificFile.from_bytes(source.read_bytes())
    name = args.model or _codec_for_file(hific_file)
    if name not in models:
      models[name] = _load_codec(name, args.max_pixels, args.precision)
    reconstruction = (models[name].decompress(hific_file) if args.realism is None else
                      models[name].decompress(hific_file, realism=args.realism))
    images_lib.write_atomic(destination, images_lib.encode_png(reconstruction), force=args.force)
    if getattr(args, "verbose", False):
      print(f"{destination}: {hific_file.width}x{hific_file.height}, "
            f"{hific_file.bits_per_pixel():.4f} bpp")


def _codec_for_file(hific_file):
  """The bundled codec that wrote `hific_file`, from the weights fingerprint in its header."""
  from hific_tf.models import zoo
  name = zoo.by_fingerprint(hific_file.fingerprint.hex())
  if name is not None:
    return name
  earlier = zoo.where_it_decodes(hific_file.fingerprint.hex())
  if earlier:
    raise UsageError(f"the file was made by {earlier}; this release's codecs do not read it")
  raise UsageError(f"the file was made by '{hific_file.config_name}' (weights "
                   f"{hific_file.fingerprint.hex()}), which is not a bundled codec; pass "
                   "--model with its SavedModel")


# --- serve ---------------------------------------------------------------------------------

def serve(args):
  from hific_tf.measure.lpips import LPIPS
  from hific_tf.serving import server
  if (not 0 < args.port < 65536 or args.workers < 1 or args.max_upload_mb <= 0 or
      args.queue_seconds < 0 or args.request_seconds <= 0 or args.max_pixels < 1 or
      args.compress_max_pixels < 1 or args.malloc_arenas < 0):
    raise UsageError("--port must be 1-65535, --workers, --max_upload_mb, --request_seconds "
                     "and the pixel limits positive, --queue_seconds not negative")
  if args.malloc_arenas:
    runtime.limit_malloc_arenas(args.malloc_arenas)  # Before the worker threads exist.
  codec = _load_codec(_compress_model_name(args.model), args.max_pixels, args.precision)
  service = server.CodecService(codec, lpips_metric=LPIPS("alex"), workers=args.workers,
                                isolate=not args.in_process_decoding,
                                queue_seconds=args.queue_seconds,
                                compress_max_pixels=args.compress_max_pixels, log=_log,
                                trim_memory=args.malloc_arenas > 0,
                                effort_seconds=0.75 * args.request_seconds)
  app = server.create_app(service, max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                          request_seconds=args.request_seconds)
  server.serve(app, args.host, args.port, log=_log)


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
  from hific_tf.models.hific.model import HiFiC
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
  if args.system:
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}; training: {runtime.describe(*runtime.choose())}")
    print(f"coding (bundled codecs and codec folders): generator "
          f"{runtime.generator_dtype()}, encoder and hyperprior float32")
    return None
  path = pathlib.Path(args.path)
  from hific_tf import configs
  from hific_tf.models import zoo
  if zoo.is_codec_dir(path):
    card, config = zoo.load_card(path), zoo.load_config(path)
    layout = {field: getattr(config, field) for field in configs.LAYOUT_CHOICES}
    layout.update(side_prior_filters=config.side_prior_filters,
                  side_prior_last_factor=config.side_prior_last_factor)
    print(json.dumps({"card": card, "layout": layout}, indent=2, default=str))
    return None
  if path.is_dir():
    if not (path / "saved_model.pb").is_file():
      raise InputNotFoundError(f"{path} is not a SavedModel folder")
    model = _load_codec(path)
    print(json.dumps(model.info, indent=2))
    return None
  if not path.is_file():
    raise InputNotFoundError(f"{path} does not exist")
  hific_file = bitstream.HificFile.from_bytes(path.read_bytes())
  rate = f", rate {hific_file.rate:g}" if hific_file.rate else ""
  made_by = zoo.codec_version(hific_file.fingerprint.hex())
  made_by = f"codec {made_by}, " if made_by else ""
  print(f"{path}: .hific v{hific_file.version}, {made_by}model {hific_file.config_name} "
        f"(weights {hific_file.fingerprint.hex()}){rate}")
  print(f"  image {hific_file.width}x{hific_file.height}, y {hific_file.y_shape[1]}x"
        f"{hific_file.y_shape[0]}, z {hific_file.z_shape[1]}x{hific_file.z_shape[0]}")
  print(f"  y {len(hific_file.y_string)} B, z {len(hific_file.z_string)} B, container "
        f"{hific_file.overhead_bytes} B, {hific_file.bits_per_pixel():.4f} bpp")
  return None


def weights(args):
  from hific_tf.measure import weights as weights_lib
  for name, path in weights_lib.fetch(destination=args.dir).items():
    print(f"{name}: {path}")


def _realisms(text):
  """'0,0.5,1' -> [0.0, 0.5, 1.0]; a one-line error for anything outside [0, 1]."""
  try:
    values = [float(part) for part in text.split(",") if part.strip()]
  except ValueError:
    raise UsageError(f"--realism takes numbers from 0 to 1, comma-separated, not '{text}'") from None
  if any(not 0. <= value <= 1. for value in values):
    raise UsageError(f"--realism values must be between 0 and 1, got '{text}'")
  return values


def evaluate(args):
  from hific_tf.evaluation import runner
  targets = runner.parse_targets(args.bpp)
  hific_targets = runner.parse_targets(args.hific_bpp) if args.hific_bpp.strip() else []
  codecs = runner.parse_codecs(args.codecs)
  files = images_lib.list_images(args.images)
  model = (None if args.model.lower() == "none" else
           _load_codec(args.model, precision=args.precision))
  if args.effort:
    from hific_tf.models.hific import latent_search
    latent_search.iterations_for(args.effort)
  realisms = _realisms(args.realism)
  if model is not None:
    for realism in realisms:
      model.checked_realism(realism)  # A codec without the knob fails before any row.
  summary = runner.evaluate(files, model, codecs, targets, args.out, with_fid=not args.no_fid,
                            match=args.match, effort=args.effort, hific_targets=hific_targets,
                            realisms=realisms)
  runner.print_summary(summary)


def models(args):
  import shutil
  import textwrap

  from hific_tf.models import zoo
  available = zoo.names()
  if not available:
    print("no bundled codecs in this installation")
    return
  verbose = getattr(args, "verbose", False)
  width = min(100, shutil.get_terminal_size((100, 24)).columns)
  print(f"{'name':<10}{'version':<16}{'target':>7}{'rates':>11}{'bpp':>7}{'PSNR':>7}"
        f"{'LPIPS':>7}{'realism':>9}{'MB':>7}")
  for name in available:
    card, config = zoo.load_card(name), zoo.load_config(name)
    figures = card.get("heldout", {})
    low, high = config.rate_range
    label = f"{name}{'*' if name == zoo.DEFAULT_CODEC else ''}"
    version = f"v{card.get('version', 1)} {card.get('date', '?')}"
    realism = f"{config.default_realism:g}, 0..1" if config.realism else "-"
    print(f"{label:<10}{version:<16}{card['target_bpp']:>7.2f}{f'{low:g}..{high:g}':>11}"
          f"{figures.get('bpp', float('nan')):>7.3f}{figures.get('psnr', float('nan')):>7.2f}"
          f"{figures.get('lpips', float('nan')):>7.3f}{realism:>9}"
          f"{card.get('weights_bytes', 0) / 1e6:>7.1f}")
    if verbose:
      note = f"{card.get('steps', '?')} steps: {card.get('training', '')}"
      print(textwrap.fill(note, width, initial_indent="    ", subsequent_indent="    "))
  print(textwrap.fill(
      "* the default. Figures: means over the held-out photos at rate 0 and the default "
      "realism (docs/MODELS.md). A codec codes at any rate in its range (--rate, "
      "--target_bpp, --max_bytes) and decodes at any realism in its range (--realism). "
      + ("" if verbose else "--verbose adds how each was trained."), width))
  presets = zoo.presets()
  if presets:
    print("\npresets: a name for a codec at a rate")
    for name, preset in sorted(presets.items()):
      print(f"  {name:<10}{preset['codec']} at rate {preset['rate']:g} (near "
            f"{preset['target_bpp']:g} bpp; it replaces {preset['replaces']})")
  kept = {folder: (folder / zoo.WEIGHTS).stat().st_size for folder in zoo.compat_decoders()}
  if kept:
    print("\n" + textwrap.fill(
        f"compatibility decoders ({sum(kept.values()) / 1e6:.1f} MB): earlier codecs kept to "
        "decode the files they wrote, found by the fingerprint in a file's header", width))
    for folder, size in kept.items():
      card = zoo.load_card(folder)
      print(f"  {card['name']} v{card.get('version', 1)} {card.get('date', '?')}, "
            f"{size / 1e6:.1f} MB, weights {card['fingerprint']}")


def data(args):
  from hific_tf.training import photos
  counts = photos.assemble(args.out, debs_dir=args.debs, wheels_dir=args.wheels,
                           force=args.force,
                           log=lambda line: print(line, file=sys.stderr))
  print(f"{counts['train_photos']} training photographs ({counts['train']} files at two "
        f"scales) and {counts['heldout']} held-out in {args.out} (sources and licences in "
        "SOURCES.tsv)")
