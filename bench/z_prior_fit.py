"""How far a codec's z prior is from fitting its own z: bits before and after refitting it alone.

Takes a codec's encoder and hyper-analysis as they are, computes z on 32 random 256x256
training crops, and fits only the factorized prior on z (Adam, 1,000 steps, at several
learning rates), reporting the noisy-rate training loss and the real coded size of a held-out
photo's z. A large drop means the prior lagged behind the transforms (docs/MODELS.md: the
stage-1 small-lo's z cost 31% more than it had to).

Usage: python bench/z_prior_fit.py [--weights hific_tf/bundled/small-lo/weights.npz]
       [--train data/photos/train] [--photo tests/data/heldout/coffee.png]
The stage-1 weights of docs/MODELS.md:
  git show 4c558e1:hific_tf/bundled/small-lo/weights.npz > /tmp/stage1.npz
"""

import argparse
import glob
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--weights", default=str(REPO / "hific_tf/bundled/small-lo/"
                                               "weights.npz"))
  parser.add_argument("--config", default="small-mselpips-lo")
  parser.add_argument("--train", default=str(REPO / "data/photos/train"))
  parser.add_argument("--photo", default=str(REPO / "tests/data/heldout/coffee.png"))
  parser.add_argument("--steps", type=int, default=1000)
  args = parser.parse_args()
  import tensorflow as tf

  from hific_tf import configs, images
  from hific_tf.models.hific import stored_weights
  from hific_tf.models.hific.model import HiFiC
  model = HiFiC(configs.get_config(args.config)).build_all()
  stored_weights.load_weights(model, args.weights)
  hyperprior = model.hyperprior
  rng = np.random.default_rng(0)
  crops = []
  for path in sorted(glob.glob(os.path.join(args.train, "*_s640.png")))[:16]:
    image = images.load_rgb(path)
    for _ in range(2):
      top = rng.integers(0, image.shape[0] - 256)
      left = rng.integers(0, image.shape[1] - 256)
      crops.append(image[top:top + 256, left:left + 256])
  if not crops:
    raise SystemExit(f"no training photos in {args.train} (run `make data`)")
  z_train = hyperprior.analysis(model.encoder(tf.constant(np.stack(crops), tf.float32) / 255.))
  photo = images.load_rgb(args.photo)
  z_photo = hyperprior.analysis(model.analyze(tf.constant(photo)))

  def coded_bits():
    return float(hyperprior._side_model()(z_photo, training=False)[1][0])

  start_values = [v.numpy() for v in hyperprior.side_prior.trainable_variables]
  print(f"{len(crops)} crops; {pathlib.Path(args.photo).name}: z {tuple(z_photo.shape[1:])}, "
        f"{coded_bits():.0f} bits with the prior as shipped")
  print(f"{'lr':>8}{'step':>6}{'train bits/crop':>17}{'photo z bits':>14}")
  for rate in (2e-4, 1e-3, 1e-2):
    for variable, value in zip(hyperprior.side_prior.trainable_variables, start_values):
      variable.assign(value)
    optimizer = tf.keras.optimizers.Adam(rate)

    @tf.function
    def step(seed):
      with tf.GradientTape() as tape:
        _, bits = hyperprior._noisy_bits(hyperprior.side_prior, z_train, seed)
        loss = tf.reduce_mean(bits)
      variables = hyperprior.side_prior.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss

    started = time.perf_counter()
    for index in range(1, args.steps + 1):
      loss = step(tf.constant([0, index], tf.int64))
      if index in (100, 300, args.steps):
        print(f"{rate:>8g}{index:>6}{float(loss):>17.0f}{coded_bits():>14.0f}")
    print(f"{'':>8}({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
  main()
