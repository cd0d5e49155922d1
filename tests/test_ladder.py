"""Which rung the ladder trains next, and where a rung's run starts (TF-free)."""

import json
import sys

from conftest import REPO
from hific_tf.models import sources

sys.path.insert(0, str(REPO / "bin"))
import ladder  # noqa: E402  (bin/ladder.py: the maintainer's ladder, outside the package)


def _checkpoint(folder, step):
  (folder / "checkpoints").mkdir(parents=True)
  (folder / "checkpoints" / "checkpoint").write_text(
      f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-{step}"\n')


# The ladder before 1.0.0, when three codecs trained: the ranking of several rungs.
THREE_RUNGS = (ladder.Rung("small-lo", "small-decoder-gan", "small-lo"),
               ladder.Rung("small-mi", "small-mselpips-mi-continue", "small-mi"),
               ladder.Rung("small-hi", "small-hific-hi", "small-mi"))


def test_the_ladder_trains_the_one_model_in_the_decoder_stage():
  assert [(r.name, r.config) for r in ladder.LADDER] == [("small-lo", "small-decoder-gan")]


def test_a_new_rung_first_then_the_fewest_steps(tmp_path, monkeypatch):
  monkeypatch.setattr(ladder, "LADDER", THREE_RUNGS)
  shipped = {"small-lo": 5500, "small-mi": 6700}
  monkeypatch.setattr(ladder, "bundled_steps", shipped.get)
  monkeypatch.setattr(ladder.zoo, "names", lambda: list(shipped))
  next_rung = ladder.next_rung
  assert next_rung(tmp_path).rung.name == "small-hi"
  # Once it has trained, small-hi counts small-mi's steps too and waits for the others.
  _checkpoint(tmp_path / "small-hi", 100)
  assert ladder.state(ladder.by_name("small-hi"), tmp_path).total_steps == 6800
  assert next_rung(tmp_path).rung.name == "small-lo"
  shipped["small-hi"] = 8350
  assert next_rung(tmp_path).rung.name == "small-lo"
  _checkpoint(tmp_path / "small-lo", 2000)
  (tmp_path / "small-lo" / "ladder.json").write_text(
      json.dumps({"grow_from": "small-lo", "base_steps": 5500}))
  assert ladder.state(ladder.by_name("small-lo"), tmp_path).total_steps == 7500
  assert next_rung(tmp_path).rung.name == "small-mi"


def test_a_committed_resume_point_is_where_a_new_run_starts(tmp_path, monkeypatch):
  monkeypatch.setattr(ladder, "LADDER", THREE_RUNGS)
  monkeypatch.setattr(ladder, "bundled_steps", {"small-mi": 6700}.get)
  monkeypatch.setattr(ladder.zoo, "names", lambda: ["small-mi"])
  rung = ladder.by_name("small-hi")
  fresh = ladder.state(rung, tmp_path / "runs")
  assert (fresh.start_from, fresh.base_steps) == ("small-mi", 6700)
  checkpoints = tmp_path / "checkpoints"
  checkpoints.mkdir()
  (checkpoints / "small-hi.npz").write_bytes(b"")
  (checkpoints / "small-hi.card.json").write_text(json.dumps({"steps": 8350}))
  resumed = ladder.state(rung, tmp_path / "runs", checkpoints)
  assert resumed.start_from == str(checkpoints / "small-hi.npz")
  assert resumed.base_steps == 8350 and resumed.run_steps == 0
  ladder.record_origin(resumed)  # A run, once started, keeps its origin.
  _checkpoint(resumed.model_dir, 300)
  again = ladder.state(rung, tmp_path / "runs")
  assert (again.start_from, again.total_steps) == (str(checkpoints / "small-hi.npz"), 8650)


def test_a_check_across_rates_is_the_mean_of_its_points():
  rows = [dict(bpp=0.14, lpips=0.30, images=9, against="jpeg"),
          dict(bpp=0.20, lpips=0.26, images=9, against="jpeg")]
  check = ladder.across_rates(rows, [0., 0.75])
  assert abs(check["bpp"] - 0.17) < 1e-12 and abs(check["lpips"] - 0.28) < 1e-12
  assert check["against"] == "jpeg" and [p["rate"] for p in check["rates"]] == [0., 0.75]
  assert ladder.across_rates(rows[:1], [None]) == rows[0]


def test_the_best_check_is_kept_aside_as_a_model_dir(tmp_path):
  """The ladder's checks of small-mi (2026-12-02): the rolling checkpoints would have lost the
  step-2100 weights that beat v2 at a lower rate; the best check is copied out instead."""
  checks = [dict(step=500, bpp=0.1998, lpips=0.3704), dict(step=1000, bpp=0.1952, lpips=0.3087),
            dict(step=1500, bpp=0.2001, lpips=0.3090), dict(step=2100, bpp=0.1864, lpips=0.3046),
            dict(step=2600, bpp=0.1963, lpips=0.3100)]
  kept = [c["step"] for i, c in enumerate(checks) if ladder.is_best(c, checks[:i])]
  assert kept == [500, 1000, 2100]
  assert ladder.best_check(checks)["step"] == 2100
  # Lower LPIPS bought with more than 5% more bits is not better.
  assert not ladder.is_best(dict(bpp=0.1864 * 1.06, lpips=0.2), checks)
  assert ladder.is_best(dict(bpp=0.1864 * 1.04, lpips=0.30), checks)

  run = tmp_path / "small-mi"
  _checkpoint(run, 2650)
  (run / "config.json").write_text("{}")
  (run / "ladder.json").write_text(json.dumps({"grow_from": "small-mi", "base_steps": 6700}))
  for suffix in ("index", "data-00000-of-00001"):
    (run / "checkpoints" / f"ckpt-2600.{suffix}").write_text(suffix)
    (run / "checkpoints" / f"ckpt-2650.{suffix}").write_text("later")
  check = dict(checks[-1], source=str(run / "checkpoints" / "ckpt-2600"))
  ladder.keep_best(run, dict(check, lpips=0.9))
  ladder.keep_best(run, check)  # Overwrites the earlier best whole.
  best = run / ladder.BEST
  assert sources.checkpoint_step(best) == 2600
  assert sorted(p.name for p in (best / "checkpoints").iterdir()) == [
      "checkpoint", "ckpt-2600.data-00000-of-00001", "ckpt-2600.index"]
  assert (best / "checkpoints" / "ckpt-2600.index").read_text() == "index"
  assert json.loads((best / "check.json").read_text())["lpips"] == 0.3100
  assert (best / "config.json").is_file() and (best / "ladder.json").is_file()
  assert not any(p.name.startswith(".") for p in run.iterdir())


def test_the_check_with_the_best_realism_is_kept_aside_too(tmp_path):
  """small-hi is ahead of JPEG on LPIPS and behind on patch FID: the check furthest ahead on
  patch FID is kept in best_realism even when its LPIPS is not the run's best."""
  checks = [dict(step=500, bpp=0.280, lpips=0.2576),  # Before checks measured patch FID.
            dict(step=1400, bpp=0.279, lpips=0.2550, patch_fid=222., against_patch_fid=205.)]
  assert not ladder.is_best_realism(checks[0], [])
  assert ladder.is_best_realism(checks[1], checks[:1])
  worse_lpips = dict(step=1700, bpp=0.281, lpips=0.2600, patch_fid=210., against_patch_fid=206.)
  assert ladder.is_best_realism(worse_lpips, checks)
  assert not ladder.is_best(worse_lpips, checks)
  checks.append(worse_lpips)
  # Behind on patch FID by more than the best; or ahead, but bought with over 5% more bits.
  assert not ladder.is_best_realism(dict(bpp=0.28, lpips=0.2, patch_fid=220.,
                                         against_patch_fid=210.), checks)
  assert not ladder.is_best_realism(dict(bpp=0.281 * 1.06, lpips=0.2, patch_fid=190.,
                                         against_patch_fid=210.), checks)
  run = tmp_path / "small-hi"
  _checkpoint(run, 1700)
  ladder.keep_best(run, dict(worse_lpips, source=str(run / "checkpoints" / "ckpt-1700")),
                   ladder.BEST_REALISM)
  assert sources.checkpoint_step(run / ladder.BEST_REALISM) == 1700
  assert not (run / ladder.BEST).exists()
