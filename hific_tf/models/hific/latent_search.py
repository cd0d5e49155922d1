"""Encoder effort: better latents for one image, found at encode time, for any decoder.

An encoder E is amortised: one pass maps every image to its latents, and an undertrained E
(thousands of CPU steps here, two million GPU steps in the paper) leaves a gap between the
latents it finds and the best ones the decoder could use. Yang, Bamler and Mandt (NeurIPS 2020,
"Improving Inference for Neural Image Compression") close much of it by optimising each image's
latents against the codec's own objective through the frozen decoder and entropy model; the
decoder never changes, so every file stays an ordinary file.

Here y is optimised with Adam, starting from E's latents, on the objective HiFiC trains
(Mentzer et al., NeurIPS 2020): lambda' r + k_M MSE + k_P LPIPS, with y rounded as the coder
rounds it in the forward pass and a straight-through gradient (the simpler schedule Yang et al.
compare stochastic Gumbel annealing against). z is derived from y by the hyper-analysis, as the
coder derives it. The model's own lambda_a lets the rate drift up (a bit more rate buys more
than it costs under the trained weights), so lambda' acts as a multiplier on the constraint
"no more bits than E's latents": it grows by half while the rate is over and shrinks back
towards lambda_b while under, and the search spends its effort on distortion at that rate. Every iterate is measured exactly (hard rounding, the entropy models' bits), and the one
kept is the least distortion among those within the bit budget: never worse than effort 0
on either count.

The budget is E's latents' bits less BITS_MARGIN: the entropy models' bits are an estimate,
and an iterate can cost the range coder a few bytes more than it estimates where E's latents
did not (a searched small-lo file of a 256x320 crop: 0.6% under E's estimate, 0.6% over its
bytes). The caller codes both and keeps the smaller file (serving/codec.py).
"""

import time

import numpy as np
import tensorflow as tf

from hific_tf.errors import HificError

# --effort N -> Adam iterations on y (0: E's latents as they are).
ITERATIONS = (0, 10, 25, 50, 100)
RATE_WEIGHT_UP, RATE_WEIGHT_DOWN = 2.0, 0.8
LEARNING_RATE = 0.005  # Adam on y: 0.01 and above overshoot within 20 steps (small-lo).
BITS_MARGIN = 0.015


class EffortError(HificError):
  """The search could not finish (deadline); the message is one line."""


def iterations_for(effort):
  """Adam iterations of effort level `effort` (0 .. len(ITERATIONS) - 1)."""
  from hific_tf.errors import UsageError
  if isinstance(effort, bool) or not isinstance(effort, (int, np.integer)) or not (
      0 <= effort < len(ITERATIONS)):
    raise UsageError(f"--effort must be an integer from 0 to {len(ITERATIONS) - 1}, "
                     f"got {effort!r}")
  return ITERATIONS[int(effort)]


class LatentSearch:
  """Searches y for images coded by one HiFiC model (its E, G and hyperprior, frozen).

  Attributes:
    model: a built HiFiC (float32) with its codec weights.
    lpips: the LPIPS network of the model's config (the objective's perceptual term).
  """

  def __init__(self, model, lpips):
    self.model = model
    self.lpips = lpips
    self._step = tf.function(self._terms)

  def _terms(self, image, y, z_offset, log_gain, realism):
    """(exact bits, exact distortion) of y, forward exactly as the coder codes it at the
    gain `log_gain` (the rate's, HiFiC.log_gain) and decodes it at `realism`."""
    model, config = self.model, self.model.config
    out = model.hyperprior(y, training=False, z_offset=z_offset, log_gain=log_gain)
    bits = out.y_bits_quantized[0] + out.z_bits_quantized[0]
    reconstruction = model.generate(out.y_hat, realism)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    reconstruction = reconstruction[:, :height, :width, :]
    x = tf.cast(image, tf.float32)[None] / 255.
    mse = tf.reduce_mean(tf.math.squared_difference(x * 255., reconstruction * 255.))
    lpips = self.lpips(reconstruction, x)[0]
    distortion = config.k_mse * mse + config.k_lpips * lpips
    return bits, distortion

  def search(self, image, iterations, deadline=None, progress=None, rate=0., realism=None):
    """y [1, h, w, C] for uint8 `image` after `iterations` steps (E's y when 0).

    Args:
      image: uint8 [H, W, 3].
      iterations: Adam steps.
      rate: the rate the file is coded at: bits and distortion are those of that rate's
        quantizer, so "no more bits than E's latents" holds for the file written.
      realism: the decoder's R the distortion is measured at (default: the codec's).
      deadline: time.monotonic() value past which the search stops with EffortError.
      progress: called with (iteration, iterations) after each step.

    Returns:
      (y, report): report holds bits and distortion at the start and of the y returned.
    """
    model, config = self.model, self.model.config
    image = tf.constant(image, tf.uint8)
    y_start = model.analyze(image)
    z_offset = model.hyperprior.side_quantization_offset()
    log_gain = model.log_gain(tf.constant(float(rate), tf.float32))
    realism = tf.constant(model.config.default_realism if realism is None else realism,
                          tf.float32)
    terms = lambda y: self._step(image, y, z_offset, log_gain, realism)
    pixels = float(image.shape[0] * image.shape[1])
    variable = tf.Variable(y_start)
    optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
    bits, distortion = terms(variable)
    start = (float(bits), float(distortion))
    budget = start[0] * (1. - BITS_MARGIN)
    best = (start[1], y_start)
    weight = config.lambda_a

    for iteration in range(iterations):
      if deadline is not None and time.monotonic() > deadline:
        raise EffortError(f"--effort stopped at iteration {iteration} of {iterations}: "
                          "over its time budget (nothing was written)")
      with tf.GradientTape() as tape:
        bits, distortion = terms(variable)
        loss = weight * bits / pixels + distortion
      # Measured before this step's update: the iterate these figures belong to.
      if float(bits) <= budget and float(distortion) < best[0]:
        best = (float(distortion), tf.identity(variable))
      # The rate's weight as a multiplier on the constraint "no more bits than E's latents":
      # up while over it, back down towards lambda_b while under.
      weight = (weight * RATE_WEIGHT_UP if float(bits) > budget else
                max(config.lambda_b, weight * RATE_WEIGHT_DOWN))
      gradient = tape.gradient(loss, variable)
      optimizer.apply_gradients([(gradient, variable)])
      if progress is not None:
        progress(iteration + 1, iterations)
    if iterations:
      bits, distortion = terms(variable)
      if float(bits) <= budget and float(distortion) < best[0]:
        best = (float(distortion), tf.identity(variable))
    y = best[1]
    final_bits, final_distortion = terms(y)
    report = {"iterations": iterations, "start_bits": start[0], "start_distortion": start[1],
              "bits": float(final_bits), "distortion": float(final_distortion)}
    return tf.convert_to_tensor(y), report
