"""Training recipes side by side per CPU-hour: held-out bpp, LPIPS and patch FID for each.

HiFiC's recipe (Mentzer et al., NeurIPS 2020) trains MSE + LPIPS first and adds the GAN
second; on a CPU, steps are scarce and a GAN step costs about twice an MSE + LPIPS step (D's
forward and backward, twice the images), so where the CPU-hours go decides what a codec
reaches. This trains every recipe from the same start point (a bundled codec, E, G,
hyperprior and D) on the same photos, each for the same budget of CPU time, then measures
each on the held-out photos against JPEG at the same size per photo
(hific_tf/evaluation/heldout.py: entropy-model bytes, LPIPS, patch FID).

The budget is CPU time of the training process (user + system, from /proc), not wall-clock
time, so recipes compare fairly on a machine whose cores something else also uses. A recipe is
data: phases of (config, share of the budget); each phase continues from the last one's
weights (`hific train --init_from`); a GAN phase after one without D starts a fresh D.

  python bench/recipes.py --train_glob data/photos/train --images data/photos/heldout \
      --cpu_hours 0.5 [--recipes gan,mselpips] [--start small-lo] [--out runs/recipes]

Prints one row per recipe and phase end (CPU-hours, steps, bpp, LPIPS, patch FID, JPEG's at
the same size) and writes them to OUT/recipes.jsonl; `--plot FILE.png` draws LPIPS and patch
FID against CPU-hours from that file (no training).
"""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

from hific_tf.models.sources import checkpoint_step as latest_step  # (no TensorFlow)

# name -> phases: (config, share of the CPU budget). Continued from --start.
RECIPES = {
    # Today's stage 2: the whole budget in the GAN stage.
    "gan": (("small-hific-lo", 1.0),),
    # No D: MSE + LPIPS only, cheaper steps (LPIPS comes from this stage in MS-ILLM's results).
    "mselpips": (("small-mselpips-lo-continue", 1.0),),
    # Most of the budget without D, then the GAN stage to restore realism.
    "mselpips-then-gan": (("small-mselpips-lo-continue", 0.7), ("small-hific-lo", 0.3)),
    # The decoder-only GAN stage (E, hyperprior, gains frozen; training/decoder_stage.py):
    # start from small-lo (the gain model). The conditional PatchGAN alone, with DiffAugment,
    # and with an EMA of G (the shipped recipe).
    "decoder-patchgan": (("small-decoder-gan-plain", 1.0),),
    "decoder-diffaugment": (("small-decoder-gan-diffaugment", 1.0),),
    "decoder": (("small-decoder-gan", 1.0),),
}


def cpu_seconds(pid):
  """User + system CPU seconds of a process and its threads (its children are waited for)."""
  try:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
  except OSError:
    return None
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_phase(config, model_dir, init_from, cpu_budget, args, log):
  """Trains until the process has used `cpu_budget` CPU seconds; returns (cpu s, steps)."""
  command = [sys.executable, "-m", "hific_tf.cli", "train", "--config", config,
             "--model_dir", str(model_dir), "--train_glob", args.train_glob,
             "--batch_size", str(args.batch_size), "--checkpoint_every",
             str(args.checkpoint_every), "--steps", "1000000", "--init_from", str(init_from)]
  model_dir.mkdir(parents=True, exist_ok=True)
  with open(model_dir / "train.log", "ab") as train_log:
    process = subprocess.Popen(command, cwd=REPO, stdout=train_log, stderr=subprocess.STDOUT)
  used = 0.
  try:
    while process.poll() is None:
      time.sleep(2)
      used = cpu_seconds(process.pid) or used
      if used >= cpu_budget:
        # Up to the next checkpoint: the CPU spent on it is in the figure, so nothing is hidden.
        goal = latest_step(model_dir) + 1
        while process.poll() is None and latest_step(model_dir) < goal:
          time.sleep(1)
          used = cpu_seconds(process.pid) or used
        process.terminate()
  finally:
    if process.poll() is None:
      process.kill()
    process.wait()
  steps = latest_step(model_dir)
  if steps == 0:
    raise SystemExit(f"recipes: {config} saved no checkpoint (see {model_dir / 'train.log'})")
  log(f"  {config}: {steps} steps in {used / 3600:.3f} CPU-hours")
  return used, steps


def measure(source, args):
  """Held-out means of a model_dir or bundled codec: hific_tf/evaluation/heldout.py's, with
  entropy-model bytes, against JPEG at the same size, with patch FIDs."""
  from hific_tf import images as images_lib
  from hific_tf.evaluation import heldout
  from hific_tf.models import sources
  report = heldout.measure(heldout.EntropyModelCoder(sources.build_model(str(source))),
                           images_lib.list_images(args.images), against="jpeg",
                           patch_fid=True, with_ms_ssim=False)
  return report.summary()


def row_text(recipe, cpu_hours, steps, result):
  return (f"{recipe:20s} {cpu_hours:6.3f} {steps:6d}  {result['bpp']:.4f}  "
          f"{result['lpips']:.4f}  {result['patch_fid']:6.1f}   {result['against_bpp']:.4f}  "
          f"{result['against_lpips']:.4f}  {result['against_patch_fid']:6.1f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--train_glob", default="data/photos/train")
  parser.add_argument("--images", default="data/photos/heldout")
  parser.add_argument("--cpu_hours", type=float, default=0.5, help="Budget of each recipe.")
  parser.add_argument("--recipes", default="gan,mselpips")
  parser.add_argument("--start", default="small-lo", help="Bundled codec all recipes start from.")
  parser.add_argument("--out", default="runs/recipes")
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--checkpoint_every", type=int, default=25)
  parser.add_argument("--plot", help="Only draw OUT/recipes.jsonl to this PNG.")
  args = parser.parse_args()
  if args.plot:
    return plot(REPO / args.out / "recipes.jsonl", args.plot)
  names = args.recipes.split(",")
  unknown = [name for name in names if name not in RECIPES]
  if unknown:
    parser.error(f"unknown recipes {unknown} (known: {', '.join(RECIPES)})")
  out = REPO / args.out
  out.mkdir(parents=True, exist_ok=True)
  rows = out / "recipes.jsonl"

  def log(line):
    print(line, flush=True)

  header = (f"{'recipe':20s} {'CPU-h':>6s} {'steps':>6s}  {'bpp':6s}  {'LPIPS':6s}  "
            f"{'pFID':>6s}   {'JPEG bpp':8s} {'LPIPS':6s}  {'pFID':>6s}")
  results = [("start", 0., 0, measure(args.start, args))]
  log(header)
  log(row_text("start " + args.start, 0., 0, results[0][3]))
  for name in names:
    source, cpu_total, steps_total = args.start, 0., 0
    for index, (config, share) in enumerate(RECIPES[name]):
      model_dir = out / name / f"phase{index}-{config}"
      used, steps = train_phase(config, model_dir, source, share * args.cpu_hours * 3600,
                                args, log)
      cpu_total, steps_total, source = cpu_total + used, steps_total + steps, model_dir
      result = measure(model_dir, args)
      results.append((name, cpu_total / 3600, steps_total, result))
      log(row_text(f"{name}/{index}", cpu_total / 3600, steps_total, result))
      with open(rows, "a", encoding="utf-8") as file:
        file.write(json.dumps(dict(result, recipe=name, phase=index, config=config,
                                   cpu_hours=cpu_total / 3600, steps=steps_total,
                                   start=args.start, images=args.images,
                                   **{f"start_{key}": results[0][3][key]
                                      for key in ("bpp", "lpips", "patch_fid")})) + "\n")
  log("\n" + header)
  for name, cpu_hours, steps, result in results:
    log(row_text(name, cpu_hours, steps, result))


def plot(rows_path, target):
  """LPIPS and patch FID against CPU-hours, one line per recipe from the shared start."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = [json.loads(line) for line in pathlib.Path(rows_path).read_text().splitlines()]
  figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for name in dict.fromkeys(row["recipe"] for row in rows):
    mine = [row for row in rows if row["recipe"] == name]
    for axis, key in zip(axes, ("lpips", "patch_fid")):
      label = f"{name} ({mine[-1]['steps']} steps, {mine[-1]['bpp']:.3f} bpp)"
      axis.plot([0] + [r["cpu_hours"] for r in mine],
                [mine[0].get(f"start_{key}", float("nan"))] + [r[key] for r in mine],
                "o-", label=label)
  for axis, title in zip(axes, ("held-out LPIPS", "held-out patch FID")):
    axis.set_xlabel("CPU-hours from the same start")
    axis.set_title(title)
    axis.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(target, dpi=110)
  print(f"recipes: plot written to {target}")


if __name__ == "__main__":
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
  main()
