"""`hific_tf.lpips.LPIPS(net="alex"|"vgg")`: the public name of the LPIPS port.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR
2018 (LPIPS v0.1), the distortion term HiFiC trains with. The port itself lives in
`hific_tf.measure.lpips`; this module keeps the short import path users and scripts rely on.
"""

from hific_tf.measure.lpips import LPIPS

__all__ = ["LPIPS"]
