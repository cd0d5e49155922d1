"""How fast a fresh discriminator tells a codec's reconstructions from the photos.

The decoder stage (hific_tf/training/decoder_stage.py) can only train G against a D that
separates real from fake within the steps a CPU budget allows. This trains each candidate D
alone, from the same seed, on crops of the latent cache that `hific train --config
small-decoder-gan` builds (reconstructions by the frozen codec, at one rate), and reports
D(x) and D(x') on crops it never trained on, with its step time beside the projected D's:

- patchgan-sn: HiFiC's conditional PatchGAN with spectral norm (the paper's D);
- patchgan: the same without spectral norm;
- projected: heads on the frozen LPIPS AlexNet features (Sauer et al., NeurIPS 2021).

  python bench/discriminators.py --cache runs/RUN/latent_cache.npz [--model small-lo] \
      [--steps 60] [--learning_rate 8e-4]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from hific_tf import configs
from hific_tf.measure import lpips as lpips_lib
from hific_tf.models import sources
from hific_tf.models.hific import networks, projected_discriminator

BATCH = 8
TRAIN_CROPS, HELD_OUT_CROPS = 80, 24


def crops(cache, model, rate):
  """(photos, reconstructions, y_hat) of 104 crops spread over the cache, in [0, 1]."""
  with np.load(cache) as stored:
    step = max(1, len(stored["images"]) // (TRAIN_CROPS + HELD_OUT_CROPS))
    picks = np.arange(TRAIN_CROPS + HELD_OUT_CROPS) * step
    images, latents = stored["images"][picks], stored["latents"][picks, 0]
  generate = tf.function(lambda y: model.generate(y, None))
  photos, fakes, latent_hats = [], [], []
  for start in range(0, len(images), BATCH):
    y_hat = model.hyperprior(latents[start:start + BATCH], training=False,
                             log_gain=model.log_gain(rate)).y_hat
    photos.append(images[start:start + BATCH].astype(np.float32) / 255.)
    fakes.append(generate(y_hat).numpy())
    latent_hats.append(y_hat.numpy())
  return tuple(np.concatenate(parts) for parts in (photos, fakes, latent_hats))


def candidates(config, lpips):
  """name -> (D, its input from images): the PatchGAN sees pixels, the projected D features."""
  patchgan = lambda normalize: networks.Discriminator(
      config.disc_filters_base, config.disc_latent_channels, spectral_norm=normalize)
  projected = projected_discriminator.ProjectedDiscriminator(
      lpips_lib.FEATURE_CHANNELS[config.lpips_net])
  return {"patchgan-sn": (patchgan(True), lambda images: images),
          "patchgan": (patchgan(False), lambda images: images),
          "projected": (projected, lpips.features)}


def train_and_judge(discriminator, inputs_of, data, steps, learning_rate):
  """Mean D(x), D(x') on the held-out crops after `steps`, and seconds per step."""
  photos, fakes, latents = data
  optimizer = tf.keras.optimizers.Adam(learning_rate, beta_1=0.5)

  def logits(images, y_hat):
    out = discriminator((inputs_of(images), y_hat), training=True)
    return out if isinstance(out, list) else [out]

  def mean_over(maps, function):
    return tf.add_n([tf.reduce_mean(function(m)) for m in maps]) / len(maps)

  @tf.function
  def step(real, fake, y_hat):
    with tf.GradientTape() as tape:
      loss = (mean_over(logits(real, y_hat), lambda t: tf.nn.softplus(-t)) +
              mean_over(logits(fake, y_hat), tf.nn.softplus))
    variables = discriminator.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

  rng = np.random.default_rng(0)
  step(photos[:BATCH], fakes[:BATCH], latents[:BATCH])  # A warm-up step traces; not timed.
  start = time.perf_counter()
  for _ in range(steps):
    picks = rng.choice(TRAIN_CROPS, BATCH, replace=False)
    step(photos[picks], fakes[picks], latents[picks])
  seconds = (time.perf_counter() - start) / steps
  held = slice(TRAIN_CROPS, None)
  judge = lambda images: float(mean_over(logits(images[held], latents[held]), tf.sigmoid))
  return judge(photos), judge(fakes), seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cache", required=True, help="A decoder stage's latent_cache.npz.")
  parser.add_argument("--model", default="small-lo", help="The codec that made the cache.")
  parser.add_argument("--rate", type=float, default=0.75)
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--learning_rate", type=float, default=8e-4)
  args = parser.parse_args()
  model = sources.build_model(args.model, lean=False)
  config = model.config
  lpips = lpips_lib.LPIPS(config.lpips_net)
  data = crops(args.cache, model, args.rate)
  print(f"{args.model} at rate {args.rate:g}: {TRAIN_CROPS} training and {HELD_OUT_CROPS} "
        f"held-out crops of 256², {args.steps} steps of {BATCH} pairs at "
        f"{args.learning_rate:g}")
  print(f"{'D':<14}{'D(x)':>8}{'D(x_hat)':>10}{'gap':>8}{'s/step':>8}{'x projected':>13}")
  rows = {}
  for name, (discriminator, inputs_of) in candidates(
      configs.get_config("small-decoder-gan"), lpips).items():
    tf.keras.utils.set_random_seed(1)
    rows[name] = train_and_judge(discriminator, inputs_of, data, args.steps,
                                 args.learning_rate)
  for name, (real, fake, seconds) in rows.items():
    print(f"{name:<14}{real:8.3f}{fake:10.3f}{real - fake:8.3f}{seconds:8.2f}"
          f"{seconds / rows['projected'][2]:13.2f}")


if __name__ == "__main__":
  main()
