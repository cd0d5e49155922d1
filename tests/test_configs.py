import pytest

from hific_tf import configs

PAPER = {"lo": (0.14, 2.0), "mi": (0.30, 1.0), "hi": (0.45, 0.5)}


def test_every_documented_config_loads():
  names = configs.list_configs()
  for rate in PAPER:
    assert f"hific-{rate}" in names and f"mselpips-{rate}" in names
  assert "tiny-mselpips" in names and "tiny-hific" in names
  for name in names:
    assert configs.get_config(name).name == name


@pytest.mark.parametrize("rate", sorted(PAPER))
def test_paper_numbers(rate):
  stage1, stage2 = configs.get_config(f"mselpips-{rate}"), configs.get_config(f"hific-{rate}")
  assert (stage1.stage, stage2.stage) == ("mselpips", "hific")
  assert (stage2.target_bpp, stage2.lambda_a) == PAPER[rate]
  assert stage2.lambda_b == 2 ** -4
  assert stage2.k_mse == pytest.approx(0.075 * 2 ** -5)
  assert (stage2.k_lpips, stage2.beta_gan) == (1.0, 0.15)
  assert stage2.warmup_target_factor == pytest.approx(0.20 / 0.14)
  assert (stage2.num_filters_base, stage2.num_residual_blocks, stage2.latent_channels,
          stage2.hyper_filters, stage2.num_scales) == (60, 9, 220, 320, 64)


def test_tiny_keeps_the_recipe_but_is_narrow():
  tiny, full = configs.get_config("tiny-hific"), configs.get_config("hific-lo")
  assert tiny.use_gan and tiny.num_filters_base < full.num_filters_base
  assert tiny.k_mse == full.k_mse and tiny.beta_gan == full.beta_gan


def test_unknown_config_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown config 'nope'.*hific-lo"):
    configs.get_config("nope")
