"""The FID cross term, both exact forms side by side at the sizes `hific evaluate` meets.

tr(sqrtm(cov(a) cov(b))) of 2048-d Inception features: the feature-space form (two 2048-d
eigendecompositions) against the sample-space form (an SVD of the n_a x n_b matrix a b^T),
which `metrics.fid` uses whenever it is the cheaper one. Prints both times, their ratio and
the relative difference of the two numbers.

  python bench/fid_speed.py [--samples 9,72,500]
"""

import argparse
import time

import numpy as np

from hific_tf.evaluation import metrics


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", default="9,72,500",
                      help="Rows per set: images (9), patches (72), a larger set.")
  parser.add_argument("--dimensions", type=int, default=2048)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  print(f"{'rows':>6} {'feature form s':>15} {'sample form s':>14} {'ratio':>8} {'rel. diff':>10}")
  for rows in (int(n) for n in args.samples.split(",")):
    a = np.abs(rng.normal(size=(rows, args.dimensions)))  # Post-ReLU-like features.
    b = np.abs(rng.normal(0.1, 1.1, size=(rows, args.dimensions)))
    start = time.perf_counter()
    feature = metrics._trace_sqrt_product(np.cov(a, rowvar=False), np.cov(b, rowvar=False))
    feature_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sample = metrics._trace_sqrt_product_of_samples(a - a.mean(0), b - b.mean(0))
    sample_seconds = time.perf_counter() - start
    print(f"{rows:>6} {feature_seconds:>15.3f} {sample_seconds:>14.4f} "
          f"{feature_seconds / sample_seconds:>7.0f}x {abs(sample / feature - 1):>10.1e}")


if __name__ == "__main__":
  main()
