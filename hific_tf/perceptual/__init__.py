"""Pretrained perceptual networks, ported without torch or jax: LPIPS (Zhang et al., CVPR 2018)
and the FID InceptionV3 (Heusel et al., NeurIPS 2017), with offline weight fetching."""
