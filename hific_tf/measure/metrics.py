"""Distortion and realism metrics as HiFiC reports them (Mentzer et al., NeurIPS 2020, Sec. 4).

PSNR and MS-SSIM come from tf.image on uint8 RGB; LPIPS from hific_tf.measure.lpips; FID (Heusel et
al., 2017) and KID (Bińkowski et al., 2018) from Inception pool_3 features, in float64 numpy.
Patch FID/KID follow the paper: every image is cut into 256x256 patches on a grid, plus a second
grid shifted by 128 pixels, so that a few dozen images give hundreds of samples.
"""

import numpy as np
import tensorflow as tf

from hific_tf import images

PATCH = 256
MS_SSIM_MIN_SIDE = 161  # tf.image.ssim_multiscale: 11-px filter at 1/16 scale.


def psnr_tensor(original, reconstruction, max_value=255.):
  """PSNR in dB per image (tf.image.psnr); the one PSNR formula of hific_tf."""
  return tf.image.psnr(original, reconstruction, max_value)


def psnr(original, reconstruction):
  """PSNR in dB of two uint8 images, as a Python float."""
  return float(psnr_tensor(tf.constant(original), tf.constant(reconstruction)))


@tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)] * 2)
def _ms_ssim_graph(original, reconstruction):
  # One graph for every size: run eagerly, ssim_multiscale dispatches ~400 small ops a call.
  return tf.image.ssim_multiscale(original, reconstruction, 255)


def ms_ssim(original, reconstruction):
  """MS-SSIM with the standard 5 scales; NaN for images too small for it."""
  if min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
    return float("nan")
  return float(_ms_ssim_graph(tf.constant(original, tf.uint8),
                              tf.constant(reconstruction, tf.uint8)))


def measure(original, reconstruction, num_bytes=None, lpips=None, with_ms_ssim=True):
  """What a decoded image is worth: {bpp, psnr, ms_ssim, lpips} against its original.

  The one place a row of rate and distortion is made (evaluation, bundled codecs' cards, the
  demo, the server, benchmarks), so every figure hific_tf prints is computed the same way.
  `num_bytes` is the whole file's size (None: no bpp, for callers that know the rate
  already); `lpips` an `LPIPS` instance, or None to skip it (and `with_ms_ssim=False` skips
  MS-SSIM, for interactive use).
  """
  return {
      "bpp": (images.bits_per_pixel(num_bytes, *original.shape[:2]) if num_bytes is not None
              else None),
      "psnr": psnr(original, reconstruction),
      "ms_ssim": ms_ssim(original, reconstruction) if with_ms_ssim else float("nan"),
      "lpips": (lpips.image_distance(original, reconstruction) if lpips is not None
                else None),
  }


def patches(image, size=PATCH):
  """size x size patches on a grid and on the grid shifted by size/2 (HiFiC's patch FID)."""
  height, width = image.shape[:2]
  out = []
  for offset in (0, size // 2):
    for top in range(offset, height - size + 1, size):
      for left in range(offset, width - size + 1, size):
        out.append(image[top:top + size, left:left + size])
  return out


def _trace_sqrt_product(sigma_a, sigma_b):
  """tr(sqrtm(A B)) for symmetric PSD A, B, exactly: sum of sqrt(eig(A^1/2 B A^1/2)).

  scipy.linalg.sqrtm(A B) is slow in 2048-d and inaccurate (~1e-4, with imaginary parts)
  when the covariances are rank-deficient, which they are with fewer samples than features.
  """
  values, vectors = np.linalg.eigh(sigma_a)
  root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
  product = root_a @ sigma_b @ root_a
  return float(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum())


def _trace_sqrt_product_of_samples(centered_a, centered_b):
  """tr(sqrtm(cov(a) cov(b))) from the centered samples: the nuclear norm of a b^T, scaled.

  cov(a) cov(b) = a^T a b^T b / ((n_a-1)(n_b-1)) has the nonzero eigenvalues of
  (a b^T)(a b^T)^T, whose square roots are the singular values of a b^T. With fewer samples
  than the 2048 features (a few dozen images or patches) that is an n_a x n_b SVD instead of
  two 2048-d eigendecompositions: milliseconds against about 10 s, and the same number.
  """
  singular_values = np.linalg.svd(centered_a @ centered_b.T, compute_uv=False)
  return float(singular_values.sum() / np.sqrt((len(centered_a) - 1) * (len(centered_b) - 1)))


def fid(features_a, features_b):
  """Fréchet Inception distance between two sets of features (rows)."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
  centered_a, centered_b = a - mu_a, b - mu_b
  mean_term = float(((mu_a - mu_b) ** 2).sum())
  traces = float((centered_a ** 2).sum() / (len(a) - 1) + (centered_b ** 2).sum() / (len(b) - 1))
  small, large = sorted((len(a), len(b)))
  if small * small * large < a.shape[1] ** 3:  # The cheaper of the two exact forms.
    cross = _trace_sqrt_product_of_samples(centered_a, centered_b)
  else:
    cross = _trace_sqrt_product(np.cov(a, rowvar=False), np.cov(b, rowvar=False))
  return mean_term + traces - 2 * cross


def kid(features_a, features_b, subsets=100, subset_size=1000, seed=0):
  """Kernel Inception distance: unbiased MMD^2 with the cubic polynomial kernel, averaged
  over random subsets (the size shrinks to the smaller set when it has fewer rows)."""
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  size = min(subset_size, len(a), len(b))
  if size < 2:
    return float("nan")
  rng = np.random.default_rng(seed)
  dimensions = a.shape[1]
  kernel = lambda x, y: (x @ y.T / dimensions + 1) ** 3
  values = []
  for _ in range(subsets):
    x = a[rng.choice(len(a), size, replace=False)]
    y = b[rng.choice(len(b), size, replace=False)]
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    off_diagonal = size * (size - 1)
    values.append((k_xx.sum() - np.trace(k_xx)) / off_diagonal +
                  (k_yy.sum() - np.trace(k_yy)) / off_diagonal - 2 * k_xy.mean())
  return float(np.mean(values))
