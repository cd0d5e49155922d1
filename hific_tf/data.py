"""Training data for HiFiC: folders of photos or TFDS datasets, with the paper's augmentation.

Mentzer et al. (NeurIPS 2020) train on 256x256 crops of photos that were first downscaled by a
random factor in [0.75, 0.95] (to remove compression artefacts of the source JPEGs). Every
random choice here is a stateless function of (seed, example index), so batch k is the same
in a fresh run and in one resumed from a checkpoint at step k.
"""

import tensorflow as tf

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
DOWNSCALE_RANGE = (0.75, 0.95)


class DataError(ValueError):
  """Raised for a dataset that cannot be read; the CLI prints it as one line."""


def list_images(pattern):
  """Sorted image files matching a glob (or all images in a folder)."""
  if tf.io.gfile.isdir(pattern):
    pattern = pattern.rstrip("/") + "/*"
  files = sorted(f for f in tf.io.gfile.glob(pattern) if f.lower().endswith(IMAGE_SUFFIXES))
  if not files:
    raise DataError(f"no images match '{pattern}' (PNG/JPEG/WebP/BMP/GIF)")
  return files


def augment(image, crop_size, seed):
  """Random downscale by 0.75-0.95, then a random crop; too-small images are upscaled first.

  Args:
    image: uint8 [H, W, 3].
    crop_size: side of the square crop.
    seed: [2] int seed; the result is a pure function of (image, seed).

  Returns:
    uint8 [crop_size, crop_size, 3].
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  factor = tf.random.stateless_uniform([], seeds[0], *DOWNSCALE_RANGE)
  factor = tf.maximum(factor, crop_size / tf.reduce_min(shape))  # Never below the crop size.
  size = tf.cast(tf.math.ceil(shape * factor), tf.int32)
  resized = tf.image.resize(image, size, method="bilinear", antialias=True)
  resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  return tf.image.stateless_random_crop(resized, [crop_size, crop_size, 3], seeds[1])


def _decode(path):
  image = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _examples_from_files(files, seed, start_example):
  """(index, image) pairs: the file of example i is a stateless draw, like the crop."""
  files = tf.constant(files)
  count = tf.cast(tf.size(files), tf.int64)

  def load(index):
    pick = tf.random.stateless_uniform([], tf.stack([tf.constant(seed, tf.int64), index]), 0,
                                       count, dtype=tf.int64)
    return index, _decode(tf.gather(files, pick))

  return tf.data.Dataset.range(start_example, 2 ** 62).map(
      load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _examples_from_tfds(name, split, data_dir, start_example):
  """(index, image) pairs from a prepared TFDS dataset, repeated; never downloads."""
  import tensorflow_datasets as tfds  # Heavy import; only this path needs it.
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as error:  # pylint: disable=broad-except
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
                     tfds_split="train", tfds_data_dir=None, start_step=0):
  """Infinite dataset of uint8 [batch_size, crop, crop, 3] batches, starting at `start_step`.

  Exactly one of `train_glob` and `tfds_name` is given. The batch for step k does not depend on
  where the run started, which is what makes a resumed run identical to an uninterrupted one.
  """
  if (train_glob is None) == (tfds_name is None):
    raise DataError("give exactly one of --train_glob and --tfds")
  start_example = start_step * batch_size
  if train_glob is not None:
    examples = _examples_from_files(list_images(train_glob), seed, start_example)
  else:
    examples = _examples_from_tfds(tfds_name, tfds_split, tfds_data_dir, start_example)

  def crop(index, image):
    return augment(image, crop_size, tf.stack([tf.constant(seed + 1, tf.int64), index]))

  dataset = examples.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.batch(batch_size, drop_remainder=True).prefetch(2)


def validation_dataset(pattern, crop_size, batch_size, max_batches=8):
  """A fixed, finite set of crops (the same every epoch) for test_step."""
  files = list_images(pattern)
  count = min(len(files), batch_size * max_batches)
  indexed = tf.data.Dataset.range(count).map(
      lambda i: (i, _decode(tf.gather(tf.constant(files), i % len(files)))))
  crops = indexed.map(lambda i, image: augment(image, crop_size, tf.stack(
      [tf.constant(12345, tf.int64), i])))
  return crops.batch(batch_size).cache()
