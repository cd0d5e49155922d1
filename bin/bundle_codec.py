"""Turns a trained model_dir into a bundled codec: stored weights, config and a measured card.

The card's figures are measured here, on the held-out photos, through the real path a user
takes (SavedModel built from the stored int8/float16 weights, real .hific files) by the one
held-out measurement (hific_tf/evaluation/heldout.py): mean bpp of whole files, PSNR, MS-SSIM
and LPIPS, per photo and mean. Nothing in a card is typed in by hand.

A stage-2 run's D is stored beside the weights (weights.discriminator.npz), so that
`hific train --init_from NAME` continues the GAN. With --resume_point the same files go to
checkpoints/NAME.npz, NAME.discriminator.npz and NAME.card.json instead: a rung still in
training, committed so that training resumes from it (checkpoints/README.md).

Usage:
  python bin/bundle_codec.py --model_dir RUN --name small-lo --heldout DATA/heldout \
      [--training "stage 1, 3000 steps"] [--colour_offset_on data/photos/train] \
      [--resume_point] [--force]

--colour_offset_on measures G's colour cast on training photos and takes it out of G's last
bias (hific_tf/training/calibration.py); the card records the offset and the photos.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from hific_tf import images as images_lib
from hific_tf.evaluation import heldout
from hific_tf.models import sources, zoo
from hific_tf.models.hific import stored_weights
from hific_tf.models.hific.model import HiFiC
from hific_tf.serving import codec as codec_lib
from hific_tf.training import calibration

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write_resume_point(staging, weights_path):
  """checkpoints/NAME.npz (+ D, + card): overwritten in place, one file set per rung."""
  card_path = weights_path.with_suffix(".card.json")
  d_staged = stored_weights.discriminator_path(staging / "weights.npz")
  for source, destination in ((staging / "weights.npz", weights_path),
                              (d_staged, stored_weights.discriminator_path(weights_path)),
                              (staging / "card.json", card_path)):
    if source.is_file():
      images_lib.write_atomic(destination, source.read_bytes(), force=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--model_dir", help="A `hific train` model_dir (its latest checkpoint).")
  source.add_argument("--restore", metavar="NAME",
                      help="A bundled codec, stored again (e.g. with other --bits).")
  parser.add_argument("--name", required=True)
  parser.add_argument("--bits", type=int, default=stored_weights.DEFAULT_BITS,
                      help="Bits of the large kernels' codes (docs/MODELS.md, storage).")
  parser.add_argument("--generator_bits", type=int, default=None,
                      help="Bits of G's kernels alone (default: --bits). E and the hyperprior "
                           "set the rate, so fewer bits for G alone leave the files' "
                           "payloads as they are.")
  parser.add_argument("--steps", type=int, help="Training steps behind the weights (default: "
                      "a ladder run's origin plus its step, or the restored card's).")
  parser.add_argument("--heldout", required=True, help="Folder of held-out photos.")
  parser.add_argument("--training", default="", help="One line: how it was trained.")
  parser.add_argument("--target_bpp", type=float, help="Default: the config's target.")
  parser.add_argument("--default_realism", type=float,
                      help="The R a decoder with the realism knob decodes at unless asked "
                           "(default: the config's); the card's figures are measured at it.")
  parser.add_argument("--resume_point", action="store_true",
                      help="Write checkpoints/NAME.* (a rung in training), not a bundled codec.")
  parser.add_argument("--colour_offset_on", metavar="TRAIN_PHOTOS",
                      help="Training photos (folder or glob) to measure G's colour cast on; "
                      "it is then removed from G's last bias. Never the held-out photos.")
  parser.add_argument("--out", help="Write the codec folder here instead (default: "
                      "hific_tf/bundled/NAME, where `hific models` lists it).")
  parser.add_argument("--force", action="store_true")
  args = parser.parse_args()

  if args.resume_point:
    target = REPO / "checkpoints" / f"{args.name}.npz"
  else:
    target = pathlib.Path(args.out) if args.out else zoo.BUNDLED_DIR / args.name
  if target.exists() and not args.force:
    sys.exit(f"bundle_codec: {target} exists (use --force)")
  # The version follows the bundled codec of that name (a candidate written with --out is
  # its next version), else the folder being replaced.
  if args.name in zoo.names():
    previous = zoo.load_card(args.name)
  else:
    previous = zoo.load_card(target) if args.out and zoo.is_codec_dir(target) else {}
  source = sources.source_of(args.restore or args.model_dir)
  config = sources.config_of(source)
  if args.default_realism is not None:
    if not config.realism or not 0. <= args.default_realism <= 1.:
      sys.exit("bundle_codec: --default_realism is an R from 0 to 1, for a decoder with the "
               "realism knob")
    config = config.replace(default_realism=args.default_realism)
  # With D for a stage-2 config: it is stored beside. A decoder stage's D (projected on
  # LPIPS features) judged G for training only and does not travel.
  trained = HiFiC(config.replace(stage="mselpips") if config.stage == "decoder"
                  else config).build_all()
  sources.restore(trained, source)
  if args.restore:
    restored = zoo.load_card(args.restore)
    steps = args.steps or restored.get("steps")
    args.training = args.training or restored.get("training", "")
  else:
    origin = pathlib.Path(args.model_dir) / "ladder.json"
    steps = args.steps or (json.loads(origin.read_text())["base_steps"] +
                           sources.checkpoint_step(args.model_dir) if origin.is_file() else None)
  colour = {}
  if args.colour_offset_on:
    files = images_lib.list_images(args.colour_offset_on)
    heldout_dir = pathlib.Path(args.heldout).resolve()
    if any(pathlib.Path(f).resolve().parent == heldout_dir for f in files):
      sys.exit("bundle_codec: the colour offset is measured on training photos, not held-out")
    offset = calibration.colour_offset(trained, files)
    calibration.remove_colour_offset(trained, offset)
    colour = {"colour_offset": [round(float(v), 3) for v in offset],
              "colour_offset_photos": len(files)}
  staging = pathlib.Path(tempfile.mkdtemp(prefix=".bundle-"))
  try:
    stored_weights.save_weights(trained, staging / "weights.npz", bits=args.bits,
                               generator_bits=args.generator_bits)
    images_lib.write_atomic(staging / "config.json", config.to_json().encode())
    # The shipped model is the one widened from storage: fingerprint and figures come from it.
    model = HiFiC(config.replace(stage="mselpips")).build_all()
    stored_weights.load_weights(model, staging / "weights.npz")
    fingerprint = stored_weights.fingerprint(model).hex()
    # A decoder stage's bitstream is frozen (it came from storage): storing must not move it,
    # or the files of the codec it started from would decode wrong.
    if config.stage == "decoder" and (stored_weights.bitstream_fingerprint(model) !=
                                      stored_weights.bitstream_fingerprint(trained)):
      sys.exit("bundle_codec: storing moved E, the hyperprior or the gains (store them at the "
               "bits they were stored at before)")
    parameters = sum(int(np.prod(v.shape)) for _, v in model.codec_variables())
    info = codec_lib.export(model, staging / "saved_model")
    assert info["fingerprint"] == fingerprint
    report = heldout.measure(
        heldout.FileCoder(codec_lib.SavedModelCodec(staging / "saved_model")),
        images_lib.list_images(args.heldout))
    means, rows = {k: report.means[k] for k in ("bpp", "psnr", "ms_ssim", "lpips")}, report.rows
    card = {
        "name": args.name,
        "config": config.name,
        "stage": config.stage,
        "target_bpp": args.target_bpp or config.target_bpp,
        "fingerprint": fingerprint,
        "parameters": parameters,
        "weights_bytes": (staging / "weights.npz").stat().st_size,
        "version": int(previous.get("version", 0)) + 1,
        "date": time.strftime("%Y-%m-%d"),
        "training": args.training,
        "steps": steps,
        "weights_bits": args.bits,
        **({"generator_bits": args.generator_bits} if args.generator_bits else {}),
        **colour,
        "heldout": dict(means, images=len(rows)),
        "heldout_images": rows,
    }
    images_lib.write_atomic(staging / "card.json", json.dumps(card, indent=2).encode())
    shutil.rmtree(staging / "saved_model")
    if args.resume_point:
      _write_resume_point(staging, target)
    else:
      # Copied beside the target and renamed into place: no reader sees half a codec.
      target.parent.mkdir(parents=True, exist_ok=True)
      placed = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
      shutil.copytree(staging, placed, dirs_exist_ok=True)
      placed.chmod(0o755)  # mkdtemp's 0700 would otherwise stay.
      if target.exists():
        shutil.rmtree(target)
      placed.rename(target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  print(json.dumps({k: v for k, v in card.items() if k != "heldout_images"}, indent=2))


if __name__ == "__main__":
  main()
