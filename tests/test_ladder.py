"""Which rung the ladder trains next, and where a rung's run starts (TF-free)."""

import json

from hific_tf.training import ladder


def _checkpoint(folder, step):
  (folder / "checkpoints").mkdir(parents=True)
  (folder / "checkpoints" / "checkpoint").write_text(
      f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-{step}"\n')


def test_a_new_rung_first_then_the_fewest_steps(tmp_path, monkeypatch):
  shipped = {"small-lo": 5500, "small-mi": 6700}
  monkeypatch.setattr(ladder, "bundled_steps", shipped.get)
  monkeypatch.setattr(ladder.zoo, "names", lambda: list(shipped))
  assert ladder.next_rung(tmp_path).rung.name == "small-hi"
  # Once it has trained, small-hi counts small-mi's steps too and waits for the others.
  _checkpoint(tmp_path / "small-hi", 100)
  assert ladder.state(ladder.by_name("small-hi"), tmp_path).total_steps == 6800
  assert ladder.next_rung(tmp_path).rung.name == "small-lo"
  shipped["small-hi"] = 8350
  assert ladder.next_rung(tmp_path).rung.name == "small-lo"
  _checkpoint(tmp_path / "small-lo", 2000)
  (tmp_path / "small-lo" / "ladder.json").write_text(
      json.dumps({"grow_from": "small-lo", "base_steps": 5500}))
  assert ladder.state(ladder.by_name("small-lo"), tmp_path).total_steps == 7500
  assert ladder.next_rung(tmp_path).rung.name == "small-mi"


def test_a_committed_resume_point_is_where_a_new_run_starts(tmp_path, monkeypatch):
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
