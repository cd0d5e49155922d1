"""A checkpoint in the PyTorch HiFiC port's format, and that port's forward pass in torch ops.

Written here from the definitions of Justin-Tan/high-fidelity-generative-compression
(src/network/encoder.py, generator.py, hyper.py, src/normalisation/channel.py,
src/compression/hyperprior_model.py, src/hyperprior.py, src/model.py), not copied from it:
reflect pads, conv2d, conv_transpose2d with output_padding, ChannelNorm with the unbiased
variance, the factorized prior's logits with a tanh factor on every layer, sigma bounded below
by 0.11, z rounded as floor(z + 0.5) and y as floor(y - mu + 0.5) + mu, images reflect-padded
to 16 and y to 4. The weights are random, with norm gains and prior factors moved away from
their initial values so that a mapping that ignored them would show.
"""

import numpy as np
import torch
import torch.nn.functional as F

MIN_SCALE = 0.11
MIN_LIKELIHOOD = 1e-9


def random_checkpoint(path, width=60, latent_channels=220, hyper_filters=320, blocks=2,
                      normalize=True, likelihood="gaussian", seed=0, extra_args=None,
                      with_discriminator=True):
  """Writes a port-format checkpoint with random weights to `path`; returns its state dict."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(key, out_channels, in_channels, kernel, transposed=False, gain=1.):
    shape = ((in_channels, out_channels) if transposed else (out_channels, in_channels)) + (
        kernel, kernel)
    fan_in = in_channels * kernel * kernel
    state[f"{key}.weight"] = rng.normal(0., gain / np.sqrt(fan_in), shape)
    state[f"{key}.bias"] = rng.normal(0., 0.1, out_channels)

  def norm(key, channels):
    state[f"{key}.gamma"] = 1. + rng.normal(0., 0.2, (1, channels, 1, 1))
    state[f"{key}.beta"] = rng.normal(0., 0.2, (1, channels, 1, 1))

  filters = [width * 2 ** i for i in range(5)]
  conv("Encoder.conv_block1.1", filters[0], 3, 7)
  norm("Encoder.conv_block1.2", filters[0])
  for block in range(4):
    conv(f"Encoder.conv_block{block + 2}.1", filters[block + 1], filters[block], 3)
    norm(f"Encoder.conv_block{block + 2}.2", filters[block + 1])
  conv("Encoder.conv_block_out.1", latent_channels, filters[4], 3, gain=2.)
  norm("Generator.conv_block_init.0", latent_channels)
  conv("Generator.conv_block_init.2", filters[4], latent_channels, 3)
  norm("Generator.conv_block_init.3", filters[4])
  for m in range(blocks):
    for part in (1, 2):
      conv(f"Generator.resblock_{m}.conv{part}", filters[4], filters[4], 3)
      norm(f"Generator.resblock_{m}.norm{part}", filters[4])
  for block in range(4):
    conv(f"Generator.upconv_block{block + 1}.0", filters[3 - block], filters[4 - block], 3,
         transposed=True)
    norm(f"Generator.upconv_block{block + 1}.1", filters[3 - block])
  conv("Generator.conv_block_out.1", 3, filters[0], 7)
  conv("Hyperprior.analysis_net.conv1", hyper_filters, latent_channels, 3)
  conv("Hyperprior.analysis_net.conv2", hyper_filters, hyper_filters, 5)
  conv("Hyperprior.analysis_net.conv3", hyper_filters, hyper_filters, 5, gain=2.)
  for network in ("synthesis_mu", "synthesis_std"):
    conv(f"Hyperprior.{network}.conv1", hyper_filters, hyper_filters, 5, transposed=True)
    conv(f"Hyperprior.{network}.conv2", hyper_filters, hyper_filters, 5, transposed=True)
    conv(f"Hyperprior.{network}.conv3", latent_channels, hyper_filters, 3, transposed=True,
         gain=0.5)
  # Scales mostly above the bound: a codec whose sigma sat at 0.11 everywhere would only
  # test the escape coding of both coders.
  state["Hyperprior.synthesis_std.conv3.bias"] = rng.uniform(0.8, 1.6, latent_channels)
  prior = (1, 3, 3, 3, 1)
  scale = 10. ** (1 / 4)
  for k in range(4):
    init = np.log(np.expm1(1 / scale / prior[k + 1]))
    state[f"Hyperprior.hyperlatent_likelihood.H_{k}"] = init + rng.normal(
        0., 0.3, (hyper_filters, prior[k + 1], prior[k]))
    state[f"Hyperprior.hyperlatent_likelihood.a_{k}"] = rng.normal(
        0., 0.5, (hyper_filters, prior[k + 1], 1))
    state[f"Hyperprior.hyperlatent_likelihood.b_{k}"] = rng.uniform(
        -.5, .5, (hyper_filters, prior[k + 1], 1))
  discriminator = {}
  if with_discriminator:
    # The port's D (not importable into hific_tf's): present, as in real GAN checkpoints.
    discriminator = {"context_conv.weight": rng.normal(0., .1, (12, latent_channels, 3, 3)),
                     "conv1.weight_orig": rng.normal(0., .1, (64, 3 + 12, 4, 4)),
                     "conv_out.weight": rng.normal(0., .1, (1, 512, 1, 1))}
    for key, value in discriminator.items():
      state[f"Discriminator.{key}"] = value
  args = {"latent_channels": latent_channels, "n_residual_blocks": blocks,
          "normalize_input_image": normalize, "likelihood_type": likelihood,
          "use_latent_mixture_model": False, "use_channel_norm": True, "sample_noise": False,
          "model_type": "compression_gan", "regime": "low", "target_rate": 0.14,
          "lambda_A": 2., "lambda_B": 2. ** -4, "k_M": 0.075 * 2 ** -5, "k_P": 1.,
          "beta": 0.15, "image_dims": [3, 256, 256], "name": "random"}
  args.update(extra_args or {})
  tensors = {key: torch.tensor(value, dtype=torch.float32) for key, value in state.items()}
  checkpoint = {"model_state_dict": tensors, "args": args, "epoch": 3, "steps": 1234,
                "compression_optimizer_state_dict": {"state": {}, "param_groups": []}}
  if with_discriminator:
    checkpoint["discriminator_state_dict"] = {
        key: torch.tensor(value, dtype=torch.float32) for key, value in discriminator.items()}
  torch.save(checkpoint, path)
  return tensors, args


def _channel_norm(x, s, key):
  mean = x.mean(dim=1, keepdim=True)
  variance = x.var(dim=1, keepdim=True)  # Unbiased, as torch.var defaults.
  return s[f"{key}.gamma"] * (x - mean) * torch.rsqrt(variance + 1e-3) + s[f"{key}.beta"]


def _conv(x, s, key, pad=None, stride=1, padding=0):
  if pad is not None:
    x = F.pad(x, pad, mode="reflect")
  return F.conv2d(x, s[f"{key}.weight"], s[f"{key}.bias"], stride=stride, padding=padding)


def encoder(s, x):
  x = F.relu(_channel_norm(_conv(x, s, "Encoder.conv_block1.1", (3, 3, 3, 3)), s,
                           "Encoder.conv_block1.2"))
  for block in range(2, 6):
    x = _conv(x, s, f"Encoder.conv_block{block}.1", (0, 1, 1, 0), stride=2)
    x = F.relu(_channel_norm(x, s, f"Encoder.conv_block{block}.2"))
  return _conv(x, s, "Encoder.conv_block_out.1", (1, 1, 1, 1))


def generator(s, y, blocks):
  head = _channel_norm(y, s, "Generator.conv_block_init.0")
  head = _conv(head, s, "Generator.conv_block_init.2", (1, 1, 1, 1))
  head = _channel_norm(head, s, "Generator.conv_block_init.3")
  x = head
  for m in range(blocks):
    r = F.relu(_channel_norm(_conv(x, s, f"Generator.resblock_{m}.conv1", (1, 1, 1, 1)), s,
                             f"Generator.resblock_{m}.norm1"))
    r = _channel_norm(_conv(r, s, f"Generator.resblock_{m}.conv2", (1, 1, 1, 1)), s,
                      f"Generator.resblock_{m}.norm2")
    x = x + r
  x = x + head
  for block in range(1, 5):
    key = f"Generator.upconv_block{block}.0"
    x = F.conv_transpose2d(x, s[f"{key}.weight"], s[f"{key}.bias"], stride=2, padding=1,
                           output_padding=1)
    x = F.relu(_channel_norm(x, s, f"Generator.upconv_block{block}.1"))
  return _conv(x, s, "Generator.conv_block_out.1", (3, 3, 3, 3))


def hyper_analysis(s, y):
  x = F.relu(_conv(y, s, "Hyperprior.analysis_net.conv1", padding=1))
  x = F.relu(_conv(x, s, "Hyperprior.analysis_net.conv2", (2, 2, 2, 2), stride=2))
  return _conv(x, s, "Hyperprior.analysis_net.conv3", (2, 2, 2, 2), stride=2)


def hyper_synthesis(s, z, network):
  key = f"Hyperprior.{network}"
  x = F.relu(F.conv_transpose2d(z, s[f"{key}.conv1.weight"], s[f"{key}.conv1.bias"],
                                stride=2, padding=2, output_padding=1))
  x = F.relu(F.conv_transpose2d(x, s[f"{key}.conv2.weight"], s[f"{key}.conv2.bias"],
                                stride=2, padding=2, output_padding=1))
  return F.conv_transpose2d(x, s[f"{key}.conv3.weight"], s[f"{key}.conv3.bias"], stride=1,
                            padding=1)


def _prior_logits(s, x):
  for k in range(4):
    x = torch.bmm(F.softplus(s[f"Hyperprior.hyperlatent_likelihood.H_{k}"]), x)
    x = x + s[f"Hyperprior.hyperlatent_likelihood.b_{k}"]
    x = x + torch.tanh(s[f"Hyperprior.hyperlatent_likelihood.a_{k}"]) * torch.tanh(x)
  return x


def z_likelihood(s, z):
  """The port's HyperpriorDensity.likelihood, [N, C, H, W] in and out."""
  n, c, h, w = z.shape
  flat = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
  upper, lower = _prior_logits(s, flat + .5), _prior_logits(s, flat - .5)
  sign = -torch.sign(upper + lower)
  likelihood = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
  likelihood = torch.clamp(likelihood, min=MIN_LIKELIHOOD)
  return likelihood.reshape(c, n, h, w).permute(1, 0, 2, 3)


def y_likelihood(y_hat, mean, scale, likelihood="gaussian"):
  if likelihood == "gaussian":
    cdf = lambda v: 0.5 * torch.erfc(v * (-1. / np.sqrt(2.)))
  else:
    cdf = torch.sigmoid
  x = torch.abs(y_hat - mean)
  return torch.clamp(cdf((.5 - x) / scale) - cdf(-(.5 + x) / scale), min=MIN_LIKELIHOOD)


def _pad_factor(x, factor):
  pad_h = (factor - x.shape[2] % factor) % factor
  pad_w = (factor - x.shape[3] % factor) % factor
  return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


@torch.no_grad()
def forward(state, args, image):
  """The port's evaluation forward on a uint8 [H, W, 3] image: every stage, numpy NHWC.

  Returns x (E's input), y (padded to 4), z, z_hat, mean, scale (sigma bounded below),
  y_hat, z_likelihood, y_likelihood, bits (from those likelihoods) and reconstruction in
  [0, 1] cropped to the image.
  """
  s = state
  height, width = image.shape[:2]
  x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 255.
  if args["normalize_input_image"]:
    x = x * 2. - 1.
  y = _pad_factor(encoder(s, _pad_factor(x, 16)), 4)
  z = hyper_analysis(s, y)
  z_hat = torch.floor(z + .5)
  mean = hyper_synthesis(s, z_hat, "synthesis_mu")
  scale = torch.clamp(hyper_synthesis(s, z_hat, "synthesis_std"), min=MIN_SCALE)
  y_hat = torch.floor(y - mean + .5) + mean
  z_lik = z_likelihood(s, z_hat)
  y_lik = y_likelihood(y_hat, mean, scale, args["likelihood_type"])
  bits = float(-(torch.log2(z_lik).sum() + torch.log2(y_lik).sum()))
  reconstruction = generator(s, y_hat, args["n_residual_blocks"])
  if args["normalize_input_image"]:
    reconstruction = (torch.tanh(reconstruction) + 1.) / 2.
  reconstruction = torch.clamp(reconstruction[:, :, :height, :width], 0., 1.)
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  return dict(x=nhwc(x), y=nhwc(y), z=nhwc(z), z_hat=nhwc(z_hat), mean=nhwc(mean),
              scale=nhwc(scale), y_hat=nhwc(y_hat), z_likelihood=nhwc(z_lik),
              y_likelihood=nhwc(y_lik), bits=bits, reconstruction=nhwc(reconstruction)[0])
