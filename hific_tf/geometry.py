"""Where pixels, latents and side latents sit relative to each other: one home for the sizes.

HiFiC (Mentzer et al., NeurIPS 2020) encodes an image to y at 1/16 of its size (four stride-2
convolutions) and y to z at 1/4 of that (the hyperprior's two), so a codec pads images to a
multiple of 64 and the container, the tiled path and the model all derive their shapes from
these numbers. TensorFlow-free: the container and the CLI use it without loading TF.
"""

NUM_DOWNSAMPLINGS = 4                         # Stride-2 convolutions in the encoder.
LATENT_DOWNSAMPLING = 2 ** NUM_DOWNSAMPLINGS  # y is at 1/16 of the padded image.
SIDE_DOWNSAMPLING = 4                         # z is at 1/4 of y (two stride-2 convs).
PAD_MULTIPLE = LATENT_DOWNSAMPLING * SIDE_DOWNSAMPLING  # Images are padded to multiples of 64.


def round_up(size, multiple):
  """`size` rounded up to a multiple of `multiple` (ints or integer tensors)."""
  return -(-size // multiple) * multiple


def latent_shapes(height, width, pad_multiple=PAD_MULTIPLE,
                  latent_downsampling=LATENT_DOWNSAMPLING):
  """(y_shape, z_shape) that an image of height x width has once padded to pad_multiple."""
  padded = [round_up(side, pad_multiple) for side in (height, width)]
  y_shape = tuple(side // latent_downsampling for side in padded)
  z_shape = tuple(side // pad_multiple for side in padded)
  return y_shape, z_shape
