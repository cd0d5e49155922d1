"""Measuring images and codecs, below the models that train against it and the tools that
report it: PSNR, MS-SSIM, FID/KID and patches (metrics), LPIPS (Zhang et al., CVPR 2018) and
the FID InceptionV3 (Heusel et al., NeurIPS 2017) ported without torch or jax, their weights,
and the classical codecs at matched rates."""
