"""HiFiC as a Keras model: transforms, hyperprior, the codec contract and its training step.

Mentzer, Toderici, Tschannen, Agustsson, "High-Fidelity Generative Image Compression",
NeurIPS 2020 (arXiv 2006.09965). The generator loss is

  L_EGP = lambda' r + k_M MSE + k_P LPIPS - beta log D(x', y_hat),

with lambda' = lambda_a when the rate of the rounded latents is above the target r_t and
lambda_b below it (Sec. 3.2); D is stepped once on its own sub-batch before each G step.
The terms, schedules and optimizers are objectives.py's; `train_step` puts them together.
Everything numeric comes from a `Config`.

Every model codes at a `rate` (gains.py): a float that scales the quantization gain of y by
2^rate. A model with `rate_points` learns per-channel gains at each point (Cui et al., CVPR
2021) and each training step samples one point, with that point's crop target.
"""

import contextlib

import tensorflow as tf

from hific_tf import geometry
from hific_tf.configs import Config
from hific_tf.measure import lpips as lpips_lib
from hific_tf.models.hific import gains, networks, objectives, projected_discriminator
from hific_tf.models.hific import hyperprior as hyperprior_lib
from hific_tf.models.hific import realism as realism_lib

# The codec pads images to a multiple of the total downsampling (z is at 1/64).
PAD_MULTIPLE = geometry.PAD_MULTIPLE

# Metrics reported by fit/evaluate, in display order. The GAN ones only in stage "hific".
_METRICS = ("loss", "bpp_noisy", "bpp_quantized", "mse", "psnr", "lpips", "rate_weight",
            "target_bpp", "learning_rate")
_GAN_METRICS = ("g_loss", "d_loss", "d_real", "d_fake")


def reflect_pad(image, multiple):
  """Pads [H, W, C] at the bottom/right to multiples of `multiple`, mirroring any distance.

  tf.pad's REFLECT needs the pad to be smaller than the image; a 17x31 image needs 47 rows.
  Gathering with mirrored indexes handles every size, down to 1 pixel.
  """
  def indexes(size):
    padded = geometry.round_up(size, multiple)
    period = tf.maximum(2 * (size - 1), 1)
    position = tf.math.floormod(tf.range(padded), period)
    return tf.where(position < size, position, period - position)

  shape = tf.shape(image)
  image = tf.gather(image, indexes(shape[0]), axis=0)
  return tf.gather(image, indexes(shape[1]), axis=1)


def _image_pixels(images):
  shape = tf.shape(images)
  return tf.cast(shape[1] * shape[2], tf.float32)


def _discriminator_for(config):
  """D of a GAN config: the decoder stage's projected D on LPIPS features when the config
  asks for it (projected_discriminator.py), else HiFiC's conditional PatchGAN on pixels."""
  if not config.use_gan:
    return None
  if config.stage == "decoder" and config.discriminator == "projected":
    return projected_discriminator.ProjectedDiscriminator(
        lpips_lib.FEATURE_CHANNELS[config.lpips_net])
  return networks.Discriminator(config.disc_filters_base, config.disc_latent_channels,
                                spectral_norm=config.discriminator_spectral_norm)


class HiFiC(tf.keras.Model):
  """The HiFiC codec and its training objective.

  Call it on uint8 (or [0, 255] float) images to get the reconstruction in [0, 1] scale and
  the rate estimates. `compile()` creates the optimizers (transforms, entropy model and, in
  stage "hific", discriminator) and LPIPS; `fit()` then runs the paper's recipe.
  """

  def __init__(self, config: Config, seed=0, generator_dtype=None, lpips_weights=None,
               encoder_dtype=None, lean_generator=False, **kwargs):
    super().__init__(name=kwargs.pop("name", "hific"), **kwargs)
    self.config = config
    self.seed = seed
    self.lpips_weights = lpips_weights
    self.encoder = networks.Encoder(config.num_filters_base, config.latent_channels,
                                    padding=config.conv_padding, dtype=encoder_dtype)
    self.generator = networks.Generator(config.num_filters_base, config.num_residual_blocks,
                                        padding=config.conv_padding,
                                        alignment=config.transposed_alignment,
                                        lean=lean_generator, dtype=generator_dtype)
    self.hyperprior = hyperprior_lib.Hyperprior(
        config.latent_channels, config.hyper_filters, config.num_scales, config.scale_min,
        config.scale_max, hyper_padding=config.hyper_padding,
        scale_parameterization=config.scale_parameterization,
        side_prior_filters=config.side_prior_filters,
        side_prior_last_factor=config.side_prior_last_factor,
        side_quantization=config.side_quantization, likelihood=config.likelihood)
    self.rate_gains = gains.RateGains(config.rate_points, config.latent_channels)
    self.realism = (realism_lib.RealismConditioning(
        config.num_residual_blocks, config.num_filters_base * 2 ** networks.NUM_DOWNSAMPLINGS)
                    if config.realism else None)
    self.discriminator = _discriminator_for(config)
    self.lpips = None

  def build_all(self, crop_size=64):
    """Creates every variable by running one small batch (Keras subclassed models are lazy)."""
    images = tf.zeros([1, crop_size, crop_size, 3], tf.uint8)
    outputs = self(images, training=True)
    if self.discriminator is not None:
      self._build_discriminator(outputs)
    return self

  def _build_discriminator(self, outputs):
    if isinstance(self.discriminator, projected_discriminator.ProjectedDiscriminator):
      self.discriminator.build_for(self.config.latent_channels)
    else:
      self.discriminator((outputs["reconstruction"], outputs["y_hat"]))

  # --- Variable groups: three optimizers, as in the official code. -------------------------

  @property
  def transform_variables(self):
    hp = self.hyperprior
    return (self.encoder.trainable_variables + self.generator.trainable_variables +
            hp.analysis.trainable_variables + hp.synthesis_mean.trainable_variables +
            hp.synthesis_scale.trainable_variables + self.rate_gains.trainable_variables +
            self.decoder_extras)

  @property
  def decoder_variables(self):
    """G's trainable weights with the realism knob's: what a decoder-only stage trains."""
    return self.generator.trainable_variables + self.decoder_extras

  @property
  def decoder_extras(self):
    return self.realism.trainable_variables if self.realism is not None else []

  @property
  def entropy_variables(self):
    return list(self.hyperprior.side_prior.trainable_variables)

  @property
  def discriminator_variables(self):
    return self.discriminator.trainable_variables if self.discriminator is not None else []

  @property
  def codec_modules(self):
    """What a stage-2 run restores from stage 1 and what an exported codec contains.

    The rate gains are a part only where they hold weights (`rate_points`), so the weights
    and fingerprints of single-rate models are those they always had.
    """
    modules = {"encoder": self.encoder, "generator": self.generator,
               "hyperprior": self.hyperprior}
    if self.config.rate_points:
      modules["rate_gains"] = self.rate_gains
    if self.realism is not None:
      modules["realism"] = self.realism
    return modules

  @property
  def bitstream_modules(self):
    """The parts that decide the bits of a file: everything but the decoder (G, realism).

    A codec whose card fingerprints the bitstream (stored_weights.fingerprint) keeps reading
    its files when only its decoder is retrained.
    """
    return {part: module for part, module in self.codec_modules.items()
            if part not in ("generator", "realism")}

  def codec_variables(self):
    """(key, variable) of the codec's trained weights in a fixed order, "part/index/name".

    The order is the creation order, which is fixed by the code, while Keras' variable names
    carry per-process layer counters; so weight files and fingerprints go by part and index,
    and the name is only for people. Range-coding tables (not trainable) are excluded: they
    are derived from these weights.
    """
    for part, module in self.codec_modules.items():
      for index, variable in enumerate(module.trainable_variables):
        yield f"{part}/{index:03d}/{variable.name}", variable

  def bitstream_variables(self):
    """(key, variable) of `bitstream_modules`, keyed as `codec_variables`."""
    for key, variable in self.codec_variables():
      if key.split("/")[0] in self.bitstream_modules:
        yield key, variable

  def saved_weights(self):
    """The weights a checkpoint saves are the trained ones (a decoder stage may swap in an
    EMA here)."""
    return contextlib.nullcontext()

  def discriminator_state(self):
    """(key, variable) of D, power-iteration vectors included, in creation order."""
    for index, variable in enumerate(self.discriminator.variables):
      yield f"discriminator/{index:03d}/{variable.name}", variable

  # --- Forward pass. ------------------------------------------------------------------------

  def _encoder_input(self, x):
    """E's input from an image in [0, 1]: as is, or in [-1, 1] (input_range "signed")."""
    return x * 2. - 1. if self.config.input_range == "signed" else x

  def image_from(self, generator_output):
    """The image in [0, 1] scale from G's output: as is, or (tanh + 1) / 2 ("signed")."""
    output = tf.cast(generator_output, tf.float32)
    if self.config.input_range == "signed":
      return (tf.math.tanh(output) + 1.) / 2.
    return output

  def generate(self, y_hat, realism=None):
    """G: y_hat [B, h, w, C] -> image [B, H, W, 3] in [0, 1] scale, at realism R ([B] or a
    scalar; default: the config's `default_realism`) when the decoder has the knob."""
    biases = self.realism_biases(realism, tf.shape(y_hat)[:1])
    return self.image_from(self.generator(y_hat, biases))

  def realism_biases(self, realism, batch_shape=(1,)):
    """The knob's per-block biases at R (a scalar, or one per example; default: the config's
    `default_realism`) for a batch; None for a decoder without the knob."""
    if self.realism is None:
      return None
    realism = self.config.default_realism if realism is None else realism
    return self.realism(tf.broadcast_to(tf.cast(realism, tf.float32), batch_shape))

  def log_gain(self, rate=None):
    """The per-channel log gain of y at `rate`; None (the default) is rate 0 of this model.

    Every path that quantizes (training, test_step, calibration, the effort search, the
    entropy-model estimate) goes through here, so "a rate" means what `compress` codes at.
    """
    return self.rate_gains(0. if rate is None else rate)

  def call(self, images, training=False, noise_seed=None, z_offset=None, rate=None,
           realism=None):
    """images: [B, H, W, 3] in [0, 255] (H, W multiples of 16 in training); `rate` (a float
    scalar, default 0: the model's own) sets the quantization gain as `compress` does."""
    x = tf.cast(images, tf.float32) / 255.
    y = self.encoder(self._encoder_input(x))
    hp = self.hyperprior(y, training=training, noise_seed=noise_seed, z_offset=z_offset,
                         log_gain=self.log_gain(rate))
    reconstruction = self.generate(hp.y_hat, realism)
    pixels = _image_pixels(images)
    return {
        "image": x,
        "reconstruction": reconstruction,
        "y_hat": hp.y_hat,
        "bpp_noisy": (hp.y_bits_noisy + hp.z_bits_noisy) / pixels,
        "bpp_quantized": (hp.y_bits_quantized + hp.z_bits_quantized) / pixels,
    }

  # --- Training. ----------------------------------------------------------------------------

  def compile(self, jit_compile=False, loss_scale=None, **kwargs):
    """Creates the optimizers, metric trackers and LPIPS (its weights must be present).

    Args:
      jit_compile: XLA for E, G, D and LPIPS, each on its own. The train step as a whole
        does not compile: tfc's factorized prior finds its quantization offsets with a while
        loop whose gradient XLA cannot take.
      loss_scale: dynamic loss scaling of all three optimizers. Default: on under the
        mixed_float16 policy, where gradients smaller than float16's 6e-8 would flush to
        zero inside E and G (bfloat16 has float32's range and needs none).
    """
    config = self.config
    if loss_scale is None:
      loss_scale = tf.keras.mixed_precision.global_policy().compute_dtype == "float16"
    self.lpips = lpips_lib.LPIPS(config.lpips_net, weights_path=self.lpips_weights)
    (self.transform_optimizer, self.entropy_optimizer,
     self.discriminator_optimizer) = objectives.optimizers(config, loss_scale)
    if jit_compile:
      for network in (self.encoder, self.generator, self.discriminator, self.lpips):
        if network is not None:
          network.call = tf.function(network.call, jit_compile=True)
    super().compile(optimizer=self.transform_optimizer, **kwargs)
    names = _METRICS + (_GAN_METRICS if config.use_gan else ())
    self.trackers = {name: tf.keras.metrics.Mean(name=name) for name in names}

  @property
  def metrics(self):
    return list(getattr(self, "trackers", {}).values())

  @property
  def step(self):
    """The generator step: drives the schedules and restarts with each stage."""
    return self.transform_optimizer.iterations

  def _noise_seed(self, salt):
    seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(seed, salt)

  def _generator_terms(self, outputs, crop_target=None):
    """Per-image loss of the generator step (without the GAN term) and what it reports."""
    config = self.config
    target, lambda_factor, learning_rate = objectives.schedules(config, self.step, crop_target)
    bpp_quantized_mean = objectives.global_mean(tf.stop_gradient(outputs["bpp_quantized"]))
    weight = objectives.rate_weight(config, bpp_quantized_mean, target, lambda_factor)
    mse = objectives.pixel_mse(outputs["image"], outputs["reconstruction"])
    lpips = self.lpips(outputs["reconstruction"], outputs["image"])
    per_image = (weight * outputs["bpp_noisy"] + config.k_mse * mse + config.k_lpips * lpips)
    psnr = tf.image.psnr(outputs["image"], outputs["reconstruction"], 1.)
    reports = dict(mse=mse, psnr=psnr, lpips=lpips, rate_weight=weight,
                   bpp_noisy=outputs["bpp_noisy"], bpp_quantized=outputs["bpp_quantized"],
                   target_bpp=target, learning_rate=learning_rate)
    return per_image, reports

  def _discriminate(self, outputs, reconstruction, training):
    latent = tf.stop_gradient(outputs["y_hat"])
    real = self.discriminator((outputs["image"], latent), training=training)
    fake = self.discriminator((reconstruction, latent), training=training)
    return real, fake

  def _rate_point(self):
    """(rate, crop target) of this step: one of the `rate_points`, drawn from the step's seed
    (so a resumed run draws what the killed one would have); (None, None) for one rate."""
    points = self.config.rate_points
    if not points:
      return None, None
    index = tf.random.stateless_uniform([], self._noise_seed(3), 0, len(points), tf.int32)
    rates, targets = zip(*points)
    return (tf.gather(tf.constant(rates, tf.float32), index),
            tf.gather(tf.constant(targets, tf.float32), index))

  def _discriminator_step(self, images, z_offset, rate=None):
    """One D update on its own sub-batch; E, G and the hyperprior are left untouched."""
    outputs = self(images, training=True, noise_seed=self._noise_seed(2), z_offset=z_offset,
                   rate=rate)
    reconstruction = tf.stop_gradient(outputs["reconstruction"])
    with tf.GradientTape() as tape:
      real, fake = self._discriminate(outputs, reconstruction, training=True)
      per_image = objectives.discriminator_loss(real, fake)
      loss = objectives.scaled_loss(self.discriminator_optimizer,
                                    tf.nn.compute_average_loss(per_image))
    objectives.apply_gradients(self.discriminator_optimizer, tape, loss,
                               self.discriminator_variables)
    return dict(d_loss=per_image, d_real=tf.sigmoid(real), d_fake=tf.sigmoid(fake))

  def train_step(self, images):
    config = self.config
    reports = {}
    z_offset = self.hyperprior.side_quantization_offset()
    rate, crop_target = self._rate_point()
    if config.use_gan:
      # Interleaved, not halved: then any split of the global batch across replicas gives
      # G and D the same images a single device would.
      images, disc_images = images[0::2], images[1::2]
      reports.update(self._discriminator_step(disc_images, z_offset, rate))
    with tf.GradientTape(persistent=True) as tape:
      outputs = self(images, training=True, noise_seed=self._noise_seed(1), z_offset=z_offset,
                     rate=rate)
      per_image, terms = self._generator_terms(outputs, crop_target)
      if config.use_gan:
        _, fake = self._discriminate(outputs, outputs["reconstruction"], training=False)
        g_loss = objectives.generator_gan_loss(fake)
        per_image += config.beta_gan * g_loss
        reports["g_loss"] = g_loss
      loss = tf.nn.compute_average_loss(per_image)
      scaled_losses = [objectives.scaled_loss(self.transform_optimizer, loss),
                       objectives.scaled_loss(self.entropy_optimizer, loss)]
    objectives.apply_gradients(self.transform_optimizer, tape, scaled_losses[0],
                               self.transform_variables)
    objectives.apply_gradients(self.entropy_optimizer, tape, scaled_losses[1],
                               self.entropy_variables)
    del tape
    reports.update(terms, loss=per_image)
    return self._update_trackers(reports)

  def test_step(self, images):
    """Validation: rounded latents (as the codec will see), same loss terms, no D."""
    outputs = self(images, training=False)
    per_image, terms = self._generator_terms(outputs)
    return self._update_trackers(dict(terms, loss=per_image))

  def _update_trackers(self, reports):
    for name, value in reports.items():
      if name in self.trackers:
        self.trackers[name].update_state(tf.reshape(tf.cast(value, tf.float32), [-1]))
    return {name: tracker.result() for name, tracker in self.trackers.items()}

  def predict_step(self, images):
    return self(images, training=False)["reconstruction"]

  # --- The codec contract: image <-> strings, as tfc's models/bmshj2018.py defines it. ------

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                tf.TensorSpec([], tf.float32)])
  def compress(self, image, rate):
    """uint8 [H, W, 3] (any size) at `rate` (0: the model's own) -> y and z strings and the
    shapes.

    The image is reflect-padded to PAD_MULTIPLE and the decoder crops back to image_shape.
    Needs `hyperprior.build_coders()` first.
    """
    return self.compress_y(self.analyze(image), tf.shape(image)[:2], rate)

  def compress_y(self, y, shape, rate):
    """Range-codes y of an image of `shape` (y padded to whole z cells here if needed)."""
    compressed, _ = self.hyperprior.compress(self.pad_latent(y), self.rate_gains(rate))
    return {
        "y_string": compressed.y_strings[0],
        "z_string": compressed.z_strings[0],
        "image_shape": shape,
        "y_shape": tf.cast(compressed.y_shape, tf.int32),
        "z_shape": tf.cast(compressed.z_shape, tf.int32),
    }

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                tf.TensorSpec([], tf.float32)])
  def estimate_bits(self, image, rate):
    """The entropy models' estimate of the bits `compress` writes for `image`."""
    bits = self.hyperprior.estimate_bits(self.analyze(image), self.rate_gains(rate))
    return {"estimated_bits": bits[0]}

  @tf.function(input_signature=[
      tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int32),
      tf.TensorSpec([2], tf.int32), tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.float32)])
  def decompress(self, y_string, z_string, image_shape, y_shape, z_shape, rate):
    """Inverse of `compress`: strings, shapes and the rate they were coded at -> uint8
    [H, W, 3]."""
    y_hat = self.decompress_y(y_string, z_string, y_shape, z_shape, rate)
    return {"image": self.synthesize(y_hat, image_shape)}

  @tf.function(input_signature=[
      tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int32),
      tf.TensorSpec([2], tf.int32), tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.float32),
      tf.TensorSpec([], tf.float32)])
  def decompress_realism(self, y_string, z_string, image_shape, y_shape, z_shape, rate,
                         realism):
    """`decompress` at realism R in [0, 1] (a decoder with the knob, realism.py): the same
    file decodes at any R; `decompress` decodes at the config's default_realism."""
    y_hat = self.decompress_y(y_string, z_string, y_shape, z_shape, rate)
    return {"image": self.synthesize(y_hat, image_shape, realism)}

  def decompress_y(self, y_string, z_string, y_shape, z_shape, rate):
    """Range-decodes y_hat [1, h, w, C] (hyper-synthesis included) of strings coded at `rate`."""
    return self.hyperprior.decompress(y_string[None], z_string[None], y_shape, z_shape,
                                      self.rate_gains(rate))

  # --- Pieces of the contract, which the tiled codec (serving/codec.py) composes. ----------

  def encode(self, padded):
    """E on an already padded uint8 image (or a window of one) -> float32 y [1, h, w, C]."""
    x = tf.cast(padded, tf.float32)[None] / 255.
    return tf.cast(self.encoder(self._encoder_input(x)), tf.float32)

  def pad_latent(self, y):
    """y reflect-padded to whole z cells (a no-op unless images are padded to 16 only)."""
    if self.config.image_pad_multiple == PAD_MULTIPLE:
      return y
    return reflect_pad(y[0], geometry.SIDE_DOWNSAMPLING)[None]

  def pad_image(self, image):
    """uint8 [H, W, 3] reflect-padded to the config's image_pad_multiple (E's input)."""
    return reflect_pad(image, self.config.image_pad_multiple)

  def analyze(self, image):
    """uint8 [H, W, 3] -> float32 y [1, h, w, C] of the padded image, with y padded to whole
    z cells (what `compress` codes)."""
    return self.pad_latent(self.encode(self.pad_image(image)))

  def synthesize(self, y_hat, image_shape, realism=None):
    """y_hat [1, h, w, C] -> uint8 [H, W, 3], cropped back to the unpadded image_shape."""
    reconstruction = self.generate(y_hat, realism)[0]
    reconstruction = reconstruction[:image_shape[0], :image_shape[1], :]
    return tf.saturate_cast(tf.round(reconstruction * 255.), tf.uint8)
