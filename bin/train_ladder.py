"""Spends the machine's idle cores on the bundled codecs: trains the rung that gains most.

  python bin/train_ladder.py start      # in the background (log: runs/ladder/ladder.log)
  python bin/train_ladder.py status     # which rung, its step, the held-out curve so far
  python bin/train_ladder.py stop       # stops after nothing is lost (the last checkpoint)
  python bin/train_ladder.py pause      # holds the trainer (SIGSTOP) until `resume`: benchmarks
  python bin/train_ladder.py run [--rung small-lo] [--slice_steps 500]   # in the foreground

Each rung trains in its own model_dir (runs/ladder/NAME) with `hific train`, which resumes
from its BackupAndRestore state, so a stop (or a killed machine) costs at most the steps since
the last checkpoint (`--checkpoint_every`, 50 steps). The ladder trains one rung for
`--slice_steps`, measures it on the held-out photos against JPEG at the same per-photo size
(hific_tf/evaluation/heldout.py, entropy-model bytes; appended to
runs/ladder/NAME/heldout.jsonl: the curve of held-out LPIPS, patch FID and bpp against
steps), then picks the next rung (bin/ladder.py says how). Tests and benchmarks come first:
TensorFlow's thread pools do not yield to a lower nice value (a benchmark step ran 1.7x
slower beside a nice-19 trainer), so the ladder stops its trainer (SIGSTOP) while other work
keeps more than --yield_cores busy (default 1.5 cores: a test suite or a benchmark using two)
and continues it (SIGCONT) when that falls under half of it; `pause` holds it for a clean measurement.

Shipping a rung stays a decision. The run's own checkpoints roll on (the last three), so the
check that beats every earlier one (lower LPIPS at a rate at most 5% higher: ladder.is_best)
is copied to runs/ladder/NAME/best, a model_dir with that one checkpoint, and the check furthest
ahead of JPEG on patch FID to runs/ladder/NAME/best_realism; when one is better than the shipped
version at the same rate (a rung must beat JPEG on both to ship),
`bin/bundle_codec.py --model_dir runs/ladder/NAME/best --name NAME` writes it in place.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys
import time

from hific_tf.models import sources
import ladder  # bin/ladder.py, beside this script

REPO = pathlib.Path(__file__).resolve().parents[1]

RUNS = REPO / "runs" / "ladder"
CHECKPOINTS = REPO / "checkpoints"  # Committed resume points of rungs still in training.
PID_FILE = RUNS / "ladder.pid"
LOG_FILE = RUNS / "ladder.log"
PAUSE_FILE = RUNS / "PAUSE"  # While it exists the trainer is stopped (for clean benchmarks).


def log(message):
  print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def train_command(rung_state, args):
  command = [sys.executable, "-m", "hific_tf.cli", "train", "--config", rung_state.rung.config,
             "--model_dir", str(rung_state.model_dir), "--train_glob", args.train_glob,
             "--checkpoint_every", str(args.checkpoint_every), "--steps", str(args.max_steps)]
  if args.batch_size:
    command += ["--batch_size", str(args.batch_size)]
  if args.precision:
    command += ["--precision", args.precision]
  if rung_state.run_steps == 0 and not (rung_state.model_dir / "backup").is_dir():
    command += ["--init_from", rung_state.start_from]
  return command


POLL_SECONDS = 3


class CpuMeter:
  """Cores used by everything but one process (and its threads) since the last call.

  /proc/stat counts the whole machine's busy time, /proc/PID/stat the trainer's, both in
  clock ticks; the difference is what tests, benchmarks and editors are using.
  """

  def __init__(self, pid):
    self.pid = pid
    self.ticks = os.sysconf("SC_CLK_TCK")
    self.last = self._read()

  def _read(self):
    with open("/proc/stat", encoding="ascii") as stat:
      fields = [int(v) for v in stat.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # All but idle and iowait.
    try:
      with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
        own = stat.read().rsplit(")", 1)[1].split()
      mine = int(own[11]) + int(own[12])  # utime, stime (all threads).
    except (OSError, IndexError):
      mine = 0
    return time.monotonic(), busy, mine

  def others_cores(self):
    now = self._read()
    (t0, busy0, mine0), (t1, busy1, mine1) = self.last, now
    self.last = now
    seconds = max(t1 - t0, 1e-3)
    return max(0., (busy1 - busy0) - (mine1 - mine0)) / self.ticks / seconds


def train_slice(rung_state, args):
  """Trains until `slice_steps` more steps are checkpointed, then stops the trainer.

  The trainer is stopped right after a checkpoint (SIGTERM: Keras never reaches
  on_train_end, so the BackupAndRestore state stays for the next resume).
  """
  ladder.record_origin(rung_state)
  start = sources.checkpoint_step(rung_state.model_dir)
  goal = start + args.slice_steps
  log(f"{rung_state.rung.name}: training from run step {start} to {goal} "
      f"({rung_state.total_steps} steps behind it)")
  with open(rung_state.model_dir / "train.log", "ab") as train_log:
    process = subprocess.Popen(train_command(rung_state, args), cwd=REPO, stdout=train_log,
                               stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(19))
  meter = CpuMeter(process.pid)
  paused = False
  calm = 0
  try:
    while process.poll() is None:
      if sources.checkpoint_step(rung_state.model_dir) >= goal:
        if paused:
          process.send_signal(signal.SIGCONT)
        process.terminate()
        break
      time.sleep(POLL_SECONDS)
      others = meter.others_cores()
      held = PAUSE_FILE.exists()
      if args.yield_cores is None and not held and not paused:
        continue
      if not paused and (held or others > args.yield_cores):
        process.send_signal(signal.SIGSTOP)
        paused, calm = True, 0
        log("paused: " + ("`train_ladder.py pause`" if held else
                          f"other work uses {others:.1f} cores"))
      elif paused:
        calm = calm + 1 if not held and (args.yield_cores is None or
                                         others < args.yield_cores / 2) else 0
        if calm >= 3:
          process.send_signal(signal.SIGCONT)
          paused = False
          log("resumed: the cores are idle")
    code = process.wait()
  except BaseException:
    process.send_signal(signal.SIGCONT)
    process.terminate()
    process.wait()
    raise
  reached = sources.checkpoint_step(rung_state.model_dir)
  if reached < goal and code not in (0, -signal.SIGTERM):
    raise RuntimeError(f"hific train exited with {code} at step {reached} "
                       f"(see {rung_state.model_dir / 'train.log'})")
  return reached


def heldout_check(model_dir, photos):
  """The held-out measurement of a run's latest checkpoint against JPEG at the same size,
  with patch FIDs: entropy-model bytes (no export), in a child process at the lowest
  priority (TensorFlow loads there, not in the ladder)."""
  from hific_tf import images as images_lib
  from hific_tf.evaluation import heldout
  checkpoint = str(sources.latest_checkpoint(model_dir))  # What keep_best copies aside.
  model = sources.build_model(model_dir)
  rates = [point[0] for point in model.config.rate_points] or [None]
  rows = [heldout.measure(heldout.EntropyModelCoder(model, rate), images_lib.list_images(photos),
                          against="jpeg", patch_fid=True, with_ms_ssim=False).summary()
          for rate in rates]
  return dict(ladder.across_rates(rows, rates), source=checkpoint)


def measure(rung_state, args):
  """Held-out rate, LPIPS and patch FID against JPEG at the same size, appended to
  heldout.jsonl."""
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=os.nice,
                                              initargs=(19,)) as pool:
    try:
      row = pool.submit(heldout_check, str(rung_state.model_dir), args.heldout).result()
    except Exception as error:  # The ladder logs it and trains on.  # noqa: BLE001
      log(f"held-out measure failed: {error.__class__.__name__}: {error}")
      return None
  row.update(step=sources.checkpoint_step(rung_state.model_dir), base_steps=rung_state.base_steps,
             time=time.strftime("%Y-%m-%dT%H:%M:%S"))
  earlier = ladder.checks(rung_state.model_dir)
  with open(rung_state.model_dir / ladder.CHECKS, "a", encoding="utf-8") as out:
    out.write(json.dumps(row) + "\n")
  best = ladder.is_best(row, earlier)
  if best:
    ladder.keep_best(rung_state.model_dir, row)
  best_realism = ladder.is_best_realism(row, earlier)
  if best_realism:
    ladder.keep_best(rung_state.model_dir, row, ladder.BEST_REALISM)
  for point in row.get("rates", []):
    log(f"{rung_state.rung.name} at rate {point['rate']:g}: held-out {point['bpp']:.4f} bpp, "
        f"LPIPS {point['lpips']:.4f}; JPEG at that size {point['against_bpp']:.4f} bpp, "
        f"LPIPS {point['against_lpips']:.4f}" + _patch_fids(point))
  log(f"{rung_state.rung.name} at run step {row['step']}: held-out {row['bpp']:.4f} bpp, "
      f"LPIPS {row['lpips']:.4f}; JPEG at that size {row['against_bpp']:.4f} bpp, "
      f"LPIPS {row['against_lpips']:.4f}" + _patch_fids(row)
      + (f"; the run's best so far, kept in {ladder.BEST}/" if best else "")
      + (f"; its best patch FID against JPEG's so far, kept in {ladder.BEST_REALISM}/"
         if best_realism else ""))
  return row


def _patch_fids(row):
  """'; patch FID ... ' for a check that measured it (checks before it did not)."""
  if "patch_fid" not in row:
    return ""
  return f"; patch FID {row['patch_fid']:.0f} against JPEG's {row['against_patch_fid']:.0f}"


def _interrupt(*_):
  raise KeyboardInterrupt


def run(args):
  RUNS.mkdir(parents=True, exist_ok=True)
  only = args.rung.split(",") if args.rung else None
  signal.signal(signal.SIGTERM, _interrupt)
  try:
    while True:
      rung_state = ladder.next_rung(RUNS, only, CHECKPOINTS)
      train_slice(rung_state, args)
      measure(ladder.state(rung_state.rung, RUNS, CHECKPOINTS), args)
  except KeyboardInterrupt:
    log("stopped")


def running_pid():
  try:
    pid = int(PID_FILE.read_text())
    os.kill(pid, 0)
    return pid
  except (OSError, ValueError):
    return None


def start(args, argv):
  if running_pid():
    print(f"train_ladder: already running (pid {running_pid()}, log {LOG_FILE})")
    return 0
  RUNS.mkdir(parents=True, exist_ok=True)
  with open(LOG_FILE, "ab") as out:
    process = subprocess.Popen([sys.executable, __file__, "run", *argv], cwd=REPO,
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
  PID_FILE.write_text(f"{process.pid}\n")
  print(f"train_ladder: started (pid {process.pid}); log {LOG_FILE}")
  if PAUSE_FILE.exists():
    print("train_ladder: held by an earlier `pause`: it trains after `train_ladder.py resume`")
  return 0


def stop():
  pid = running_pid()
  if not pid:
    print("train_ladder: not running")
    return 0
  os.kill(pid, signal.SIGTERM)
  for _ in range(120):
    if not running_pid():
      break
    time.sleep(1)
  PID_FILE.unlink(missing_ok=True)
  print("train_ladder: stopped (runs resume from their last checkpoint)")
  return 0


def status():
  pid = running_pid()
  held = " (held by `pause`: `train_ladder.py resume` continues)" if PAUSE_FILE.exists() else ""
  print(f"train_ladder: {'running, pid ' + str(pid) if pid else 'not running'}{held}")
  for rung in ladder.LADDER:
    s = ladder.state(rung, RUNS, CHECKPOINTS)
    shipped = "not shipped" if s.bundled_steps is None else f"shipped at {s.bundled_steps}"
    print(f"  {rung.name:9s} {shipped:18s} run step {s.run_steps:6d} (from {s.start_from}, "
          f"{s.total_steps} steps behind it)")
    for row in ladder.checks(s.model_dir)[-5:]:
      print(f"    step {row['step']:6d}: {row['bpp']:.4f} bpp LPIPS {row['lpips']:.4f} | JPEG "
            f"{row['against_bpp']:.4f} bpp LPIPS {row['against_lpips']:.4f}" + _patch_fids(row))
    kept = [f"{folder}/ step {sources.checkpoint_step(s.model_dir / folder)}"
            for folder in (ladder.BEST, ladder.BEST_REALISM) if (s.model_dir / folder).is_dir()]
    if kept:
      print(f"    kept: {', '.join(kept)}")
  print(f"next: {ladder.next_rung(RUNS, None, CHECKPOINTS).rung.name}")
  return 0


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("action", choices=["start", "run", "status", "stop", "pause", "resume"])
  parser.add_argument("--rung", help="Only these rungs (comma-separated).")
  parser.add_argument("--slice_steps", type=int, default=500,
                      help="Steps of one rung before measuring and choosing again.")
  parser.add_argument("--train_glob", default="data/photos/train")
  parser.add_argument("--heldout", default="tests/data/heldout",
                      help="The photos each slice is checked on (hific_tf/evaluation/heldout.py).")
  parser.add_argument("--batch_size", type=int,
                      help="Global batch of every rung (default: each rung's config's).")
  parser.add_argument("--checkpoint_every", type=int, default=50)
  parser.add_argument("--max_steps", type=int, default=100000,
                      help="--steps of each run (a run stops at it for good).")
  parser.add_argument("--precision", help="--precision of hific train (default: its own).")
  parser.add_argument("--yield_cores", type=float, default=1.5,
                      help="Pause training while other work uses more than this many cores, "
                      "resume when it uses under half of it; negative: never pause.")
  args = parser.parse_args(argv)
  if args.yield_cores is not None and args.yield_cores < 0:
    args.yield_cores = None
  if args.action == "start":
    if not pathlib.Path(REPO / args.train_glob).exists() and not list(
        REPO.glob(args.train_glob)):
      print(f"train_ladder: no training photos at {args.train_glob} (run `make data`)")
      return 1
    return start(args, argv[1:])
  if args.action == "stop":
    return stop()
  if args.action in ("pause", "resume"):
    if args.action == "pause":
      RUNS.mkdir(parents=True, exist_ok=True)
      PAUSE_FILE.touch()
    else:
      PAUSE_FILE.unlink(missing_ok=True)
    print(f"train_ladder: {args.action}d (takes effect within {2 * POLL_SECONDS} s)")
    return 0
  if args.action == "status":
    return status()
  return run(args)


if __name__ == "__main__":
  sys.exit(main())
