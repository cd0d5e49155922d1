"""Learning curves of a `hific train` run from its TensorBoard logs: a PNG and a Markdown table.

Reads MODEL_DIR/logs/train (the epoch-level scalars Keras writes at every checkpoint), so
the figures are the run's own, on its training crops.

Usage: python bin/plot_training.py --model_dir RUN --out docs/curve.png [--every 2]
"""

import argparse
import glob
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf
from tensorflow.core.util import event_pb2

from hific_tf import images as images_lib

COLUMNS = ("psnr", "lpips", "bpp_quantized", "target_bpp")


def read_epochs(model_dir):
  """{metric: [(step, value)]} of the epoch_* scalars, in step order."""
  series = {}
  for path in sorted(glob.glob(os.path.join(model_dir, "logs", "train", "events*"))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag.startswith("epoch_") and value.HasField("tensor"):
          series.setdefault(value.tag[6:], {})[event.step] = float(
              tf.make_ndarray(value.tensor))
  return {k: sorted(v.items()) for k, v in series.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--steps_per_epoch", type=int, default=250)
  parser.add_argument("--every", type=int, default=1, help="Table rows: every Nth epoch.")
  args = parser.parse_args()
  series = read_epochs(args.model_dir)
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  panels = [("psnr", "PSNR (dB)"), ("lpips", "LPIPS (alex)"),
            ("bpp_quantized", "bpp (rounded latents)")]
  if "d_real" in series:  # Stage 2: how well D tells real from decoded.
    panels.append(("d_real", "D(x), D(x') (sigmoid)"))
  figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
  for axis, (name, label) in zip(axes, panels):
    steps = [(epoch + 1) * args.steps_per_epoch for epoch, _ in series[name]]
    axis.plot(steps, [v for _, v in series[name]], "o-", markersize=3)
    if name == "bpp_quantized":
      axis.plot(steps, [v for _, v in series["target_bpp"]], "--", label="target")
      axis.legend()
    if name == "d_real":
      axis.plot(steps, [v for _, v in series["d_fake"]], "o-", markersize=3)
      axis.legend(["real", "decoded"])
    axis.set_xlabel("step")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
  figure.suptitle(f"training crops, mean over each {args.steps_per_epoch}-step epoch")
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=90)
  images_lib.write_atomic(args.out, buffer.getvalue(), force=True)
  print("| step | " + " | ".join(COLUMNS) + " |")
  print("|---" * (len(COLUMNS) + 1) + "|")
  for index, (epoch, _) in enumerate(series["psnr"]):
    if (index + 1) % args.every and index != len(series["psnr"]) - 1:
      continue
    values = [dict(series[c])[epoch] for c in COLUMNS]
    print(f"| {(epoch + 1) * args.steps_per_epoch} | " +
          " | ".join(f"{v:.3f}" if v < 1 else f"{v:.2f}" for v in values) + " |")


if __name__ == "__main__":
  main()
