"""Measuring a codec on a folder of photos: the held-out measurement (heldout) and `hific
evaluate`'s reports (runner).

Library code: it never imports the command line (hific_tf.cli).
"""
