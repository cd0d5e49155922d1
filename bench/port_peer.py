"""Times the PyTorch HiFiC port's own compress and decompress, for side-by-side ratios.

Runs inside the port's environment (its checkout and a Python with torch), never imports
hific_tf, and prints one JSON line. bench/codec_speed.py --peer_src DIR starts it in its own
process so that both codecs are measured on the same machine in the same run.

The model is the port's default HiFiC (hific_args: 220 latents, 9 residual blocks, the
paper's hific-lo architecture) with random weights: speed does not depend on the weights.
Its perceptual loss (LPIPS with torchvision's AlexNet, downloaded on first use) is a training
term that compress and decompress never call, so it is replaced by an empty module, and
torchvision by an empty package when it is missing; nothing on the coding path changes.

Usage (in the port's venv):
  python bench/port_peer.py --src PORT_CHECKOUT --width 768 --height 512 [--repeats 3]
"""

import argparse
import json
import logging
import sys
import time
import types


def _stub_training_loss():
  """Stands in for the port's LPIPS loss, and for torchvision when it is missing.

  Model.__init__ builds the LPIPS loss (torchvision's AlexNet, downloaded on first use, and
  an import of a function newer scikit-image no longer has); only the training losses call
  it. torchvision is imported by the port's data loaders, which coding never uses.
  """
  import torch
  try:
    import torchvision  # noqa: F401
  except Exception:  # pylint: disable=broad-except  (absent, or built for another torch)
    class Placeholder(types.ModuleType):
      """Any name is a placeholder class: the port subclasses torchvision's datasets and
      imports its helpers at module level, and calls none of them when coding."""
      def __getattr__(self, name):
        return type(name, (), {})
    stub = Placeholder("torchvision")
    stub.__path__ = []
    for name in ("models", "transforms", "datasets", "utils"):
      setattr(stub, name, Placeholder(f"torchvision.{name}"))
      sys.modules[f"torchvision.{name}"] = getattr(stub, name)
    sys.modules["torchvision"] = stub

  class NoPerceptualLoss(torch.nn.Module):
    def __init__(self, *args, **kwargs):
      super().__init__()

  loss = types.ModuleType("src.loss.perceptual_similarity.perceptual_loss")
  loss.PerceptualLoss = NoPerceptualLoss
  sys.modules[loss.__name__] = loss


def best_ms(function, repeats):
  """Best of `repeats` after one warm-up call (codec_speed.timed's rule; this file runs in the
  port's venv, where hific_tf and codec_speed cannot be imported)."""
  function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--src", required=True, help="A checkout of the PyTorch port.")
  parser.add_argument("--width", type=int, default=768)
  parser.add_argument("--height", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, help="torch threads (default: torch's).")
  args = parser.parse_args()
  sys.path.insert(0, args.src)
  import numpy as np
  import torch
  if args.threads:
    torch.set_num_threads(args.threads)
  _stub_training_loss()
  import src.loss.perceptual_similarity as similarity
  similarity.perceptual_loss = sys.modules["src.loss.perceptual_similarity.perceptual_loss"]
  from default_config import ModelModes, ModelTypes, hific_args
  from src.model import Model

  torch.manual_seed(0)
  model = Model(hific_args, logging.getLogger("port"), model_mode=ModelModes.EVALUATION,
                model_type=ModelTypes.COMPRESSION_GAN)
  model.eval()
  start = time.perf_counter()
  model.Hyperprior.hyperprior_entropy_model.build_tables()
  tables_s = time.perf_counter() - start
  rng = np.random.default_rng(0)
  image = torch.from_numpy(rng.random((1, 3, args.height, args.width), np.float32))
  with torch.no_grad():
    compressed = model.compress(image, silent=True)
    latents = model.Hyperprior.decompress_forward(compressed, device="cpu")
    compress_ms = best_ms(lambda: model.compress(image, silent=True), args.repeats)
    decompress_ms = best_ms(lambda: model.decompress(compressed), args.repeats)
    generator_ms = best_ms(lambda: model.Generator(latents), args.repeats)
  print(json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads(),
                        width=args.width, height=args.height, compress_ms=compress_ms,
                        decompress_ms=decompress_ms, generator_ms=generator_ms,
                        tables_s=tables_s)))


if __name__ == "__main__":
  main()
