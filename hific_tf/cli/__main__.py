"""`python -m hific_tf.cli` runs the `hific` command."""

from hific_tf.cli.main import console_main

console_main()
