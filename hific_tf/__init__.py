"""hific_tf: HiFiC (Mentzer et al., NeurIPS 2020) on TensorFlow 2 and tensorflow-compression.

  codec = hific_tf.load_codec("small-lo")     # or a codec folder, model_dir, .npz, SavedModel
  hific_file = codec.compress(image)            # uint8 [H, W, 3] -> .hific (to_bytes())
  pixels = codec.decompress(hific_file)

`load_codec`, `HiFiC` and `LPIPS` are imported lazily so that `import hific_tf.configs` does
not load TensorFlow.
"""

from hific_tf import runtime  # noqa: F401  (chooses CPU kernels before TensorFlow loads)

__version__ = "1.0.0"


def __getattr__(name):
  if name == "load_codec":
    from hific_tf.serving.resolve import load_codec
    return load_codec
  if name == "HiFiC":
    from hific_tf.models.hific.model import HiFiC
    return HiFiC
  if name == "LPIPS":
    from hific_tf.measure.lpips import LPIPS
    return LPIPS
  raise AttributeError(f"module 'hific_tf' has no attribute '{name}'")
