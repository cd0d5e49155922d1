"""Evaluation: Inception port against the official features, FID/KID formulas, classical
codecs at matched rates, and `hific evaluate` end to end (classical only and with a model)."""

import csv
import json

import numpy as np
from PIL import Image
import pytest
import scipy.linalg

from conftest import REFERENCE_DIR, hific_here, run_hific
from hific_tf.measure import classical, metrics


@pytest.fixture(scope="module")
def inception_reference():
  return np.load(REFERENCE_DIR / "inception_reference.npz"), json.loads(
      (REFERENCE_DIR / "inception_reference.json").read_text())


def test_inception_features_match_the_official_network(inception_reference):
  from hific_tf.measure.inception import InceptionV3
  reference, _ = inception_reference
  batch = np.stack([np.asarray(Image.open(REFERENCE_DIR / str(name)))
                    for name in reference["names"]])
  features = InceptionV3()(batch)
  error = np.linalg.norm(features - reference["features"], axis=1) / np.linalg.norm(
      reference["features"], axis=1)
  assert error.max() <= 1e-3, error
  mean_term = ((features[:6].mean(0) - features[6:].mean(0)) ** 2).sum()
  expected = inception_reference[1]["fid_originals_vs_jpeg"]["from_float64_features"]
  assert mean_term == pytest.approx(expected["mean_term"], rel=1e-3)


def test_fid_formula_on_the_stored_features(inception_reference):
  reference, info = inception_reference
  features = reference["features"].astype(np.float64)
  expected = info["fid_originals_vs_jpeg"]["from_stored_float32_features"]
  assert metrics.fid(features[:6], features[6:]) == pytest.approx(expected["fid_exact"],
                                                                  abs=1e-3)


def test_fid_matches_scipy_on_random_features():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 64))
  b = rng.normal(0.3, 1.2, size=(300, 64)) @ rng.normal(size=(64, 64)) / 8
  mu_a, mu_b = a.mean(0), b.mean(0)
  sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
  expected = ((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a + sigma_b - 2 * root)
  assert metrics.fid(a, b) == pytest.approx(expected, rel=1e-6)
  assert metrics.fid(a, a) == pytest.approx(0, abs=1e-6)


def test_both_exact_forms_of_the_fid_cross_term_agree():
  """The sample-space SVD (few samples) and the feature-space eigh (many) are one number."""
  rng = np.random.default_rng(2)
  # Full rank, then rank-deficient: there the feature form takes square roots of ~275
  # round-off eigenvalues (each ~1e-13, so ~1e-4 in all), the SVD form has none to take.
  for rows_a, rows_b, dimensions, tolerance in ((400, 300, 64, 1e-10), (40, 25, 300, 1e-6)):
    a = rng.normal(size=(rows_a, dimensions)) @ rng.normal(size=(dimensions, dimensions))
    b = rng.normal(0.2, 1.5, size=(rows_b, dimensions))
    sample_form = metrics._trace_sqrt_product_of_samples(a - a.mean(0), b - b.mean(0))
    feature_form = metrics._trace_sqrt_product(np.cov(a, rowvar=False), np.cov(b, rowvar=False))
    assert sample_form == pytest.approx(feature_form, rel=tolerance)


def test_kid_of_a_set_against_itself_is_about_zero():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(1000, 32)), rng.normal(0.5, 1, size=(1000, 32))
  same_distribution = rng.normal(size=(1000, 32))
  shifted = metrics.kid(a, b, subsets=5)
  assert shifted > 0.5
  # The unbiased estimator leaves out the diagonal: -O(1/n) for a set against itself.
  assert abs(metrics.kid(a, a, subsets=5)) < 0.02 * shifted
  assert abs(metrics.kid(a, same_distribution, subsets=5)) < 0.002 * shifted


def test_patches_follow_the_paper_grid():
  tiles = metrics.patches(np.zeros([600, 520, 3]))
  assert len(tiles) == 2 * 2 + 1 * 1  # Grid at 0 (2x2) and shifted by 128 (1x1).
  assert all(t.shape == (256, 256, 3) for t in tiles)


@pytest.mark.parametrize("name", classical.CODECS)
def test_classical_codecs_land_on_the_requested_rate(name):
  import skimage.data
  image = skimage.data.astronaut()
  codec = classical.get_codec(name)
  match = classical.match_rate(codec, image, 0.5)
  assert match.in_range and abs(match.bpp - 0.5) <= 0.05
  decoded = codec.decode(match.data)
  assert decoded.shape == image.shape
  assert metrics.psnr(image, decoded) > 22


@pytest.mark.e2e  # A whole `hific evaluate` run: rate search, LPIPS, FID, plots.
def test_evaluate_classical_codecs(photo_dir, tmp_path):
  # The six photos cut to 256x256 (one patch each): the same work per row, fewest pixels.
  small = tmp_path / "small"
  small.mkdir()
  for path in sorted(photo_dir.glob("*.png")):
    image = Image.open(path)
    image.thumbnail((10 ** 4, 256) if image.width > image.height else (256, 10 ** 4))
    left, top = (image.width - 256) // 2, (image.height - 256) // 2
    image.crop((left, top, left + 256, top + 256)).save(small / path.name)
  out = tmp_path / "eval"
  args = ["evaluate", "--model", "none", "--images", small, "--codecs",
          "jpeg,webp,avif,heic,jxl", "--bpp", "0.15,0.3", "--out", out]
  done = run_hific(*args)
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6 * 5 * 2
  for row in rows:
    near = abs(float(row["bpp"]) - float(row["target_bpp"])) <= 0.1 * float(row["target_bpp"])
    assert near == (row["in_range"] == "True"), row
  summary = json.loads((out / "summary.json").read_text())
  assert set(summary) == {f"{c}@{t}bpp" for c in classical.CODECS for t in ("0.15", "0.3")}
  for entry in summary.values():
    assert np.isfinite([entry["fid"], entry["patch_fid"], entry["kid"], entry["psnr"]]).all()
    assert entry["patches"] >= 6
  assert summary["avif@0.3bpp"]["psnr"] > summary["avif@0.15bpp"]["psnr"]
  for column in ("psnr", "ms_ssim", "lpips", "patch_fid"):
    assert (out / f"bpp_vs_{column}.png").stat().st_size > 1000
  assert len(list((out / "crops").glob("*.png"))) == 3
  assert "in range" in done.stdout
  again = hific_here(*args)  # The cache is the point here, not a fresh process.
  assert "(60 from a previous run)" in again.stdout


def test_evaluate_an_exported_model(saved_model, photo_dir, tmp_path):
  images = tmp_path / "few"
  images.mkdir()
  for name in ("coffee", "chelsea"):
    (images / f"{name}.png").write_bytes((photo_dir / f"{name}.png").read_bytes())
  out = tmp_path / "eval"
  run_hific("evaluate", "--model", saved_model, "--images", images, "--codecs", "webp",
            "--bpp", "0.2", "--out", out, "--match")
  summary = json.loads((out / "summary.json").read_text())
  hific = summary["hific@tiny-mselpips"]
  assert hific["images"] == 2 and 0 < hific["bpp"] < 2 and np.isfinite(hific["patch_fid"])
  # --match: WebP searched to HiFiC's own file size, image by image (never larger).
  with open(out / "results.csv") as f:
    rows = {(r["image"], r["method"], r["setting"]): r for r in csv.DictReader(f)}
  for name in ("coffee", "chelsea"):
    hific_bpp = float(rows[(name, "hific", "tiny-mselpips")]["bpp"])
    webp_bpp = float(rows[(name, "webp", "match")]["bpp"])
    assert webp_bpp <= hific_bpp + 1e-9
  assert summary["webp@match"]["images"] == 2


def test_evaluate_rejects_bad_arguments(photo_dir, tmp_path):
  done = hific_here("evaluate", "--model", "none", "--images", photo_dir, "--codecs", "bpg",
                    "--out", tmp_path, check=False)
  assert done.returncode == 2 and "unknown codec" in done.stderr
  done = hific_here("evaluate", "--model", "none", "--images", tmp_path / "nothing",
                   "--out", tmp_path, check=False)
  assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
