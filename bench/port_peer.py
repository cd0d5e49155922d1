"""Times the PyTorch HiFiC port's own compress and decompress, for side-by-side ratios.

Runs inside the port's environment (its checkout and a Python with torch), never imports
hific_tf, and prints one JSON line. bench/codec_speed.py --peer_src DIR starts it in its own
process so that both codecs are measured on the same machine in the same run.

The model is the port's default HiFiC (hific_args: 220 latents, 9 residual blocks, the
paper's hific-lo architecture) with random weights: speed does not depend on the weights.
Its perceptual loss (LPIPS with torchvision's AlexNet, downloaded on first use) is a training
term that compress and decompress never call, so it is replaced by an empty module, and
torchvision by an empty package when it is missing; nothing on the coding path changes.

With --train it times instead one training step of the port's own loop (train.py): a generator
step on a batch (rate, distortion, LPIPS and the generator's GAN term, backward, both Adam
optimizers) and a discriminator step on another batch, as HiFiC alternates them with
discriminator_steps = 1. That is the step hific_tf's stage-2 train_step takes on batch + batch
crops, so bench/train_speed.py --peer_src compares the two side by side. Here the port's LPIPS
is its real one (its own learned linear weights from the checkout's
src/loss/perceptual_similarity/weights) over an AlexNet of torchvision's shape with random
weights: torchvision's pretrained AlexNet is a download, and its values do not change the
time.

Usage (in the port's venv, with its checkout importable; `run` below sets PYTHONPATH so):
  PYTHONPATH=PORT_CHECKOUT python bench/port_peer.py --src PORT_CHECKOUT --width 768 --height 512
  PYTHONPATH=PORT_CHECKOUT python bench/port_peer.py --src PORT_CHECKOUT --train [--batch 2]
"""

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import types


def run(src, python, *flags):
  """Runs this file in the port's venv (`python`; default: this Python) from its checkout
  `src`, for the benchmarks beside it: (its JSON line, None), or (None, why it failed)."""
  path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
  done = subprocess.run([python or sys.executable, __file__, "--src", src, *map(str, flags)],
                        capture_output=True, text=True, cwd=src, check=False,
                        env=dict(os.environ, PYTHONPATH=path))
  if done.returncode:
    return None, (done.stderr.strip().splitlines() or ["?"])[-1][:100]
  return json.loads(done.stdout.strip().splitlines()[-1]), None


def _stub_torchvision(alexnet=None):
  """Stands in for torchvision when it is missing: the port imports it at module level (its
  data loaders subclass its datasets, its LPIPS takes AlexNet from it) and coding calls none
  of it. `alexnet`, when given, is what `torchvision.models.alexnet` returns."""
  try:
    import torchvision  # noqa: F401
    return
  except Exception:  # pylint: disable=broad-except  (absent, or built for another torch)
    pass

  class Placeholder(types.ModuleType):
    """Any name is a placeholder class: the port subclasses torchvision's datasets and
    imports its helpers at module level. Dunder names stay missing (inspect reads __file__)."""
    def __getattr__(self, name):
      if name.startswith("__"):
        raise AttributeError(name)
      return type(name, (), {})
  stub = Placeholder("torchvision")
  stub.__path__ = []
  for name in ("models", "transforms", "datasets", "utils"):
    setattr(stub, name, Placeholder(f"torchvision.{name}"))
    sys.modules[f"torchvision.{name}"] = getattr(stub, name)
  if alexnet:
    stub.models.alexnet = alexnet
  sys.modules["torchvision"] = stub


def _stub_training_loss():
  """Stands in for the port's LPIPS loss, which only the training losses call.

  Model.__init__ builds it (torchvision's AlexNet, downloaded on first use, and an import of
  a function newer scikit-image no longer has).
  """
  import torch
  _stub_torchvision()

  class NoPerceptualLoss(torch.nn.Module):
    def __init__(self, *args, **kwargs):
      super().__init__()

  loss = types.ModuleType("src.loss.perceptual_similarity.perceptual_loss")
  loss.PerceptualLoss = NoPerceptualLoss
  sys.modules[loss.__name__] = loss


def _random_alexnet(pretrained=False, **unused):
  """torchvision's AlexNet feature layers (torchvision/models/alexnet.py), random weights."""
  del pretrained, unused
  from torch import nn
  model = nn.Module()
  model.features = nn.Sequential(
      nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
      nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
      nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
  return model


def _real_training_loss():
  """The port's own LPIPS, offline: AlexNet of torchvision's shape with random weights (the
  pretrained one is a download) under the port's learned linear weights."""
  import skimage.measure
  if not hasattr(skimage.measure, "compare_ssim"):  # Imported by the port, never called.
    skimage.measure.compare_ssim = None
  _stub_torchvision(alexnet=_random_alexnet)
  import src.loss.perceptual_similarity.pretrained_networks as networks
  networks.tv = types.SimpleNamespace(alexnet=_random_alexnet)  # Never the download.


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
  parser.add_argument("--train", action="store_true",
                      help="Time one generator + discriminator training step instead.")
  parser.add_argument("--batch", type=int, default=2, help="Crops per step of each network.")
  parser.add_argument("--crop", type=int, default=256)
  args = parser.parse_args()
  if importlib.util.find_spec("default_config") is None:
    parser.error(f"the port is not importable: run with PYTHONPATH={args.src}")
  import torch
  if args.threads:
    torch.set_num_threads(args.threads)
  if args.train:
    train_step(args)
  else:
    coding(args)


def train_step(args):
  """ms per step of the port's train.py loop: one G step, then one D step on other crops."""
  from collections import defaultdict
  import itertools

  import torch
  _real_training_loss()
  from default_config import ModelModes, ModelTypes, hific_args
  from src.model import Model

  torch.manual_seed(0)
  hific_args.batch_size = args.batch
  hific_args.crop_size = args.crop
  model = Model(hific_args, logging.getLogger("port"), defaultdict(list), defaultdict(list),
                model_mode=ModelModes.TRAINING, model_type=ModelTypes.COMPRESSION_GAN)
  model.train()
  amortization = torch.optim.Adam(
      itertools.chain.from_iterable(m.parameters() for m in model.amortization_models),
      lr=hific_args.learning_rate)
  hyperlatent = torch.optim.Adam(model.Hyperprior.hyperlatent_likelihood.parameters(),
                                 lr=hific_args.learning_rate)
  discriminator = torch.optim.Adam(model.Discriminator.parameters(),
                                   lr=hific_args.learning_rate)
  generator_crops, discriminator_crops = torch.rand(2, args.batch, 3, args.crop, args.crop)

  def step():
    # train.py: optimize_compression_loss, then optimize_loss on D's loss (distinct batches).
    losses = model(generator_crops, train_generator=True)
    losses["compression"].backward()
    amortization.step()
    hyperlatent.step()
    amortization.zero_grad()
    hyperlatent.zero_grad()
    losses = model(discriminator_crops, train_generator=False)
    losses["disc"].backward()
    discriminator.step()
    discriminator.zero_grad()
    return float(losses["disc"].detach())

  start = time.perf_counter()
  step()
  first_s = time.perf_counter() - start
  step_ms = best_ms(step, args.repeats)
  print(json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads(),
                        batch=args.batch, crop=args.crop, first_step_s=first_s,
                        train_step_ms=step_ms)))


def coding(args):
  """Best ms of the port's compress, decompress and generator on one random image."""
  import numpy as np
  import torch
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
