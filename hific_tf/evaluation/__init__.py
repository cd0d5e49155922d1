"""Measuring codecs: metrics, classical codecs at matched rates, and the evaluation runner.

Library code: it never imports the command line (hific_tf.cli).
"""
