"""Rate control: does training settle the quantized bpp at the target r_t?

Trains tiny-mselpips for a few hundred steps on a folder of photos, once per target, and prints
the rounded-latent bpp of the training batches against the (scheduled) target as it goes.
The lambda_a/lambda_b switch of Mentzer et al. (Sec. 3.2) should pull bpp down to the target
and hold it near there.

Usage: python bench/rate_target.py --photos 'DIR/*.png' [--steps 400] [--targets 0.14,0.45]
(defaults to scikit-image's sample photos)
"""

import argparse
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

from hific_tf import configs
from hific_tf.training import train


class _Report(tf.keras.callbacks.Callback):

  def __init__(self, every):
    super().__init__()
    self.every = every
    self.rows = []

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.model.step.numpy())
    if step % self.every == 0:
      row = (step, logs["bpp_quantized"], logs["target_bpp"], logs["rate_weight"], logs["psnr"])
      self.rows.append(row)
      print(f"  step {row[0]:>5}  bpp_quantized {row[1]:.4f}  target {row[2]:.4f}  "
            f"lambda' {row[3]:.3f}  PSNR {row[4]:.2f}", flush=True)

  def on_epoch_end(self, epoch, logs=None):
    for tracker in self.model.metrics:  # Report per-window means, not whole-run means.
      tracker.reset_state()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--photos")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--targets", default="0.14,0.45")
  parser.add_argument("--every", type=int, default=50)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    photos = args.photos
    if photos is None:
      from PIL import Image
      import skimage.data
      folder = pathlib.Path(tmp) / "photos"
      folder.mkdir()
      for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                   "immunohistochemistry"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
      photos = str(folder / "*.png")
    summary = []
    for target in (float(t) for t in args.targets.split(",")):
      config = configs.get_config("tiny-mselpips").replace(target_bpp=target)
      print(f"target {target} bpp (warm-up target x{config.warmup_target_factor:.2f} for "
            f"{config.warmup_steps} steps), {args.steps} steps")
      report = _Report(args.every)
      train.train(config, pathlib.Path(tmp) / f"run_{target}", train_glob=photos,
                  steps=args.steps, checkpoint_every=args.every, callbacks=[report],
                  verbose=0)
      last = report.rows[-3:]
      summary.append((target, sum(r[1] for r in last) / len(last)))
    print("target  mean bpp_quantized over the last 3 windows")
    for target, bpp in summary:
      print(f"{target:<7} {bpp:.4f}  ({(bpp - target) / target:+.1%})")


if __name__ == "__main__":
  main()
