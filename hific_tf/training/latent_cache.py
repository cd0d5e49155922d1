"""Latents of the training crops, computed once: the decoder stage's data.

With E, the hyperprior and the gains frozen (decoder_stage.py), y of a training crop never
changes, so E runs once per crop and flip instead of once per step. The crops are the
paper's (a random downscale by 0.75-0.95, then a 256² crop: data.augment), a fixed number per
photo; a step draws crops and flips by a stateless function of (seed, example index), so a
resumed run sees the batches the killed one would have.

The file records the fingerprint of the bitstream that made it (E, hyperprior, gains): a
cache made by another encoder is rebuilt, never used.
"""

import json
import pathlib

import numpy as np
import tensorflow as tf

from hific_tf.training import data as data_lib

CACHE_FILE = "latent_cache.npz"
ENCODE_BATCH = 8


def _crops(photo_cache, crops_per_photo, crop_size, seed):
  """uint8 [N, S, S, 3]: crop k of photo p is augment's draw for example p * crops + k."""
  crops = []
  for photo in range(photo_cache.count):
    image = photo_cache.image(photo)
    for k in range(crops_per_photo):
      index = photo * crops_per_photo + k
      crops.append(data_lib.augment(image, crop_size,
                                    tf.constant([seed + 1, index], tf.int64)).numpy())
  return np.stack(crops)


def build(model, photo_cache, crops_per_photo, crop_size, seed, path, fingerprint, log=print):
  """Encodes every crop and its mirror image with `model`'s E; writes `path` atomically."""
  images = _crops(photo_cache, crops_per_photo, crop_size, seed)
  encode = tf.function(lambda batch: tf.cast(
      model.encoder(model._encoder_input(tf.cast(batch, tf.float32) / 255.)), tf.float32))
  latents = []
  for flip in (False, True):
    flipped = images[:, :, ::-1] if flip else images
    latents.append(np.concatenate([
        encode(tf.constant(flipped[start:start + ENCODE_BATCH])).numpy()
        for start in range(0, len(images), ENCODE_BATCH)]))
  latents = np.stack(latents, axis=1)  # [N, 2 (flip), h, w, C]
  meta = dict(fingerprint=fingerprint, crop_size=crop_size, seed=seed,
              crops_per_photo=crops_per_photo, photos=photo_cache.count)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial.npz")
  np.savez(partial, images=images, latents=latents, meta=np.array(json.dumps(meta)))
  partial.replace(path)
  log(f"latent cache: {len(images)} crops x 2 flips of {photo_cache.count} photos "
      f"({(images.nbytes + latents.nbytes) / 2 ** 20:.0f} MB) in {path}")
  return images, latents


def load(path, fingerprint, crop_size):
  """(images, latents) of a cache made by the bitstream `fingerprint`, else None."""
  path = pathlib.Path(path)
  if not path.is_file():
    return None
  try:
    with np.load(path) as stored:
      meta = json.loads(str(stored["meta"]))
      if meta.get("fingerprint") != fingerprint or meta.get("crop_size") != crop_size:
        return None
      return stored["images"], stored["latents"]
  except (OSError, ValueError, KeyError):
    return None


def load_or_build(model, photo_cache, crops_per_photo, crop_size, seed, path, fingerprint,
                  log=print):
  cached = load(path, fingerprint, crop_size)
  if cached is not None:
    log(f"latent cache: {len(cached[0])} crops from {path}")
    return cached
  return build(model, photo_cache, crops_per_photo, crop_size, seed, path, fingerprint, log)


def dataset(images, latents, batch_size, seed=0, start_step=0):
  """Infinite (uint8 images [B, S, S, 3], float32 y [B, h, w, C]) batches from step
  `start_step` on; example i's crop and flip are drawn from (seed, i) alone."""
  count = len(images)

  def gather(indexes):
    picks, flips = [], []
    for index in indexes:
      rng = np.random.default_rng([seed, int(index)])
      picks.append(int(rng.integers(count)))
      flips.append(int(rng.integers(2)))
    batch_images = np.stack([images[p, :, ::-1] if f else images[p]
                             for p, f in zip(picks, flips)])
    return batch_images, latents[picks, flips]

  def fetch(indexes):
    batch_images, batch_latents = tf.numpy_function(gather, [indexes], (tf.uint8, tf.float32))
    batch_images.set_shape([batch_size, *images.shape[1:]])
    batch_latents.set_shape([batch_size, *latents.shape[2:]])
    return batch_images, batch_latents

  start = start_step * batch_size
  return (tf.data.Dataset.range(start, 2 ** 62).batch(batch_size).map(fetch)
          .prefetch(2))

