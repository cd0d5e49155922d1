"""Gain units: one model that codes at any rate.

Cui, Wang, Gao, Bai, Yu, Fang, Ning, "Asymmetric Gained Deep Image Compression With Continuous
Rate Adaptation", CVPR 2021. y is multiplied by a per-channel gain before quantization and
divided by it after (hyperprior.py), so a larger gain means finer quantization and more bits.

The rate parameter r is a float. Its gain is 2^r in every channel, times, for a model trained
with `rate_points`, learned per-channel factors: one vector per trained point, stored as log
offsets that start at zero, so a model grown from a single-rate codec starts as that codec
with a uniform quantization step. Between points the log offsets are interpolated linearly,
which is the paper's exponential interpolation of the gains; beyond the end points the end
point's offsets are kept and only 2^r moves. A single-rate model (no points) therefore codes
at 2^r with no learned part, which already makes every bundled codec rate-adjustable.
"""

import math

import tensorflow as tf


def interpolation(rates, rate):
  """(lower point index, weight of the upper point) of `rate` among the sorted `rates`."""
  if len(rates) == 1:
    return tf.constant(0), tf.constant(0.)
  table = tf.constant(rates, tf.float32)
  rate = tf.clip_by_value(tf.cast(rate, tf.float32), table[0], table[-1])
  upper = tf.clip_by_value(tf.searchsorted(table, rate[None], side="right")[0], 1,
                           len(rates) - 1)
  lower = upper - 1
  return lower, (rate - table[lower]) / (table[upper] - table[lower])


class RateGains(tf.keras.layers.Layer):
  """The per-channel log gain of y at a rate: 2^r times the learned factors of the points."""

  def __init__(self, rate_points, channels, name="rate_gains", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.rates = tuple(float(point[0]) for point in rate_points)
    self.channels = channels
    self.offsets = (self.add_weight("log_gain_offsets", [len(self.rates), channels],
                                    initializer="zeros") if self.rates else None)

  def call(self, rate):
    """rate: a float scalar -> log gain [channels] (float32)."""
    rate = tf.cast(rate, tf.float32)
    uniform = rate * math.log(2.) * tf.ones([self.channels])
    if self.offsets is None:
      return uniform
    lower, weight = interpolation(self.rates, rate)
    upper = tf.minimum(lower + 1, len(self.rates) - 1)
    offsets = (1. - weight) * self.offsets[lower] + weight * self.offsets[upper]
    return uniform + offsets
