"""The HiFiC training driver behind `hific train`: model.fit with checkpoints and resumption.

Layout of a model_dir (models/sources.py reads it):
  config.json        the Config the run used (export and stage 2 read it back)
  checkpoints/       tf.train checkpoints of encoder, generator, hyperprior, discriminator
  backup/            Keras BackupAndRestore state (model + optimizers), removed when done
  logs/              TensorBoard: every loss term, bpp, lambda', D(x), lr, images
  divergence_guard.json  the last epochs' training PSNRs (DivergenceGuard)

Stage 2 (`--init_from` a stage-1 model_dir) restores encoder, generator and hyperprior, starts
D fresh and restarts the step counter and schedules, as in Mentzer et al. (NeurIPS 2020).
Continuing a stage-2 model (its model_dir, a bundled rung or a checkpoints/ resume point)
restores its D too, when the source has one.
"""

import contextlib
import json
import math
import os
import pathlib

import tensorflow as tf

from hific_tf import images as images_lib
from hific_tf import runtime
from hific_tf.configs import Config
from hific_tf.errors import HificError
from hific_tf.models import sources
from hific_tf.models.hific import layers, networks
from hific_tf.models.hific.model import HiFiC
from hific_tf.training import data as data_lib
from hific_tf.training import decoder_stage, latent_cache


class TrainError(HificError, ValueError):
  """A user-facing training problem (bad model_dir, mismatched config...)."""


class _SaveCheckpoint(tf.keras.callbacks.Callback):
  """Writes the codec checkpoint at every epoch end (an epoch is `checkpoint_every` steps)."""

  def __init__(self, model_dir, keep=3):
    super().__init__()
    self.directory = str(pathlib.Path(model_dir) / "checkpoints")
    self.keep = keep
    self.manager = None

  def on_epoch_end(self, epoch, logs=None):
    if self.manager is None:
      self.manager = tf.train.CheckpointManager(sources.codec_checkpoint(self.model),
                                                self.directory, max_to_keep=self.keep)
    with self.model.saved_weights():  # A decoder stage's EMA of G, when it keeps one.
      self.manager.save(checkpoint_number=int(self.model.step.numpy()))


class DivergenceGuard(tf.keras.callbacks.Callback):
  """Rolls the codec back to its last checkpoint when an epoch's training PSNR collapses.

  A GAN stage in mixed precision can throw the generator off within a few dozen steps: small-hi
  (2026-12-02) went from 28.0 to 20.8 dB training PSNR in one 50-step epoch and decoded the
  held-out photos at 17 dB after it. When an epoch's mean PSNR falls more than `drop_db`
  below the median of the last `window` epochs, E, G, the hyperprior and D are restored from
  the latest codec checkpoint and training goes on (the optimizers keep their moments). It
  runs before the epoch's backup and checkpoint, so neither keeps the collapsed weights.

  The last epochs' PSNRs are kept in model_dir/divergence_guard.json: a resumed run (the
  ladder starts a new process every slice) is guarded from its first epoch on. Without them
  a run resumed after a rollback collapsed again in its first epoch and checkpointed it.
  """

  HISTORY = "divergence_guard.json"

  def __init__(self, model_dir, drop_db=3., window=5, log=print):
    super().__init__()
    self.directory = str(pathlib.Path(model_dir) / "checkpoints")
    self.history_path = pathlib.Path(model_dir) / self.HISTORY
    self.drop_db, self.window, self.log = drop_db, window, log
    self.history = self._read_history()
    self.rollbacks = 0

  def _read_history(self):
    """The PSNRs an earlier process of this run kept; none if the file is missing or bad."""
    try:
      values = json.loads(self.history_path.read_text())["psnr"]
      return [float(v) for v in values if math.isfinite(float(v))][-self.window:]
    except (OSError, ValueError, KeyError, TypeError):
      return []

  def on_epoch_end(self, epoch, logs=None):
    psnr = (logs or {}).get("psnr")
    if psnr is None or not math.isfinite(psnr):
      return
    recent = sorted(self.history[-self.window:])
    median = recent[len(recent) // 2] if recent else None
    latest = tf.train.latest_checkpoint(self.directory)
    if len(recent) >= 3 and psnr < median - self.drop_db and latest:
      sources.restore_checkpoint(self.model, latest)
      self.rollbacks += 1
      self.log(f"hific train: step {int(self.model.step.numpy())}: training PSNR fell to "
               f"{psnr:.1f} dB from {median:.1f}; E, G, hyperprior and D rolled back to "
               f"{pathlib.Path(latest).name}")
      return
    self.history = (self.history + [float(psnr)])[-self.window:]
    images_lib.write_atomic(self.history_path, json.dumps({"psnr": self.history}).encode(),
                            force=True)


class _ImageSummary(tf.keras.callbacks.Callback):
  """Input and reconstruction of a fixed batch in TensorBoard, once per epoch."""

  def __init__(self, log_dir, images):
    super().__init__()
    self.writer = tf.summary.create_file_writer(str(pathlib.Path(log_dir) / "images"))
    self.images = images

  def on_epoch_end(self, epoch, logs=None):
    outputs = self.model(self.images, training=False)
    reconstruction = tf.clip_by_value(outputs["reconstruction"], 0., 1.)
    with self.writer.as_default(step=int(self.model.step.numpy())):
      tf.summary.image("input", outputs["image"], max_outputs=2)
      tf.summary.image("reconstruction", reconstruction, max_outputs=2)


def _restore_backup(model, backup_dir):
  """Restores a BackupAndRestore state early, to learn the step the data must resume at."""
  latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  if not latest:
    return False
  tf.train.Checkpoint(model=model).restore(latest).expect_partial()
  return True


def default_strategy():
  """MirroredStrategy over all GPUs when there are several; TF_CONFIG selects multi-worker."""
  if "TF_CONFIG" in os.environ:
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  if len(gpus) > 1:
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def train(config: Config, model_dir, train_glob=None, tfds_name=None, steps=None,
          init_from=None, batch_size=None, crop_size=None, checkpoint_every=1000,
          val_glob=None, seed=0, precision="auto", jit_compile="auto", tfds_data_dir=None,
          callbacks=(), verbose=None, strategy=None):
  """Trains (or resumes training) and returns the Keras History.

  `batch_size` is the global batch of the generator step; in stage "hific" the pipeline
  delivers twice that, and D gets every second image. `steps` counts generator steps.
  `precision` and `jit_compile` ("auto", or a policy name and "on"/"off") are resolved by
  `runtime.choose` to the fastest correct setting of this machine.
  """
  model_dir = pathlib.Path(model_dir)
  batch_size = batch_size or config.batch_size
  crop_size = crop_size or config.crop_size
  steps = steps or config.num_steps
  if crop_size % networks.DOWNSAMPLING_FACTOR:
    raise TrainError(f"--crop_size must be a multiple of {networks.DOWNSAMPLING_FACTOR} (the "
                     f"encoder's downsampling), got {crop_size}")
  if batch_size < 1 or steps < 1:
    raise TrainError("--batch_size and --steps must be positive")
  config_path = model_dir / "config.json"
  if config_path.is_file():
    existing = sources.read_config(model_dir).name
    if existing != config.name:
      raise TrainError(f"{model_dir} holds a '{existing}' run; "
                       f"use another --model_dir for '{config.name}'")
  # Decode every photo before the slow model build: a bad file fails here, in one line.
  photo_cache = None
  if train_glob is not None:
    photo_cache = data_lib.PhotoCache(data_lib.list_images(train_glob))
  if val_glob is not None:
    data_lib.list_images(val_glob)

  precision, jit_compile = runtime.choose(
      precision, {"on": True, "off": False}.get(jit_compile, jit_compile))
  runtime.check_bfloat16("training", (precision,))
  # The policy decides the types of the layers built under it; the caller's is restored.
  with global_policy(precision):
    return _build_and_fit(config, model_dir, config_path, photo_cache, steps, batch_size,
                          crop_size, checkpoint_every, init_from, val_glob, seed, precision,
                          jit_compile, tfds_name, tfds_data_dir, callbacks, verbose, strategy)


def _latent_dataset(model, config, model_dir, photo_cache, batch_size, crop_size, seed,
                    start_step):
  """The decoder stage's batches: crops with their latents, encoded once by the frozen E."""
  from hific_tf.models.hific import stored_weights
  if photo_cache is None:
    raise TrainError("the decoder stage trains from a folder of photos (--train_glob): its "
                     "latents are cached once per crop")
  images, latents = latent_cache.load_or_build(
      model, photo_cache, config.latent_crops_per_photo, crop_size, seed,
      model_dir / latent_cache.CACHE_FILE, stored_weights.bitstream_fingerprint(model).hex(),
      log=lambda line: print(line, flush=True))
  return latent_cache.dataset(images, latents, batch_size, seed, start_step)


@contextlib.contextmanager
def global_policy(name):
  """The Keras global precision policy `name` for the block, the caller's restored after."""
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)


def build_for_training(config, seed=0, crop_size=None, jit_compile=False, strategy=None):
  """The model `hific train` fits: built, compiled, its optimizers' slots created.

  The one place a training step is set up; bench/train_speed.py times and profiles the same
  model (with `step_function`). Call it under the global precision policy the run uses.
  """
  tf.keras.utils.set_random_seed(seed)  # Same initial weights for the same seed.
  strategy = strategy or default_strategy()
  model_class = decoder_stage.DecoderStage if config.stage == "decoder" else HiFiC
  with strategy.scope():
    model = model_class(config, seed=seed).build_all(min(crop_size or config.crop_size, 64))
    model.compile(jit_compile=jit_compile)
    # Create optimizer slots now, so a restored backup fills them instead of deferring.
    for optimizer, variables in ((model.transform_optimizer, model.transform_variables),
                                 (model.entropy_optimizer, model.entropy_variables),
                                 (model.discriminator_optimizer, model.discriminator_variables)):
      if optimizer is not None:
        optimizer.build(variables)
  return model


def step_function(model, fused_norms=True):
  """`model.train_step` as one tf.function, traced as `model.fit` traces it in `hific train`
  (ChannelNorm as one XLA kernel unless `fused_norms` is False), for timing a step alone."""
  step = tf.function(model.train_step)

  def run(images):
    with layers.fused_norms() if fused_norms else contextlib.nullcontext():
      return step(images)
  return run


def _build_and_fit(config, model_dir, config_path, photo_cache, steps, batch_size, crop_size,
                   checkpoint_every, init_from, val_glob, seed, precision, jit_compile,
                   tfds_name, tfds_data_dir, callbacks, verbose, strategy):
  model = build_for_training(config, seed, crop_size, jit_compile, strategy)

  model_dir.mkdir(parents=True, exist_ok=True)
  backup_dir = str(model_dir / "backup")
  resumed = _restore_backup(model, backup_dir)
  if not resumed and tf.train.latest_checkpoint(str(model_dir / "checkpoints")):
    raise TrainError(f"{model_dir} already holds a finished run; train into a new --model_dir "
                     "(or --init_from it)")
  restored_discriminator = None
  if not resumed and init_from:
    restored_discriminator = sources.restore(model, init_from)
    if config.stage == "decoder":
      config = decoder_stage.with_source_fingerprint(config, init_from)
  if not resumed and config.stage == "decoder":
    model.restart_averages()
  if resumed and config_path.is_file():
    # What the run recorded when it started (the files of the codec it grew from) stays: the
    # config given now is that of the same name, which cannot know it.
    recorded = sources.read_config(model_dir).reads_fingerprints
    config = config.replace(reads_fingerprints=tuple(dict.fromkeys(
        (*recorded, *config.reads_fingerprints))))
  # What the run actually uses, flags included: export, stage 2 and readers of the
  # model_dir see the true batch, crop and length.
  used = config.replace(batch_size=batch_size, crop_size=crop_size, num_steps=steps)
  images_lib.write_atomic(config_path, used.to_json().encode(), force=True)

  start_step = int(model.step.numpy())
  steps_per_epoch = math.gcd(steps, max(1, min(checkpoint_every, steps)))
  if start_step % steps_per_epoch:
    raise TrainError(f"backup in {backup_dir} is at step {start_step}, not a multiple of "
                     f"--checkpoint_every {steps_per_epoch}; resume with the same flags")
  if config.stage == "decoder":
    dataset = _latent_dataset(model, config, model_dir, photo_cache, batch_size, crop_size,
                              seed, start_step)
  else:
    images_per_step = batch_size * (2 if config.use_gan else 1)
    dataset = data_lib.training_dataset(images_per_step, crop_size, seed, tfds_name=tfds_name,
                                        tfds_data_dir=tfds_data_dir, start_step=start_step,
                                        photo_cache=photo_cache,
                                        random_flip=config.random_flip)
  validation = (data_lib.validation_dataset(val_glob, crop_size, batch_size)
                if val_glob else None)
  log_dir = str(model_dir / "logs")
  sample = next(iter(validation if validation is not None else dataset))
  sample = (sample[0] if isinstance(sample, tuple) else sample)[:batch_size]
  all_callbacks = [
      DivergenceGuard(model_dir, log=lambda line: print(line, flush=True)),  # Before the saves.
      tf.keras.callbacks.BackupAndRestore(backup_dir),
      tf.keras.callbacks.TerminateOnNaN(),
      tf.keras.callbacks.TensorBoard(log_dir, update_freq=min(100, steps_per_epoch)),
      _SaveCheckpoint(model_dir),
      _ImageSummary(log_dir, sample),
      *callbacks,
  ]
  if verbose is None:
    verbose = 1 if os.isatty(1) else 2
  if verbose:
    print(f"hific train: {runtime.describe(precision, jit_compile)}", flush=True)
  if verbose and restored_discriminator is not None and config.use_gan:
    print(f"--init_from {init_from}: E, G and hyperprior restored; "
          f"D {'restored' if restored_discriminator else 'starts fresh'}", flush=True)
  with layers.fused_norms():  # The step is traced once: XLA's compile is paid once.
    return model.fit(dataset, epochs=steps // steps_per_epoch,
                     steps_per_epoch=steps_per_epoch, validation_data=validation,
                     callbacks=all_callbacks, verbose=verbose)
