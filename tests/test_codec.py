"""The codec end to end: real range coding, the .hific container, the SavedModel in a process
without hific_tf, determinism across processes and thread counts, and bad input."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from conftest import REPO, random_image, run_hific, sample_photos
from hific_tf import bitstream, images, runtime
from hific_tf.errors import UsageError
from hific_tf.models import sources
from hific_tf.models.hific import model as model_lib
from hific_tf.serving import codec as codec_lib


def test_range_coded_latents_decode_exactly_and_cost_what_was_estimated(stage1_dir, photo_dir):
  model = sources.build_model(stage1_dir)
  model.hyperprior.build_coders()
  photo = images.load_rgb(photo_dir / "astronaut.png")[128:384, 128:384]
  x = tf.cast(photo, tf.float32)[None] / 255.
  y = model.encoder(x)
  estimate = model.hyperprior(y, training=False)
  compressed, y_hat = model.hyperprior.compress(y)
  decoded = model.hyperprior.decompress(compressed.y_strings, compressed.z_strings,
                                        compressed.y_shape, compressed.z_shape)
  np.testing.assert_array_equal(decoded.numpy(), y_hat.numpy())
  np.testing.assert_array_equal(estimate.y_hat.numpy(), y_hat.numpy())
  # Exactly quantized around the predicted means: y_hat - mu is an integer.
  z_hat = model.hyperprior.side_coder.quantize(model.hyperprior.analysis(y))
  loc, _ = model.hyperprior._parameters(z_hat, tf.shape(y)[1:3])
  offsets = (y_hat - loc).numpy()
  np.testing.assert_allclose(offsets, np.round(offsets), atol=1e-4)
  real_bits = 8 * (len(compressed.y_strings[0].numpy()) + len(compressed.z_strings[0].numpy()))
  estimated_bits = float(estimate.y_bits_quantized[0] + estimate.z_bits_quantized[0])
  assert abs(real_bits - estimated_bits) <= 0.02 * estimated_bits + 8 * 8, (real_bits,
                                                                           estimated_bits)


@pytest.mark.parametrize("shape", [(17, 31, 3), (64, 64, 3), (257, 129, 3)])
def test_round_trip_any_size(codec, shape):
  image = random_image(*shape)
  hific_file = codec.compress(image)
  data = hific_file.to_bytes()
  assert hific_file.overhead_bytes <= 64
  decoded = codec.decompress(bitstream.HificFile.from_bytes(data))
  assert decoded.shape == shape and decoded.dtype == np.uint8


def test_tiled_path_matches_the_whole_image_path(saved_model):
  """Windows of 64 pixels (4 latents, halos of 4) over a 300x451 photo: 5x8 windows each
  way. Encoding gives the same bytes; decoding is the same computation, but oneDNN picks
  kernels by shape, so float rounding may move a few values by one level."""
  from hific_tf.serving.codec import SavedModelCodec
  whole = SavedModelCodec(saved_model, tile=0)
  tiled = SavedModelCodec(saved_model, tile=64)
  image = sample_photos()["chelsea"]
  assert tiled._tile_latents(*image.shape[:2]) == 4
  whole_file, tiled_file = whole.compress(image), tiled.compress(image)
  assert tiled_file.to_bytes() == whole_file.to_bytes()
  difference = np.abs(tiled.decompress(whole_file).astype(int) -
                      whole.decompress(whole_file).astype(int))
  assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
  # The estimate is a separate function now, and still agrees with the real size.
  _, estimate = whole.compress(image, with_estimate=True)
  real_bits = 8 * (len(whole_file.y_string) + len(whole_file.z_string))
  assert abs(real_bits - estimate) <= 0.02 * estimate + 64


def test_reflect_pad_mirrors_any_distance():
  image = tf.reshape(tf.range(3 * 2), [3, 2, 1])
  padded = model_lib.reflect_pad(image, 8).numpy()[..., 0]
  assert padded.shape == (8, 8)
  np.testing.assert_array_equal(padded[:, 0], [0, 2, 4, 2, 0, 2, 4, 2])
  np.testing.assert_array_equal(padded[0], [0, 1, 0, 1, 0, 1, 0, 1])
  assert model_lib.reflect_pad(tf.zeros([1, 1, 3]), 64).shape == (64, 64, 3)


def _save(tmp_path, name, image, **kwargs):
  path = tmp_path / name
  image.save(path, **kwargs)
  return path


def test_any_input_kind_becomes_rgb(tmp_path):
  rgb = random_image(20, 30)
  gray = _save(tmp_path, "gray.png", Image.fromarray(rgb[..., 0]))
  assert images.load_rgb(gray).shape == (20, 30, 3)
  sixteen = _save(tmp_path, "16.png", Image.fromarray(rgb[..., 0].astype(np.uint16) * 257))
  np.testing.assert_array_equal(images.load_rgb(sixteen)[..., 0], rgb[..., 0])
  palette = _save(tmp_path, "p.png", Image.fromarray(rgb).convert("P"))
  assert images.load_rgb(palette).shape == (20, 30, 3)
  rgba = _save(tmp_path, "a.png", Image.fromarray(np.dstack([rgb, rgb[..., :1]])))
  with pytest.warns(UserWarning, match="alpha"):
    np.testing.assert_array_equal(images.load_rgb(rgba), rgb)
  rotated = Image.fromarray(rgb)
  exif = rotated.getexif()
  exif[0x0112] = 6  # Rotate 90 degrees clockwise when shown.
  jpeg = _save(tmp_path, "r.jpg", rotated, exif=exif, quality=95)
  assert images.load_rgb(jpeg).shape == (30, 20, 3)


def test_cli_round_trip_grayscale_and_rgba(saved_model, tmp_path):
  gray = _save(tmp_path, "gray.png", Image.fromarray(random_image(40, 50)[..., 0]))
  rgba = _save(tmp_path, "rgba.png", Image.fromarray(random_image(33, 70, 4)))
  for source in (gray, rgba):
    done = run_hific("compress", "--model", saved_model, source)
    if source == rgba:
      assert "alpha" in done.stderr
    run_hific("decompress", "--model", saved_model, source.with_suffix(".hific"),
              tmp_path / f"{source.stem}_out.png")
    out = np.asarray(Image.open(tmp_path / f"{source.stem}_out.png"))
    assert out.shape == np.asarray(Image.open(source)).shape[:2] + (3,)


def test_cli_folder_and_force(saved_model, tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  for i in range(3):
    Image.fromarray(random_image(64, 64, seed=i)).save(folder / f"{i}.png")
  run_hific("compress", "--model", saved_model, folder, tmp_path / "bits")
  assert sorted(p.name for p in (tmp_path / "bits").iterdir()) == ["0.hific", "1.hific",
                                                                  "2.hific"]
  done = run_hific("compress", "--model", saved_model, folder, tmp_path / "bits", check=False)
  assert done.returncode == 1 and "--force" in done.stderr
  run_hific("compress", "--model", saved_model, folder, tmp_path / "bits", "--force")
  run_hific("decompress", "--model", saved_model, tmp_path / "bits", tmp_path / "png")
  assert len(list((tmp_path / "png").glob("*.png"))) == 3


def test_verbose_compress_reports_rates_and_psnr(saved_model, tmp_path):
  source = _save(tmp_path, "x.png", Image.fromarray(random_image(64, 96)))
  done = run_hific("compress", "--model", saved_model, source, "--verbose")
  assert "estimated" in done.stdout and "real" in done.stdout and "PSNR" in done.stdout
  info = run_hific("info", source.with_suffix(".hific"))
  assert "96x64" in info.stdout and "bpp" in info.stdout


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, stage1_dir):
  """A differently initialised tiny model exported the same way: its files must be refused."""
  from hific_tf import configs
  from hific_tf.models.hific.model import HiFiC
  directory = tmp_path_factory.mktemp("other")
  tf.keras.utils.set_random_seed(123)
  model = HiFiC(configs.get_config("tiny-mselpips")).build_all()
  (directory / "config.json").write_text(model.config.to_json())
  sources.codec_checkpoint(model).save(str(directory / "checkpoints" / "ckpt"))
  out = directory / "codec"
  run_hific("export", "--model_dir", directory, "--out", out)
  return out


def test_bad_files_fail_with_one_line_and_leave_nothing(saved_model, other_model, tmp_path):
  source = _save(tmp_path, "x.png", Image.fromarray(random_image(64, 64)))
  run_hific("compress", "--model", saved_model, source)
  data = source.with_suffix(".hific").read_bytes()
  flipped = bytearray(data)
  flipped[len(data) // 2] ^= 0x40
  other = run_hific("compress", "--model", other_model, source, tmp_path / "other.hific")
  assert other.returncode == 0
  cases = {
      "truncated.hific": data[:len(data) - 7],
      "flipped.hific": bytes(flipped),
      "notahific.hific": b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
      "empty.hific": b"",
  }
  for name, content in cases.items():
    (tmp_path / name).write_bytes(content)
  cases["other.hific"] = None
  for name in cases:
    output = tmp_path / f"{name}.png"
    done = run_hific("decompress", "--model", saved_model, tmp_path / name, output, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (name, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("hific: error:"), (name, done.stderr)
    assert "Traceback" not in done.stderr
    assert not output.exists()
    assert not list(tmp_path.glob(".*partial")), name
  done = run_hific("compress", "--model", saved_model, tmp_path / "notahific.hific",
                   tmp_path / "n.hific", check=False)
  assert done.returncode == 1 and "not a readable image" in done.stderr
  assert not (tmp_path / "n.hific").exists()


def _reseal(hific_file, **changes):
  """A .hific file with header fields changed and a valid CRC: what an attacker can make."""
  import dataclasses
  return dataclasses.replace(hific_file, **changes).to_bytes()


def test_crafted_headers_are_refused_before_decoding(saved_model, tmp_path):
  """A CRC stops accidents, not attackers: the header is checked against the geometry."""
  import time
  source = _save(tmp_path, "x.png", Image.fromarray(random_image(64, 96)))
  run_hific("compress", "--model", saved_model, source)
  good = bitstream.HificFile.from_bytes(source.with_suffix(".hific").read_bytes())
  cases = {
      "huge_z.hific": _reseal(good, z_shape=(65535, good.z_shape[1])),
      "huge_y.hific": _reseal(good, y_shape=(good.y_shape[0], 65535)),
      "huge_image.hific": _reseal(good, height=4294967295),
      "other_size.hific": _reseal(good, width=good.width + 64),
      "zero.hific": _reseal(good, height=0),
      "over_limit.hific": _reseal(good, height=60000, width=60000, y_shape=(3750, 3750),
                                  z_shape=(938, 938)),
  }
  # In one process, as a server would: every crafted header is refused before decoding.
  loaded = codec_lib.SavedModelCodec(saved_model)
  for name, content in cases.items():
    start = time.perf_counter()
    with pytest.raises(bitstream.FormatError):
      loaded.decompress(bitstream.HificFile.from_bytes(content))
    assert time.perf_counter() - start < 1., name
  # And through the CLI: one line, exit 1, nothing written.
  (tmp_path / "huge_z.hific").write_bytes(cases["huge_z.hific"])
  done = run_hific("decompress", "--model", saved_model, tmp_path / "huge_z.hific",
                   tmp_path / "huge_z.png", check=False)
  assert done.returncode == 1, done.stderr
  assert done.stderr.count("\n") == 1 and "hific: error:" in done.stderr, done.stderr
  assert not (tmp_path / "huge_z.png").exists()
  # Within the limit the header's size is what comes out, exactly.
  with pytest.raises(bitstream.FormatError, match="do not fit"):
    bitstream.HificFile.from_bytes(cases["other_size.hific"]).validate()
  assert good.validate() is good


_STANDALONE = textwrap.dedent("""
    import hashlib, sys
    import tensorflow as tf
    import tensorflow_compression  # Registers the range coding ops; nothing else.
    threads = int(sys.argv[3])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    loaded = tf.saved_model.load(sys.argv[1])
    image = tf.io.decode_png(tf.io.read_file(sys.argv[2]), channels=3)
    compress = loaded.signatures["compress"]
    decompress = loaded.signatures["decompress"]
    rate = tf.constant(0.)  # The model's own rate.
    bits = compress(image=image, rate=rate)
    out = decompress(rate=rate, **{k: bits[k] for k in
                                   ("y_string", "z_string", "image_shape", "y_shape",
                                    "z_shape")})
    png = tf.io.encode_png(out["image"]).numpy()
    assert "hific_tf" not in sys.modules
    import numpy
    numpy.save(sys.argv[4], out["image"].numpy())
    print(hashlib.sha256(bits["y_string"].numpy() + bits["z_string"].numpy()).hexdigest(),
          hashlib.sha256(png).hexdigest(), out["image"].shape)
""")


def test_saved_model_runs_without_hific_tf_and_decodes_identically(saved_model, photo_dir,
                                                                   tmp_path):
  source = str(photo_dir / "chelsea.png")
  results, pixels = [], []
  for run, threads in enumerate((1, 2, 1)):
    out = tmp_path / f"pixels{run}.npy"
    done = subprocess.run([sys.executable, "-c", _STANDALONE, str(saved_model), source,
                           str(threads), str(out)], capture_output=True, text=True,
                          timeout=600, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    results.append(done.stdout.split())
    pixels.append(np.load(out).astype(int))
  # The bitstream is the same at any thread count, and a process decodes it exactly as
  # another process with the same thread count does.
  assert results[0][0] == results[1][0] == results[2][0]
  assert results[0] == results[2]
  assert results[0][2:] == ["(300,", "451,", "3)"]
  # Across thread counts the generator's pixels may differ by one level: where TensorFlow
  # runs Eigen convolutions (CPUs without AVX-512 VNNI or AMX, where it leaves oneDNN off),
  # the contraction's blocking follows the thread count, so sums round differently. The
  # hyperprior agrees either way (the same bits decode), which is what the format needs.
  assert np.abs(pixels[0] - pixels[1]).max() <= 1
  assert np.mean(pixels[0] != pixels[1]) < 1e-3


def test_saved_model_cli_lists_both_signatures(saved_model):
  stock = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  # The stock tool lists the signatures, then fails on tfc's ops (it never imports tfc);
  # bin/saved_model_cli registers them first and completes.
  for command in ([stock], [sys.executable, str(REPO / "bin" / "saved_model_cli")]):
    done = subprocess.run(command + ["show", "--all", "--dir", str(saved_model)],
                          capture_output=True, text=True, timeout=300)
    assert "signature_def['compress']" in done.stdout
    assert "signature_def['decompress']" in done.stdout
  assert done.returncode == 0, done.stderr[-2000:]
  assert "DT_UINT8" in done.stdout and "DT_STRING" in done.stdout


def test_bfloat16_generator_decodes_the_same_bits(stage1_dir, codec, tmp_path, photo_dir):
  out = tmp_path / "bf16"
  run_hific("export", "--model_dir", stage1_dir, "--out", out, "--generator_dtype",
            "mixed_bfloat16")
  stored = tf.train.load_checkpoint(str(out / "variables" / "variables"))
  assert tf.bfloat16 in set(stored.get_variable_to_dtype_map().values())  # A lean G.
  image = images.load_rgb(photo_dir / "coffee.png")
  f32_file = codec.compress(image)
  a = codec.decompress(f32_file)
  # The command reads the export's compute types before TensorFlow loads, and picks kernels
  # that run bfloat16 on this CPU (whichever it is).
  (tmp_path / "f32.hific").write_bytes(f32_file.to_bytes())
  run_hific("decompress", "--model", out, tmp_path / "f32.hific", tmp_path / "bf16.png")
  difference = np.abs(a.astype(int) - images.load_rgb(tmp_path / "bf16.png").astype(int))
  # Really bfloat16, and close to float32. Where TensorFlow's own kernels emulate bfloat16
  # (no native bfloat16 in the CPU), this 30-step model moves by up to about 6 levels.
  assert 0 < difference.mean() < (3. if runtime.native_bfloat16() else 8.)
  refusal = runtime.bfloat16_refusal("it")
  if refusal:  # This process runs oneDNN on a CPU without native bfloat16: one line, no crash.
    with pytest.raises(UsageError, match="AVX512-BF16"):
      codec_lib.SavedModelCodec(out)
    return
  bf16 = codec_lib.SavedModelCodec(out)
  assert f32_file.to_bytes() == bf16.compress(image).to_bytes()  # Hyperprior stays float32.
  difference = np.abs(a.astype(int) - bf16.decompress(f32_file).astype(int))
  assert 0 < difference.mean() < 3.


def _png_declaring(width, height):
  """A tiny PNG whose header declares width x height (a decompression bomb's header)."""
  import struct as struct_lib
  import zlib as zlib_lib
  def chunk(kind, body):
    return (struct_lib.pack(">I", len(body)) + kind + body +
            struct_lib.pack(">I", zlib_lib.crc32(kind + body)))
  header = struct_lib.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
          chunk(b"IDAT", zlib_lib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_hostile_and_odd_images_are_read_or_refused_in_one_line(tmp_path):
  rng = np.random.default_rng(0)
  good = Image.fromarray(rng.integers(0, 255, [40, 50, 3], np.uint8))
  good.convert("CMYK").save(tmp_path / "cmyk.jpg")
  Image.fromarray(rng.integers(0, 65535, [20, 30, 4], np.uint16).astype(np.uint16)[..., 0],
                  ).save(tmp_path / "gray16.png")
  frames = [Image.fromarray(rng.integers(0, 255, [16, 16, 3], np.uint8)) for _ in range(3)]
  frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
  Image.fromarray(np.zeros([1, 1, 3], np.uint8)).save(tmp_path / "one.png")
  for name, shape in (("cmyk.jpg", (40, 50, 3)), ("gray16.png", (20, 30, 3)),
                      ("animated.gif", (16, 16, 3)), ("one.png", (1, 1, 3))):
    assert images.load_rgb(tmp_path / name).shape == shape, name
  buffer = io.BytesIO()
  good.save(buffer, format="PNG")
  (tmp_path / "zero.png").write_bytes(b"")
  (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[:60])
  (tmp_path / "bomb.png").write_bytes(_png_declaring(60000, 60000))
  for name, message in (("zero.png", "not a readable image"),
                        ("truncated.png", "not a readable image"),
                        ("bomb.png", "too large to decode safely")):
    with pytest.raises(images.ImageError, match=message):
      images.load_rgb(tmp_path / name)


def test_images_over_the_limit_are_refused_before_encoding(saved_model, tmp_path):
  Image.fromarray(np.zeros([1, 70000, 3], np.uint8)).save(tmp_path / "wide.png")
  done = run_hific("compress", "--model", saved_model, tmp_path / "wide.png", check=False)
  assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
  assert "exceeds the limit" in done.stderr and not (tmp_path / "wide.hific").exists()


def test_a_slow_generator_never_makes_a_valid_file_look_corrupt(saved_model, monkeypatch):
  # The deadline bounds range decoding, the one step a crafted file can stretch; the
  # generator's time is the machine's. Here G takes longer than the whole deadline.
  import time

  from hific_tf.serving import guard
  codec = codec_lib.SavedModelCodec(saved_model)
  image = random_image(64, 96, seed=3)
  hific_file = codec.compress(image)
  expected = codec.decompress(hific_file)
  monkeypatch.setattr(guard, "BASE_SECONDS", 0.5)
  module = codec.module

  class SlowModule:
    def __getattr__(self, name):
      return getattr(module, name)

    @staticmethod
    def decompress(*args):
      time.sleep(1.5)
      return module.decompress(*args)

  codec.module = SlowModule()
  np.testing.assert_array_equal(codec.decompress(hific_file), expected)
  assert not codec.poisoned
