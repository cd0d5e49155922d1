"""The ladder of bundled codecs and which rung to train next.

The bundled codecs are small HiFiC models (Mentzer et al., NeurIPS 2020) trained on CPUs for
thousands of steps where the paper trains two million, so every idle core-hour spent on them
shows in their rate-distortion-realism figures. A ladder run keeps one model_dir per rung
(`runs/ladder/NAME`) that `hific train` resumes from its BackupAndRestore state, and trains
the rung that gains most from the next steps.

Which rung gains most: held-out LPIPS has fallen roughly linearly in log(steps) in every run
so far (docs/MODELS.md), so the gain of one more step is about 1/steps: the rung with the
fewest stage-1 + stage-2 steps behind it goes next. A rung that has never trained counts as
none (a missing rate is the largest loss a user sees); once it has trained, the steps of the
rung it grew from count too, so a rung that is not shipped yet cannot starve the others.

Nothing here imports TensorFlow: the ladder's driver (bin/train_ladder.py) only reads the
model_dirs' checkpoint indexes and starts `hific train` processes.
"""

import dataclasses
import json
import pathlib
import shutil

from hific_tf.errors import UsageError
from hific_tf.models import sources, zoo


@dataclasses.dataclass(frozen=True)
class Rung:
  """A bundled codec that keeps learning.

  Attributes:
    name: the bundled codec's name (`hific models`).
    config: the stage-2 config it trains with (configs/NAME.json).
    grow_from: where its first run starts when no run exists yet: a bundled rung (its weights
      and D) or a weights .npz.
  """
  name: str
  config: str
  grow_from: str


# small-lo is the one model that codes at every rate (small-mi and small-hi are its presets
# since 1.0.0), its bitstream (E, hyperprior, gains) frozen since v10: it trains in the decoder
# stage (configs/small-decoder-gan.json, the projected D and the realism knob), which keeps
# every file it wrote readable and is where D pays (docs/MODELS.md, "The decoder stage"). The
# machinery below still ranks several rungs: a second model (a wider G, say) is one more line.
LADDER = (
    Rung("small-lo", "small-decoder-gan", "small-lo"),
)


def by_name(name):
  for rung in LADDER:
    if rung.name == name:
      return rung
  raise UsageError(f"no rung '{name}' (the ladder: {', '.join(r.name for r in LADDER)})")


# A check counts as better only at a rate at most this much above the best check's.
RATE_TOLERANCE = 0.05
ORIGIN = "ladder.json"  # Where a run started: {"grow_from", "base_steps"}.
CHECKS = "heldout.jsonl"  # The run's held-out checks, one JSON row each, in order.
BEST = "best"  # runs/ladder/NAME/best: a model_dir holding the best check's checkpoint.
# runs/ladder/NAME/best_realism: the check furthest ahead of JPEG on patch FID.
BEST_REALISM = "best_realism"


def across_rates(rows, rates):
  """One check of a model that codes at several rates: the means over its rate points of
  every figure (what is_best compares), with each point's row under "rates". A single-rate
  model's check (rates [None]) is its one row."""
  if len(rows) == 1:
    return rows[0]
  numbers = [key for key, value in rows[0].items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)]
  check = dict(rows[0], **{key: sum(row[key] for row in rows) / len(rows) for key in numbers})
  check["rates"] = [dict(row, rate=rate) for row, rate in zip(rows, rates)]
  return check


def checks(model_dir):
  """A run's held-out checks (heldout.Report summaries plus step), oldest first."""
  path = pathlib.Path(model_dir) / CHECKS
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _at_rate(check, best):
  """A rate at most RATE_TOLERANCE above `best`'s (a lower rate counts for it)."""
  return check["bpp"] <= best["bpp"] * (1 + RATE_TOLERANCE)


def _beats(check, best):
  """Lower LPIPS at the rate: the rule a new version must meet to ship."""
  return check["lpips"] < best["lpips"] and _at_rate(check, best)


def _realism_margin(check):
  """How far a check's patch FID is under JPEG's at the same size."""
  return check["against_patch_fid"] - check["patch_fid"]


def _beats_on_realism(check, best):
  """Further ahead of JPEG on patch FID, at the rate."""
  return _realism_margin(check) > _realism_margin(best) and _at_rate(check, best)


def best_check(run_checks, beats=_beats):
  """The best of a run's checks in order (each beating the best before it), or None."""
  best = None
  for check in run_checks:
    if best is None or beats(check, best):
      best = check
  return best


def is_best(check, earlier):
  """Whether a held-out check beats the best of the earlier ones of its run.

  A GAN rung is noisy between checks (0.309 at one, 0.370 500 steps earlier), so the best is
  kept aside (keep_best): the run's own checkpoints roll on and would lose it.
  """
  best = best_check(earlier)
  return best is None or _beats(check, best)


def is_best_realism(check, earlier):
  """Whether a check is further ahead of JPEG on patch FID than the best earlier check that
  measured it (checks without patch FID never are).

  A rung must beat JPEG on LPIPS and on patch FID to ship, and the two do not always move
  together between checks (the top rung is ahead on LPIPS and behind on patch FID), so the
  check with the best realism is kept aside too (keep_best(..., BEST_REALISM)).
  """
  if "patch_fid" not in check:
    return False
  best = best_check([row for row in earlier if "patch_fid" in row], _beats_on_realism)
  return best is None or _beats_on_realism(check, best)


def keep_best(model_dir, check, folder=BEST):
  """Copies the checkpoint `check` measured into model_dir/`folder`, a model_dir of its own
  (config, origin, that one checkpoint) that bin/bundle_codec.py --model_dir can ship.

  Written beside and renamed into place, so a stop never leaves half a best.
  """
  model_dir = pathlib.Path(model_dir)
  source = pathlib.Path(check["source"])
  staging = model_dir / f".{folder}.tmp"
  if staging.exists():
    shutil.rmtree(staging)
  (staging / "checkpoints").mkdir(parents=True)
  for name in ("config.json", ORIGIN):
    if (model_dir / name).is_file():
      shutil.copy2(model_dir / name, staging / name)
  for part in source.parent.glob(source.name + ".*"):
    shutil.copy2(part, staging / "checkpoints" / part.name)
  (staging / "checkpoints" / "checkpoint").write_text(
      f'model_checkpoint_path: "{source.name}"\nall_model_checkpoint_paths: "{source.name}"\n')
  (staging / "check.json").write_text(json.dumps(check) + "\n")
  final = model_dir / folder
  if final.exists():
    shutil.rmtree(final)
  staging.rename(final)


def bundled_steps(name):
  """Steps behind a bundled rung's shipped weights (its card's `steps`), None if unbundled."""
  if name not in zoo.names():
    return None
  return int(zoo.load_card(name).get("steps", 0))


def resume_point(rung, checkpoints_dir):
  """(weights .npz, steps behind it) of `rung`'s committed resume point, or None.

  A rung still in training is committed to checkpoints/ (bin/bundle_codec.py --resume_point)
  so that a new machine continues it instead of growing it again from `grow_from`.
  """
  if checkpoints_dir is None:
    return None
  weights = pathlib.Path(checkpoints_dir) / f"{rung.name}.npz"
  card = weights.with_suffix(".card.json")
  if not weights.is_file():
    return None
  steps = json.loads(card.read_text()).get("steps", 0) if card.is_file() else 0
  return weights, int(steps or 0)


@dataclasses.dataclass
class RungState:
  rung: Rung
  model_dir: pathlib.Path
  bundled_steps: int | None   # None: not shipped yet.
  base_steps: int             # Steps behind the weights the run started from.
  run_steps: int              # Steps of the run so far.
  start_from: str             # What a new run of it initialises from (--init_from).

  @property
  def total_steps(self):
    return self.base_steps + self.run_steps


def state(rung, runs_dir, checkpoints_dir=None):
  """Where `rung` stands: shipped steps, and its run's origin and progress.

  A new run starts from the rung's committed resume point when there is one, else from the
  bundled rung itself, else from `grow_from`.
  """
  model_dir = pathlib.Path(runs_dir) / rung.name
  meta = model_dir / ORIGIN
  committed = resume_point(rung, checkpoints_dir)
  shipped = bundled_steps(rung.name)
  if committed:
    start_from, base = str(committed[0]), committed[1]
  elif shipped is not None:
    start_from, base = rung.name, shipped
  else:
    start_from = rung.grow_from
    base = bundled_steps(rung.grow_from) if rung.grow_from in zoo.names() else 0
  if meta.is_file():
    recorded = json.loads(meta.read_text())
    start_from, base = recorded.get("grow_from", start_from), int(recorded["base_steps"])
  return RungState(rung, model_dir, shipped, base or 0, sources.checkpoint_step(model_dir), start_from)


def record_origin(rung_state):
  """Writes the run's origin once, so its steps add to the right lineage after a restart."""
  meta = rung_state.model_dir / ORIGIN
  if not meta.is_file():
    rung_state.model_dir.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"grow_from": rung_state.start_from,
                                "base_steps": rung_state.base_steps}) + "\n")


def next_rung(runs_dir, only=None, checkpoints_dir=None):
  """The RungState to train next: the fewest steps behind it, a rung never trained first."""
  states = [state(r, runs_dir, checkpoints_dir) for r in LADDER
            if only is None or r.name in only]
  if not states:
    raise UsageError(f"no rung among {only}")
  def steps_behind(rung_state):
    never_trained = (rung_state.bundled_steps is None and rung_state.run_steps == 0
                     and rung_state.start_from == rung_state.rung.grow_from)
    return 0 if never_trained else rung_state.total_steps
  return min(states, key=steps_behind)
