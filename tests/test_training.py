"""The training objective and its mechanics: rate-target switch, D/G isolation, resumption,
tf.distribute equivalence, and the `hific train` command for both stages."""

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, TRAIN_STEPS, hific_here, run_hific
from hific_tf import configs
from hific_tf.models.hific.model import HiFiC
from hific_tf.models.hific.objectives import rate_weight, schedules
from hific_tf.training import data


def test_rate_weight_picks_lambda_a_above_target_and_lambda_b_below():
  config = configs.get_config("hific-lo")
  assert float(rate_weight(config, 0.20, 0.14)) == config.lambda_a
  assert float(rate_weight(config, 0.10, 0.14)) == config.lambda_b
  assert float(rate_weight(config, 0.20, 0.14, 0.5)) == config.lambda_a * 0.5


def test_schedules_follow_the_paper():
  config = configs.get_config("hific-mi")
  target, factor, lr = schedules(config, tf.constant(10, tf.int64))
  assert float(target) == pytest.approx(0.30 * 0.20 / 0.14) and float(factor) == 0.5
  assert float(lr) == pytest.approx(1e-4)
  target, factor, lr = schedules(config, tf.constant(60_000, tf.int64))
  assert float(target) == pytest.approx(0.30) and float(factor) == 1.
  _, _, lr = schedules(config, tf.constant(600_000, tf.int64))
  assert float(lr) == pytest.approx(1e-5)


def test_crop_target_steers_training_and_leaves_the_rung_target():
  config = configs.get_config("hific-lo").replace(crop_target_bpp=0.1, warmup_steps=0)
  target, _, _ = schedules(config, tf.constant(10, tf.int64))
  assert float(target) == pytest.approx(0.1) and config.target_bpp == 0.14
  assert configs.get_config("hific-lo").training_target_bpp == 0.14  # Default: the same.


def _values(variables):
  return [v.numpy().copy() for v in variables]


def _changed(before, variables):
  return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_stage2_steps_touch_only_their_own_variables():
  model = HiFiC(configs.get_config("tiny-hific")).build_all(64)
  model.compile()
  images = tf.random.uniform([4, 64, 64, 3], 0, 255, tf.int32)
  images = tf.cast(images, tf.uint8)
  d_images = images[1::2]
  d_vars = model.discriminator.variables  # Includes the spectral-norm power iteration state.
  codec_vars = model.transform_variables + model.entropy_variables

  codec_before, d_before = _values(codec_vars), _values(d_vars)
  model._discriminator_step(d_images, model.hyperprior.side_quantization_offset())
  assert not any(_changed(codec_before, codec_vars)), "the D step changed E/G/hyperprior"
  assert all(_changed(d_before[:len(model.discriminator_variables)],
                      model.discriminator_variables))

  # The G step alone: the generator half of train_step, without the D update.
  d_before = _values(d_vars)
  step = model.train_step
  original = model._discriminator_step
  model._discriminator_step = lambda *_: {}
  try:
    step(images)
  finally:
    model._discriminator_step = original
  assert not any(_changed(d_before, d_vars)), "the G step changed D"
  assert any(_changed(codec_before, model.transform_variables))
  assert int(model.step.numpy()) == 1


def test_stage1_step_runs_and_reports_every_term():
  model = HiFiC(configs.get_config("tiny-mselpips")).build_all(64)
  model.compile()
  logs = model.train_step(tf.zeros([2, 64, 64, 3], tf.uint8) + 128)
  for key in ("loss", "bpp_noisy", "bpp_quantized", "mse", "lpips", "rate_weight"):
    assert np.isfinite(float(logs[key])), key


def test_dataset_batch_k_does_not_depend_on_the_start(photo_dir):
  glob = f"{photo_dir}/*.png"
  from_zero = list(data.training_dataset(2, 64, 7, train_glob=glob).take(3))
  from_two = next(iter(data.training_dataset(2, 64, 7, train_glob=glob, start_step=2)))
  np.testing.assert_array_equal(from_zero[2].numpy(), from_two.numpy())
  assert not np.array_equal(from_zero[0].numpy(), from_zero[1].numpy())


def test_small_images_are_upscaled_before_cropping():
  image = tf.zeros([40, 300, 3], tf.uint8)
  crop = data.augment(image, 64, tf.constant([1, 2], tf.int64))
  assert crop.shape == (64, 64, 3)


def test_tfds_offline_path_gives_a_clear_error(tmp_path):
  with pytest.raises(data.DataError, match="not prepared"):
    data.training_dataset(2, 64, tfds_name="clic", tfds_data_dir=str(tmp_path))


_TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys, tensorflow as tf
    from hific_tf import configs
    from hific_tf.training import train
    kill_at = int(sys.argv[3])
    class Kill(tf.keras.callbacks.Callback):
      def on_train_batch_end(self, batch, logs=None):
        if kill_at and int(self.model.step.numpy()) == kill_at:
          os.kill(os.getpid(), signal.SIGKILL)
    train.train(configs.get_config("tiny-mselpips"), sys.argv[1], train_glob=sys.argv[2],
                steps=6, checkpoint_every=2, crop_size=64, batch_size=2, callbacks=[Kill()],
                verbose=0)
""")


def _train_subprocess(model_dir, glob, kill_at):
  return subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(model_dir), glob,
                         str(kill_at)], capture_output=True, text=True, timeout=600,
                        cwd=REPO)


def _final_weights(model_dir):
  from hific_tf.models import sources
  model = sources.build_model(model_dir)
  return int(tf.train.latest_checkpoint(str(model_dir / "checkpoints")).split("-")[-1]), [
      v.numpy() for v in model.variables]


@pytest.mark.e2e  # Three `hific train` processes.
def test_killed_run_resumes_to_the_same_step_and_weights(tmp_path, photo_dir):
  glob = f"{photo_dir}/*.png"
  straight = _train_subprocess(tmp_path / "straight", glob, 0)
  assert straight.returncode == 0, straight.stderr[-2000:]
  killed = _train_subprocess(tmp_path / "killed", glob, 5)
  assert killed.returncode == -signal.SIGKILL
  assert (tmp_path / "killed" / "backup").is_dir()
  resumed = _train_subprocess(tmp_path / "killed", glob, 0)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  step_a, weights_a = _final_weights(tmp_path / "straight")
  step_b, weights_b = _final_weights(tmp_path / "killed")
  assert step_a == step_b == 6
  for a, b in zip(weights_a, weights_b):
    np.testing.assert_array_equal(a, b)


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from hific_tf import configs
    from hific_tf.models.hific.model import HiFiC
    images = tf.cast(tf.random.stateless_uniform([4, 64, 64, 3], [1, 2], 0, 256, tf.int32),
                     tf.uint8)
    results = {}
    for name, strategy in [("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
      tf.keras.utils.set_random_seed(0)
      with strategy.scope():
        model = HiFiC(configs.get_config(sys.argv[1]).replace(learning_rate=1e-4)).build_all(64)
        model.compile()
      dataset = strategy.experimental_distribute_dataset(
          tf.data.Dataset.from_tensors(images))
      logs = strategy.run(model.train_step, args=(next(iter(dataset)),))
      logs = {k: float(strategy.reduce("MEAN", v, axis=None)) for k, v in logs.items()}
      variables = model.transform_variables + model.entropy_variables + (
          model.discriminator.variables if model.discriminator is not None else [])
      weights = np.concatenate([v.numpy().ravel() for v in variables])  # Not the metrics.
      results[name] = (logs, weights)
    (a_logs, a_w), (b_logs, b_w) = results["single"], results["mirrored"]
    print(json.dumps({"logs": [a_logs, b_logs],
                      "weight_error": float(np.linalg.norm(a_w - b_w) / np.linalg.norm(a_w)),
                      "changed": float(np.abs(a_w).max())}))
""")


@pytest.mark.parametrize("config", ["tiny-mselpips", "tiny-hific"])
def test_mirrored_strategy_step_equals_single_device_step(config):
  import json
  done = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, config], capture_output=True,
                        text=True, timeout=600, cwd=REPO)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  single, mirrored = result["logs"]
  for key in ("loss", "bpp_noisy", "mse", "lpips"):
    assert mirrored[key] == pytest.approx(single[key], rel=1e-5), key
  assert result["weight_error"] < 1e-5  # Relative L2 error over all weights after the step.


def test_hific_train_both_stages_from_the_command_line(stage1_dir, photo_dir, tmp_path):
  assert (stage1_dir / "config.json").is_file()
  assert tf.train.latest_checkpoint(str(stage1_dir / "checkpoints")).endswith(f"-{TRAIN_STEPS}")
  assert list((stage1_dir / "logs").rglob("events.out.tfevents*"))
  stage2 = tmp_path / "stage2"
  done = run_hific("train", "--config", "tiny-hific", "--init_from", stage1_dir,
                   "--train_glob", f"{photo_dir}/*.png", "--steps", TRAIN_STEPS,
                   "--checkpoint_every", TRAIN_STEPS, "--model_dir", stage2)
  assert "d_real" in done.stdout + done.stderr
  assert tf.train.latest_checkpoint(str(stage2 / "checkpoints")).endswith(f"-{TRAIN_STEPS}")


@pytest.mark.parametrize("args,code,message", [
    (["--config", "tiny-mselpips", "--train_glob", "/nonexistent/*.png"], 1, "no images match"),
    (["--config", "no-such-config", "--train_glob", "x"], 2, "unknown config"),
    (["--train_glob", "x"], 2, "required"),
])
def test_bad_training_input_exits_with_one_line(args, code, message, tmp_path):
  done = hific_here("train", "--model_dir", tmp_path / "m", *args, check=False)
  assert done.returncode == code
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("hific: error:") and message in lines[0]


def _generator_change_after_one_step(loss_scale, loss_factor):
  """Fraction of G's first kernel that one mixed_float16 step changes."""
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    config = configs.get_config("tiny-mselpips")
    config = config.replace(lambda_a=config.lambda_a * loss_factor,
                            lambda_b=config.lambda_b * loss_factor,
                            k_mse=config.k_mse * loss_factor, k_lpips=config.k_lpips * loss_factor)
    tf.keras.utils.set_random_seed(0)
    model = HiFiC(config).build_all(64)
    model.compile(loss_scale=loss_scale)
    kernel = model.generator.head.layers[1].kernel
    before = kernel.numpy()
    images = tf.cast(tf.random.stateless_uniform([2, 64, 64, 3], [3, 4], 0, 256, tf.int32),
                     tf.uint8)
    logs = model.train_step(images)
    assert np.isfinite(float(logs["loss"]))
    return float(np.mean(kernel.numpy() != before))
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")


def test_float16_gradients_underflow_without_loss_scaling_and_train_with_it():
  # Loss weights 1e-7 of the config's: the gradients reaching G's float16 activations fall
  # below float16's smallest subnormal (6e-8) and flush to zero, so G does not move. Dynamic
  # loss scaling (2^15 to start) lifts them back into range; Adam's step does not depend on
  # the loss's scale, so G then moves as it does at the config's own weights.
  assert _generator_change_after_one_step(loss_scale=False, loss_factor=1e-7) < 0.01
  assert _generator_change_after_one_step(loss_scale=True, loss_factor=1e-7) > 0.5
  assert _generator_change_after_one_step(loss_scale=False, loss_factor=1.) > 0.5


_FLOAT16_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, tensorflow as tf
    from hific_tf import configs
    from hific_tf.models.hific.model import HiFiC
    images = tf.cast(tf.random.stateless_uniform([4, 64, 64, 3], [1, 2], 0, 256, tf.int32),
                     tf.uint8)
    runs = {}
    for precision in sys.argv[1].split(","):  # One process, one model per policy.
      tf.keras.mixed_precision.set_global_policy(precision)
      tf.keras.utils.set_random_seed(0)
      model = HiFiC(configs.get_config("tiny-hific")).build_all(64)
      model.compile()
      step = tf.function(model.train_step)
      losses = []
      for _ in range(int(sys.argv[2])):
        for tracker in model.metrics:
          tracker.reset_state()
        losses.append(float(step(images)["loss"]))
      runs[precision] = losses
    print(json.dumps(runs))
""")


def test_float16_training_tracks_float32():
  done = subprocess.run([sys.executable, "-c", _FLOAT16_SCRIPT, "float32,mixed_float16", "20"],
                        capture_output=True, text=True, timeout=900, cwd=REPO)
  assert done.returncode == 0, done.stderr[-3000:]
  runs = json.loads(done.stdout.strip().splitlines()[-1])
  float32, float16 = np.array(runs["float32"]), np.array(runs["mixed_float16"])
  assert np.isfinite(float16).all()
  # Dynamic loss scaling starts at 2^15, skips the steps whose gradients overflow (MSE on
  # [0, 255] values has large gradients) and halves the scale each time, so float16 starts a
  # few steps late; then it learns like float32. The skipped steps still count in Adam's
  # bias correction, which makes the first real steps shorter: float16 trails by 10-20%.
  assert float16[-1] < 0.5 * float16[0]
  first = int(np.argmax(float16 < float16[0] * 0.99))  # The loss after the first real update.
  assert 0 < first < 12
  np.testing.assert_allclose(float16[first:first + 8], float32[1:9], rtol=0.25)


_MULTI_WORKER_SCRIPT = textwrap.dedent("""
    import json, os, sys, numpy as np, tensorflow as tf
    config_name, out = sys.argv[1], sys.argv[2]
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if "TF_CONFIG" in os.environ
                else tf.distribute.OneDeviceStrategy("/cpu:0"))
    from hific_tf import configs
    from hific_tf.models.hific.model import HiFiC
    images = tf.cast(tf.random.stateless_uniform([4, 64, 64, 3], [1, 2], 0, 256, tf.int32),
                     tf.uint8)
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
      model = HiFiC(configs.get_config(config_name).replace(learning_rate=1e-4)).build_all(64)
      model.compile()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensors(images).unbatch().batch(4).with_options(options)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    logs = strategy.run(tf.function(model.train_step), args=(batch,))
    logs = {k: float(strategy.reduce("MEAN", v, axis=None)) for k, v in logs.items()}
    variables = model.transform_variables + model.entropy_variables + (
        model.discriminator.variables if model.discriminator is not None else [])
    np.save(out, np.concatenate([v.numpy().ravel() for v in variables]))
    print(json.dumps(logs))
""")


def _free_ports(count):
  import socket
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.parametrize("config", ["tiny-hific"])
def test_two_worker_processes_equal_one_device(config, tmp_path):
  # The path a user takes across machines: TF_CONFIG and MultiWorkerMirroredStrategy, here
  # two processes on localhost, each with half of the global batch.
  import json
  import os
  cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                 "task": {"type": "worker", "index": index}}))
    workers.append(subprocess.Popen(
        [sys.executable, "-c", _MULTI_WORKER_SCRIPT, config, str(tmp_path / f"w{index}.npy")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = [w.communicate(timeout=900) for w in workers]
  for worker, (_, stderr) in zip(workers, outputs):
    assert worker.returncode == 0, stderr[-3000:]
  single = subprocess.run([sys.executable, "-c", _MULTI_WORKER_SCRIPT, config,
                           str(tmp_path / "single.npy")], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
  assert single.returncode == 0, single.stderr[-3000:]
  single_logs = json.loads(single.stdout.strip().splitlines()[-1])
  worker_logs = json.loads(outputs[0][0].strip().splitlines()[-1])
  for key in ("loss", "bpp_noisy", "mse", "lpips"):
    assert worker_logs[key] == pytest.approx(single_logs[key], rel=1e-5), key
  reference = np.load(tmp_path / "single.npy")
  for index in range(2):
    weights = np.load(tmp_path / f"w{index}.npy")
    assert np.linalg.norm(weights - reference) / np.linalg.norm(reference) < 1e-5


def test_random_flip_mirrors_some_crops_and_keeps_the_rest():
  image = tf.constant(np.random.default_rng(0).integers(0, 255, [300, 400, 3], np.uint8))
  same, mirrored = 0, 0
  for index in range(16):
    seed = tf.constant([1, index], tf.int64)
    plain = data.augment(image, 64, seed).numpy()
    flipped = data.augment(image, 64, seed, random_flip=True).numpy()
    same += int(np.array_equal(plain, flipped))
    mirrored += int(np.array_equal(plain[:, ::-1], flipped))
  assert same + mirrored == 16 and 2 <= mirrored <= 14


def test_a_collapsed_epoch_rolls_the_codec_back_to_its_checkpoint(tmp_path):
  # A real model and a real checkpoint; then weights as a collapsed step leaves them.
  from hific_tf import configs
  from hific_tf.models import sources
  from hific_tf.training import train
  model = HiFiC(configs.get_config("tiny-hific")).build_all()
  manager = tf.train.CheckpointManager(sources.codec_checkpoint(model),
                                       str(tmp_path / "checkpoints"), max_to_keep=3)
  manager.save(checkpoint_number=50)
  good = [v.numpy().copy() for _, v in model.codec_variables()]
  good_d = [v.numpy().copy() for _, v in model.discriminator_state()]
  model.compile()
  lines = []
  guard = train.DivergenceGuard(tmp_path, log=lines.append)
  guard.set_model(model)
  for psnr in (27.8, 28.1, 27.9):
    guard.on_epoch_end(0, {"psnr": psnr})
  for _, variable in list(model.codec_variables()) + list(model.discriminator_state()):
    variable.assign(variable + 1.)
  guard.on_epoch_end(3, {"psnr": 26.0})  # Within 3 dB of the median: no rollback.
  assert guard.rollbacks == 0
  guard.on_epoch_end(4, {"psnr": 20.8})
  assert guard.rollbacks == 1 and "rolled back to ckpt-50" in lines[0]
  for before, (_, variable) in zip(good, model.codec_variables()):
    np.testing.assert_array_equal(variable.numpy(), before)
  for before, (_, variable) in zip(good_d, model.discriminator_state()):
    np.testing.assert_array_equal(variable.numpy(), before)
  # A resumed run (a new process) is guarded from its first epoch: the PSNRs were kept.
  resumed = train.DivergenceGuard(tmp_path, log=lines.append)
  resumed.set_model(model)
  assert resumed.history == [27.8, 28.1, 27.9, 26.0]
  for _, variable in model.codec_variables():
    variable.assign(variable + 1.)
  resumed.on_epoch_end(0, {"psnr": 23.4})
  assert resumed.rollbacks == 1
  for before, (_, variable) in zip(good, model.codec_variables()):
    np.testing.assert_array_equal(variable.numpy(), before)
  (tmp_path / train.DivergenceGuard.HISTORY).write_text("{not json")
  assert train.DivergenceGuard(tmp_path).history == []
