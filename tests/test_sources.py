"""One way from a name to a codec (`hific_tf.load_codec`), and one held-out measurement behind
`hific evaluate`, the bundled codecs' cards and the ladder's checks."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, hific_here, random_image, run_hific
import hific_tf
from hific_tf import images
from hific_tf.models import sources, zoo

pytestmark = pytest.mark.e2e  # Exports and codes with trained models.


def _round_trip(codec, image):
  hific_file = codec.compress(image)
  decoded = codec.decompress(hific_file)
  assert decoded.shape == image.shape and decoded.dtype == np.uint8
  return hific_file


def test_load_codec_takes_every_source_the_cli_takes(stage1_dir, saved_model, serving_model,
                                                      tflite_model, cache_env, tmp_path,
                                                      monkeypatch):
  from hific_tf.models.hific import stored_weights
  monkeypatch.setenv("XDG_CACHE_HOME", cache_env["XDG_CACHE_HOME"])
  model = sources.build_model(stage1_dir)
  codec_folder = tmp_path / "folder"
  zoo.write_codec_dir(model, codec_folder, {"name": "folder", "target_bpp": 0.3})
  weights = tmp_path / "run.npz"
  stored_weights.save_weights(model, weights, bits=None)
  expected = {
      zoo.DEFAULT_CODEC: sources.BUNDLED, str(codec_folder): sources.CODEC_DIR,
      str(stage1_dir): sources.MODEL_DIR, str(weights): sources.WEIGHTS,
      str(saved_model): sources.SAVED_MODEL, str(serving_model): sources.SERVING,
      str(tflite_model): sources.TFLITE}
  image = random_image(40, 72)
  fingerprints = {}
  for text, kind in expected.items():
    assert sources.source_of(text).kind == kind, text
    extra = {"config": "tiny-mselpips"} if kind == sources.WEIGHTS else {}
    codec = hific_tf.load_codec(text, **extra)
    fingerprints[kind] = _round_trip(codec, image).fingerprint
  # The six forms of the trained run are one codec: the same weights' fingerprint in every file.
  assert len({v for k, v in fingerprints.items() if k != sources.BUNDLED}) == 1
  assert fingerprints[sources.BUNDLED] != fingerprints[sources.MODEL_DIR]
  # A weights file names its config through a card beside it, or is refused in one line.
  with pytest.raises(sources.SourceError, match="needs its config"):
    hific_tf.load_codec(weights)
  weights.with_suffix(".card.json").write_text(json.dumps({"config": "tiny-mselpips"}))
  _round_trip(hific_tf.load_codec(weights), image)
  with pytest.raises(sources.SourceError, match="not a bundled codec"):
    sources.source_of(tmp_path / "nothing")
  # The command line takes the same: a training run compresses and decompresses directly.
  images.write_atomic(tmp_path / "a.png", images.encode_png(image))
  hific_here("compress", tmp_path / "a.png", "--model", stage1_dir, env=cache_env)
  hific_here("decompress", tmp_path / "a.hific", tmp_path / "b.png", "--model", stage1_dir,
             env=cache_env)
  assert images.load_rgb(tmp_path / "b.png").shape == image.shape


def test_one_heldout_measurement_behind_evaluate_cards_and_ladder(stage1_dir, saved_model,
                                                                    photo_dir, tmp_path):
  """The same codec and photos give the same figures through `hific evaluate`, the bundler's
  card and the ladder's check, because all three are heldout.measure."""
  from hific_tf.evaluation import heldout
  photos = tmp_path / "photos"
  photos.mkdir()
  for name in ("coffee", "chelsea"):
    (photos / f"{name}.png").write_bytes((photo_dir / f"{name}.png").read_bytes())
  files = images.list_images(photos)
  direct = heldout.measure(heldout.FileCoder(hific_tf.load_codec(saved_model)), files,
                           against="jpeg", patch_fid=True)
  assert direct.summary()["patch_fid_se"] >= 0 or len(files) < 3
  assert all(row["against_bpp"] <= row["bpp"] + 1e-9 for row in direct.rows)

  out = tmp_path / "eval"
  run_hific("evaluate", "--model", saved_model, "--images", photos, "--codecs", "jpeg",
            "--bpp", "0.3", "--out", out, "--no_fid")
  with open(out / "results.csv") as f:
    evaluated = {r["image"]: r for r in csv.DictReader(f) if r["method"] == "hific"}
  for row in direct.rows:
    for column in ("bpp", "psnr", "ms_ssim", "lpips"):
      assert float(evaluated[row["image"]][column]) == pytest.approx(row[column], rel=1e-5)

  bundled = tmp_path / "bundled"
  subprocess.run([sys.executable, str(REPO / "bin" / "bundle_codec.py"), "--model_dir",
                  str(stage1_dir), "--name", "tiny", "--heldout", str(photos), "--out",
                  str(bundled)], check=True, capture_output=True, cwd=REPO)
  card = zoo.load_card(bundled)
  # The card is measured in float32, as `hific evaluate` measures (auto would pick a bfloat16
  # generator on a CPU that computes it natively).
  again = heldout.measure(heldout.FileCoder(hific_tf.load_codec(bundled, precision="float32")),
                          files)
  assert card["heldout_images"] == json.loads(json.dumps(again.rows))
  assert card["heldout"]["lpips"] == pytest.approx(again.means["lpips"])

  sys.path.insert(0, str(REPO / "bin"))
  import train_ladder
  check = train_ladder.heldout_check(str(stage1_dir), str(photos))
  # Entropy-model bytes: the same latents and G as the files, without the container and the
  # range coder's last bytes.
  assert check["lpips"] == pytest.approx(direct.means["lpips"], abs=2e-3)
  overhead = 64 * 8 / np.mean([images.load_rgb(f).shape[0] * images.load_rgb(f).shape[1]
                               for f in files])
  assert direct.means["bpp"] - overhead < check["bpp"] <= direct.means["bpp"]
  assert check["bytes_from"] == heldout.ENTROPY_MODEL_BYTES and "patch_fid" in check
