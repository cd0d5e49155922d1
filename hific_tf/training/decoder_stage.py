"""The decoder-only GAN stage: G (with its realism knob) against D on frozen, cached latents.

Published GAN stages of learned codecs train the decoder alone, long after the rate is
settled: MS-ILLM (Muckley et al., ICML 2023) freezes the encoder and entropy model and
fine-tunes G against D. Here E, the hyperprior and the gains are frozen, so the bitstream is
that of the codec the stage starts from and every file it wrote keeps decoding. Each training
crop's y comes from latent_cache.py; a step draws a rate (uniform between the first and last
rate point), applies that rate's gain and rounds exactly as `compress` does (the hyperprior in
inference mode), then runs only G, D and the distortion losses:

  L_G = k_M MSE + k_P LPIPS + R beta softplus(-D(G(y_hat, R), y_hat)),

with the realism R drawn per example (Agustsson et al., "Multi-Realism Image Compression with
a Conditional Generator", CVPR 2023). D and G are updated from the same forward pass.
Optional: DiffAugment on both of D's inputs (Zhao et al., NeurIPS 2020), colour and cutout
(translation would move the image against its latent), and an EMA of G's weights.
"""

import contextlib

import tensorflow as tf

from hific_tf.models.hific import objectives, projected_discriminator
from hific_tf.models.hific.model import HiFiC

_METRICS = ("loss", "mse", "psnr", "lpips", "g_loss", "d_loss", "d_real", "d_fake", "rate",
            "learning_rate")


def diff_augment(images, policy, seed):
  """DiffAugment's colour and cutout on a batch in [0, 1] scale, per example, stateless."""
  seeds = tf.random.experimental.stateless_split(seed, 5)
  batch = tf.shape(images)[0]
  uniform = lambda i: tf.random.stateless_uniform([batch, 1, 1, 1], seeds[i])
  if "color" in policy:
    images = images + (uniform(0) - 0.5)
    mean = tf.reduce_mean(images, axis=3, keepdims=True)
    images = (images - mean) * (uniform(1) * 2.) + mean
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * (uniform(2) + 0.5) + mean
  if "cutout" in policy:
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    half_h, half_w = height // 4, width // 4  # A square of half the side, as DiffAugment.
    centre_y = tf.random.stateless_uniform([batch, 1, 1], seeds[3], 0, height, tf.int32)
    centre_x = tf.random.stateless_uniform([batch, 1, 1], seeds[4], 0, width, tf.int32)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = ((tf.abs(rows - centre_y) < half_h) & (tf.abs(cols - centre_x) < half_w))
    images = images * tf.cast(~inside, images.dtype)[..., None]
  return images


def with_source_fingerprint(config, init_from):
  """`config` reading the files of the codec the stage starts from: its fingerprint (as its
  files carry it) and those it reads itself join `reads_fingerprints`, since the bitstream
  stays that codec's (a stage continued from another decoder stage reads what that one read).
  """
  from hific_tf.models import sources
  from hific_tf.models.hific import stored_weights
  init_from = sources.source_of(init_from)
  source_config = sources.config_of(init_from)
  source = HiFiC(source_config.replace(stage="mselpips")).build_all()
  sources.restore(source, init_from)
  reads = list(config.reads_fingerprints)
  for fingerprint in (*source_config.reads_fingerprints,
                      stored_weights.fingerprint(source).hex()):
    if fingerprint not in reads:
      reads.append(fingerprint)
  return config.replace(reads_fingerprints=tuple(reads))


class DecoderStage(HiFiC):
  """HiFiC whose `train_step` trains only the decoder; batches are (images, cached y)."""

  @property
  def projected(self):
    return isinstance(self.discriminator, projected_discriminator.ProjectedDiscriminator)

  def _judge(self, real, fake, y_hat, real_features, fake_features):
    """D's logit maps of the photos and of the reconstructions (lists, one map per scale).

    The projected D judges LPIPS' features (those of the loss, unless DiffAugment changed
    the pixels); the PatchGAN judges pixels, real and fake in one call (one pass of its
    kernels, not two).
    """
    augmented = real is not None
    if self.projected:
      if augmented:
        real_features, fake_features = self.lpips.features(real), self.lpips.features(fake)
      return (self.discriminator((real_features, y_hat), training=True),
              self.discriminator((fake_features, y_hat), training=True))
    logits = self.discriminator((tf.concat([real, fake], 0), tf.concat([y_hat, y_hat], 0)),
                                training=True)
    batch_size = tf.shape(real)[0]
    return [logits[:batch_size]], [logits[batch_size:]]

  def build_all(self, crop_size=64):
    super().build_all(crop_size)
    # The EMA's copies of G's weights: what checkpoints and bundles save (`saved_weights`).
    self.ema = ([tf.Variable(v, trainable=False, name="ema") for v in self.decoder_variables]
                if self.config.ema_decay > 0 else [])
    return self

  def restart_averages(self):
    """The EMA starts at G's weights as they are now: after `--init_from` has loaded the
    starting codec (averaging from the random initialisation would blend it in)."""
    for average, variable in zip(self.ema, self.decoder_variables):
      average.assign(variable)

  @property
  def transform_variables(self):
    return self.decoder_variables

  @property
  def entropy_variables(self):
    return []

  def compile(self, jit_compile=False, loss_scale=None, **kwargs):
    super().compile(jit_compile=jit_compile, loss_scale=loss_scale, **kwargs)
    self.trackers = {name: tf.keras.metrics.Mean(name=name) for name in _METRICS}

  def _training_rate(self):
    points = [point[0] for point in self.config.rate_points] or [0.]
    return tf.random.stateless_uniform([], self._noise_seed(3), min(points), max(points) + 1e-6)

  def train_step(self, batch):
    config = self.config
    images, latents = batch
    rate = self._training_rate()
    # The coder's quantization at that rate: gain, rounding around the mean, ungain.
    y_hat = tf.stop_gradient(self.hyperprior(latents, training=False,
                                             log_gain=self.log_gain(rate)).y_hat)
    x = tf.cast(images, tf.float32) / 255.
    batch_size = tf.shape(x)[0]
    realism = (tf.random.stateless_uniform([batch_size], self._noise_seed(4))
               if self.realism is not None else tf.ones([batch_size]))
    policy = config.diff_augment
    real_features = [tf.stop_gradient(f) for f in self.lpips.features(x)]
    with tf.GradientTape(persistent=True) as tape:
      reconstruction = self.generate(y_hat, realism)
      fake_features = self.lpips.features(reconstruction)
      lpips = self.lpips.distance_from_features(fake_features, real_features)
      real_input, fake_input = (None, None) if self.projected else (x, reconstruction)
      if policy:
        real_input = diff_augment(x, policy, self._noise_seed(5))
        fake_input = diff_augment(reconstruction, policy, self._noise_seed(6))
      real, fake = self._judge(real_input, fake_input, y_hat, real_features, fake_features)
      d_per_image = objectives.discriminator_loss(real, fake)
      g_loss = objectives.generator_gan_loss(fake)
      mse = objectives.pixel_mse(x, reconstruction)
      per_image = (config.k_mse * mse + config.k_lpips * lpips +
                   config.beta_gan * realism * g_loss)
      g_total = objectives.scaled_loss(self.transform_optimizer,
                                       tf.nn.compute_average_loss(per_image))
      d_total = objectives.scaled_loss(self.discriminator_optimizer,
                                       tf.nn.compute_average_loss(d_per_image))
    # D's gradient is taken before G moves (then both updates apply), as two players who
    # see the same forward pass.
    d_gradients = objectives.unscaled_gradients(
        self.discriminator_optimizer, tape.gradient(d_total, self.discriminator_variables))
    objectives.apply_gradients(self.transform_optimizer, tape, g_total, self.decoder_variables)
    del tape
    self.discriminator_optimizer.apply_gradients(zip(d_gradients, self.discriminator_variables))
    for average, variable in zip(self.ema, self.decoder_variables):
      average.assign(config.ema_decay * average + (1. - config.ema_decay) * variable)
    return self._update_trackers(dict(
        loss=per_image, mse=mse, psnr=tf.image.psnr(x, reconstruction, 1.), lpips=lpips,
        g_loss=g_loss, d_loss=d_per_image, d_real=objectives.per_image(real, tf.sigmoid),
        d_fake=objectives.per_image(fake, tf.sigmoid),
        rate=rate, learning_rate=objectives.learning_rate_schedule(config)(self.step)))

  def test_step(self, batch):
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    outputs = self(images, training=False)
    x, reconstruction = outputs["image"], outputs["reconstruction"]
    mse = objectives.pixel_mse(x, reconstruction)
    lpips = self.lpips(reconstruction, x)
    return self._update_trackers(dict(
        loss=self.config.k_mse * mse + self.config.k_lpips * lpips, mse=mse,
        psnr=tf.image.psnr(x, reconstruction, 1.), lpips=lpips))

  @contextlib.contextmanager
  def saved_weights(self):
    """G's EMA weights in place while a checkpoint is written, the trained ones after."""
    if not self.ema:
      yield
      return
    trained = [tf.identity(v) for v in self.decoder_variables]
    for average, variable in zip(self.ema, self.decoder_variables):
      variable.assign(average)
    try:
      yield
    finally:
      for value, variable in zip(trained, self.decoder_variables):
        variable.assign(value)
