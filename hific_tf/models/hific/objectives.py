"""HiFiC's training objective, apart from the codec it trains.

Mentzer, Toderici, Tschannen, Agustsson, "High-Fidelity Generative Image Compression",
NeurIPS 2020 (arXiv 2006.09965), Sec. 3.2: the rate term weighted by lambda' (lambda_a while
the rate of the rounded latents is above the target, lambda_b below it, with a warm-up on
both), the distortion terms k_M MSE + k_P LPIPS, and the non-saturating GAN losses of a
conditional D. As CompressAI keeps its rate-distortion losses and optimizers apart from its
models, these are functions of a `Config`, a step and tensors: the Keras models
(model.HiFiC, training/decoder_stage.DecoderStage) only say which terms their stage uses.

Every schedule is a function of the transform optimizer's step, so a run restored from a
checkpoint continues exactly.
"""

import tensorflow as tf

from hific_tf.configs import Config


def learning_rate_schedule(config: Config, rate=None):
  """`rate` (default: the config's learning_rate), dropped by lr_drop_factor at lr_drop_step."""
  rate = config.learning_rate if rate is None else rate
  return tf.keras.optimizers.schedules.PiecewiseConstantDecay(
      [config.lr_drop_step], [rate, rate * config.lr_drop_factor])


def schedules(config: Config, step, crop_target=None):
  """(target bpp, warm-up factor on lambda, learning rate) at transform-optimizer `step`.

  `crop_target` replaces the config's crop target (a rate point's, in a gain-unit model).
  """
  warm = tf.cast(step, tf.int64) < config.warmup_steps
  crop_target = config.training_target_bpp if crop_target is None else crop_target
  target = crop_target * tf.where(warm, config.warmup_target_factor, 1.)
  lambda_factor = tf.where(warm, config.warmup_lambda_factor, 1.)
  return target, lambda_factor, learning_rate_schedule(config)(step)


def rate_weight(config: Config, bpp_quantized, target, lambda_factor=1.):
  """lambda': lambda_a while the rounded-latent rate exceeds the target, else lambda_b."""
  weight = tf.where(bpp_quantized > target, config.lambda_a, config.lambda_b)
  return tf.cast(weight, tf.float32) * lambda_factor


def global_mean(values):
  """Mean over the global batch, all-reduced across replicas when distributed: lambda'
  then switches on the batch's rate, not on each replica's share of it."""
  values = tf.cast(tf.reshape(values, [-1]), tf.float32)
  total = tf.reduce_sum(values)
  count = tf.cast(tf.size(values), tf.float32)
  context = tf.distribute.get_replica_context()
  if context is not None and context.num_replicas_in_sync > 1:
    total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, [total, count])
  return total / count


def pixel_mse(images, reconstructions):
  """Per-image MSE in 8-bit units, the scale the paper's k_M weighs: [B]."""
  return tf.reduce_mean(tf.math.squared_difference(images * 255., reconstructions * 255.),
                        axis=[1, 2, 3])


def per_image(logit_maps, function):
  """`function` of each of D's logits, averaged over positions and then over D's scales (a
  PatchGAN has one map, the projected D one per feature network layer): [B]."""
  if not isinstance(logit_maps, (list, tuple)):
    logit_maps = [logit_maps]
  return tf.add_n([tf.reduce_mean(function(logits), axis=[1, 2, 3])
                   for logits in logit_maps]) / len(logit_maps)


def discriminator_loss(real, fake):
  """-log D(x, y_hat) - log(1 - D(x', y_hat)) per image, from D's logits."""
  return (per_image(real, lambda logits: tf.nn.softplus(-logits)) +
          per_image(fake, tf.nn.softplus))


def generator_gan_loss(fake):
  """G's non-saturating term, -log D(x', y_hat), per image."""
  return per_image(fake, lambda logits: tf.nn.softplus(-logits))


def optimizers(config: Config, loss_scale=False):
  """(transform, entropy model, D or None) Adam optimizers, each on its learning-rate
  schedule (D at `discriminator_learning_rate` when the config gives one).

  `loss_scale`: dynamic loss scaling on all three (mixed_float16, where gradients under
  float16's 6e-8 would flush to zero inside E and G; bfloat16 has float32's range).
  """
  scaled = tf.keras.mixed_precision.LossScaleOptimizer if loss_scale else (lambda o: o)
  adam = lambda rate, name: scaled(tf.keras.optimizers.Adam(
      learning_rate_schedule(config, rate), name=name))
  return (adam(None, "transform_adam"), adam(config.entropy_learning_rate, "entropy_adam"),
          adam(config.discriminator_learning_rate, "discriminator_adam")
          if config.use_gan else None)


def scaled_loss(optimizer, loss):
  """The loss `optimizer` differentiates: multiplied by its loss scale when it has one."""
  if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
    return optimizer.get_scaled_loss(loss)
  return loss


def unscaled_gradients(optimizer, gradients):
  """Gradients of a `scaled_loss`, back at the loss's own scale."""
  if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
    return optimizer.get_unscaled_gradients(gradients)
  return gradients


def apply_gradients(optimizer, tape, loss, variables):
  """One update from `tape`; a loss-scaled optimizer unscales, and skips non-finite steps."""
  gradients = unscaled_gradients(optimizer, tape.gradient(loss, variables))
  optimizer.apply_gradients(zip(gradients, variables))
