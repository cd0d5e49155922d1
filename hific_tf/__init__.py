"""hific_tf: HiFiC (Mentzer et al., NeurIPS 2020) on TensorFlow 2 and tensorflow-compression.

`HiFiC` is imported lazily so that `import hific_tf.configs` does not load TensorFlow.
"""

from hific_tf import runtime  # noqa: F401  (chooses CPU kernels before TensorFlow loads)

__version__ = "0.1.0"


def __getattr__(name):
  if name == "HiFiC":
    from hific_tf.models.hific.model import HiFiC
    return HiFiC
  raise AttributeError(f"module 'hific_tf' has no attribute '{name}'")
