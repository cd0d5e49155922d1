"""Training data for HiFiC: folders of photos or TFDS datasets, with the paper's augmentation.

Mentzer et al. (NeurIPS 2020) train on 256x256 crops of photos that were first downscaled by a
random factor in [0.75, 0.95] (to remove compression artefacts of the source JPEGs). Every
random choice here is a stateless function of (seed, example index), so batch k is the same
in a fresh run and in one resumed from a checkpoint at step k.
"""

import numpy as np
import tensorflow as tf

from hific_tf import images as images_lib
from hific_tf.errors import HificError

DOWNSCALE_RANGE = (0.75, 0.95)


class DataError(HificError, ValueError):
  """Raised for a dataset that cannot be read; the CLI prints it as one line."""


FLIP_SALT = 7


def list_images(pattern):
  """Sorted image files matching a glob (or all images in a folder); DataError if none."""
  try:
    return images_lib.list_images(pattern)
  except images_lib.ImageError as error:
    raise DataError(str(error)) from None


def augment(image, crop_size, seed, random_flip=False):
  """Random downscale by 0.75-0.95 and a random crop, resizing only the cropped window.

  Equivalent to downscaling the whole photo and then cropping (the paper's recipe), but the
  resize touches crop_size / factor pixels squared instead of the whole multi-megapixel image.
  Images smaller than the crop are upscaled first.

  Args:
    image: uint8 [H, W, 3].
    crop_size: side of the square crop.
    seed: [2] int seed; the result is a pure function of (image, seed).
    random_flip: also mirror half of the crops left to right (from a seed of its own, so
      the crops are those of an unflipped run).

  Returns:
    uint8 [crop_size, crop_size, 3].
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  shape = tf.shape(image)[:2]
  factor = tf.random.stateless_uniform([], seeds[0], *DOWNSCALE_RANGE)
  factor = tf.maximum(factor, crop_size / tf.cast(tf.reduce_min(shape), tf.float32))
  window = tf.minimum(tf.cast(tf.math.ceil(crop_size / factor), tf.int32), tf.reduce_min(shape))
  limit = shape - window + 1
  top = tf.random.stateless_uniform([], seeds[1], 0, limit[0], dtype=tf.int32)
  left = tf.random.stateless_uniform([], seeds[2], 0, limit[1], dtype=tf.int32)
  patch = image[top:top + window, left:left + window]
  resized = tf.image.resize(patch, [crop_size, crop_size], method="bilinear", antialias=True)
  crop = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  if random_flip:
    flip_seed = tf.random.experimental.stateless_fold_in(seed, FLIP_SALT)
    crop = tf.image.stateless_random_flip_left_right(crop, flip_seed)
  return crop


class PhotoCache:
  """Every training photo decoded once, kept in memory as one flat uint8 buffer.

  Crops are then cut from memory: no file is read or decoded per example. Photos are stored
  flat (with offsets and shapes) so that a graph-mode map can slice any of them by index.
  """

  def __init__(self, files):
    arrays = [images_lib.load_rgb(f) for f in files]
    sizes = [a.size for a in arrays]
    self.pixels = tf.constant(np.concatenate([a.reshape(-1) for a in arrays]))
    self.offsets = tf.constant(np.cumsum([0] + sizes[:-1]), tf.int64)
    self.shapes = tf.constant([a.shape for a in arrays], tf.int64)
    self.count = len(arrays)
    self.megabytes = sum(sizes) / 2 ** 20

  def image(self, index):
    shape = self.shapes[index]
    flat = self.pixels[self.offsets[index]:self.offsets[index] + tf.reduce_prod(shape)]
    return tf.reshape(flat, shape)


def _examples_from_cache(cache, seed, start_example):
  """(index, image) pairs: the photo of example i is a stateless draw, like the crop."""
  def load(index):
    pick = tf.random.stateless_uniform([], tf.stack([tf.constant(seed, tf.int64), index]), 0,
                                       cache.count, dtype=tf.int64)
    return index, cache.image(pick)

  return tf.data.Dataset.range(start_example, 2 ** 62).map(
      load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _examples_from_tfds(name, split, data_dir, start_example):
  """(index, image) pairs from a prepared TFDS dataset, repeated; never downloads."""
  import tensorflow_datasets as tfds  # Heavy import; only this path needs it.
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as error:
    raise DataError(f"unknown TFDS dataset '{name}': {error}") from None
  if not tf.io.gfile.exists(builder.data_dir) or not builder.info.splits:
    raise DataError(
        f"TFDS dataset '{name}' is not prepared in {builder.data_dir}; this machine does not "
        f"download it. Prepare it where there is internet (`tfds build {name}`) and copy the "
        "folder, pass --tfds_data_dir, or train from a folder with --train_glob")
  if split not in builder.info.splits:
    raise DataError(f"TFDS dataset '{name}' has no split '{split}' "
                    f"(has {', '.join(builder.info.splits)})")
  images = builder.as_dataset(split=split, shuffle_files=False).map(
      lambda features: features["image"]).repeat()
  indexed = tf.data.Dataset.zip((tf.data.Dataset.range(2 ** 62), images))
  return indexed.skip(start_example)


def training_dataset(batch_size, crop_size, seed=0, train_glob=None, tfds_name=None,
                     tfds_split="train", tfds_data_dir=None, start_step=0, photo_cache=None,
                     random_flip=False):
  """Infinite dataset of uint8 [batch_size, crop, crop, 3] batches, starting at `start_step`.

  Exactly one of `train_glob` (or its already decoded `photo_cache`) and `tfds_name` is given. The batch for step k does not depend on
  where the run started, which is what makes a resumed run identical to an uninterrupted one.
  """
  from_files = train_glob is not None or photo_cache is not None
  if from_files == (tfds_name is not None):
    raise DataError("give exactly one of --train_glob and --tfds")
  start_example = start_step * batch_size
  if from_files:
    cache = photo_cache or PhotoCache(list_images(train_glob))
    examples = _examples_from_cache(cache, seed, start_example)
  else:
    examples = _examples_from_tfds(tfds_name, tfds_split, tfds_data_dir, start_example)

  def crop(index, image):
    return augment(image, crop_size, tf.stack([tf.constant(seed + 1, tf.int64), index]),
                   random_flip)

  dataset = examples.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.batch(batch_size, drop_remainder=True).prefetch(2)


def validation_dataset(pattern, crop_size, batch_size, max_batches=8):
  """A fixed, finite set of crops (the same every epoch) for test_step."""
  files = list_images(pattern)
  count = min(len(files), batch_size * max_batches)
  cache = PhotoCache(files[:count])
  crops = tf.data.Dataset.range(count).map(lambda i: augment(
      cache.image(i), crop_size, tf.stack([tf.constant(12345, tf.int64), i])))
  return crops.batch(batch_size).cache()
