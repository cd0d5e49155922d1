"""The `hific` command: train, export, compress, decompress, evaluate, info, weights.

An absl app with argparse subcommands, like tensorflow-compression's model scripts. Exit codes:
0 success, 2 bad usage, 1 any other failure, always with one line `hific: error: ...` on stderr
and no traceback unless --verbose.
"""

import argparse
import os
import pathlib
import sys
import warnings

# Quiet TensorFlow's C++ start-up chatter before it is imported (stderr is for our errors).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl.flags import argparse_flags  # pylint: disable=g-import-not-at-top


class UsageError(Exception):
  """Bad command-line usage: exit code 2."""


class _Parser(argparse_flags.ArgumentParser):

  def error(self, message):
    raise UsageError(message)


def _subcommand(sub, name, help_text):
  parser = sub.add_parser(name, help=help_text)
  parser.add_argument("--verbose", "-V", action="store_true", help="Tracebacks and details.")
  return parser


def parse_args(argv):
  parser = _Parser(prog="hific", description=__doc__.splitlines()[0])
  parser.add_argument("--verbose", "-V", action="store_true", help="Tracebacks and details.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")

  p = _subcommand(sub, "train", "Train a config (stage 1 or 2) into --model_dir.")
  p.add_argument("--config", required=True)
  p.add_argument("--model_dir", required=True)
  data = p.add_mutually_exclusive_group(required=True)
  data.add_argument("--train_glob", help="Glob (or folder) of PNG/JPEG training photos.")
  data.add_argument("--tfds", help="A prepared TFDS dataset (clic, div2k, coco/2014, ...).")
  p.add_argument("--tfds_data_dir", help="Where TFDS datasets are prepared.")
  p.add_argument("--val_glob", help="Photos for validation after each checkpoint.")
  p.add_argument("--steps", type=int, help="Generator steps (default: the config's).")
  p.add_argument("--init_from", help="Stage-1 model_dir to start stage 2 from.")
  p.add_argument("--batch_size", type=int)
  p.add_argument("--crop_size", type=int)
  p.add_argument("--checkpoint_every", type=int, default=1000)
  p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"],
                 default="float32")
  p.add_argument("--seed", type=int, default=0)

  p = _subcommand(sub, "export", "Export a trained model_dir as a codec SavedModel.")
  p.add_argument("--model_dir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--generator_dtype", choices=["float32", "mixed_bfloat16"], default="float32")
  p.add_argument("--force", action="store_true", help="Replace an existing --out.")

  for name, what in (("compress", "image (or folder) -> .hific"),
                     ("decompress", ".hific (or folder) -> PNG")):
    p = _subcommand(sub, name, what)
    p.add_argument("--model", required=True, help="Codec SavedModel from `hific export`.")
    p.add_argument("input")
    p.add_argument("output", nargs="?")
    p.add_argument("--force", action="store_true", help="Overwrite existing outputs.")

  p = _subcommand(sub, "evaluate", "Rate, distortion and realism against other codecs.")
  p.add_argument("--model", required=True, help="Codec SavedModel, or 'none'.")
  p.add_argument("--images", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--codecs", default="jpeg,webp,avif,heic,jxl")
  p.add_argument("--bpp", default="0.15,0.3", help="Target rates for the classical codecs.")
  p.add_argument("--no_fid", action="store_true", help="Skip FID/KID (saves time).")

  p = _subcommand(sub, "info", "Describe a config, a .hific file or a SavedModel.")
  target = p.add_mutually_exclusive_group(required=True)
  target.add_argument("--config")
  target.add_argument("path", nargs="?")

  p = _subcommand(sub, "weights", "Fetch LPIPS and Inception weights into the cache.")
  p.add_argument("--dir", help="Where to put them (default: the user cache).")

  args = parser.parse_args(argv[1:])
  if not args.command:
    raise UsageError("a command is required (train, export, compress, decompress, evaluate, "
                     "info, weights)")
  return args


def main(args):
  from hific_tf import commands  # Imports TensorFlow: after argument checks.
  return getattr(commands, args.command)(args)


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
  except Exception as error:  # pylint: disable=broad-except
    if verbose:
      raise
    from hific_tf import commands  # pylint: disable=g-import-not-at-top
    code = 2 if isinstance(error, commands.BadUsage) else 1
    message = " ".join(str(error).split()) or error.__class__.__name__
    print(f"hific: error: {message}", file=sys.stderr)
    return code


def console_main():
  sys.exit(run())


if __name__ == "__main__":
  console_main()
