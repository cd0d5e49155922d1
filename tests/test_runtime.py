"""The machine-dependent choices: oneDNN before TensorFlow loads, bfloat16 only where native."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, run_hific
from hific_tf import runtime
from hific_tf.errors import UsageError


def test_bfloat16_only_where_the_cpu_computes_it():
  assert runtime.native_bfloat16(frozenset({"avx2", "fma"})) is None
  assert runtime.native_bfloat16(frozenset({"avx512f", "avx512_bf16"})) == "avx512_bf16"
  assert runtime.native_bfloat16(frozenset({"amx_bf16", "amx_tile"})) == "amx_bf16"
  precision, jit = runtime.choose()
  assert jit is False  # No GPU here: XLA was 3x slower on CPUs.
  expected = "mixed_bfloat16" if runtime.native_bfloat16() else "float32"
  assert precision == expected
  assert runtime.choose("float32", False) == ("float32", False)


def test_generator_dtype_for_coding():
  """Coding asks for bfloat16 only where it is native, never float16; explicit choices stay."""
  expected = "mixed_bfloat16" if runtime.native_bfloat16() else "float32"
  assert runtime.generator_dtype("auto", gpus=[]) == expected
  assert runtime.generator_dtype("auto", gpus=[(8, 0)]) == "mixed_bfloat16"
  assert runtime.generator_dtype("auto", gpus=[(7, 5), (8, 6)]) == "float32"  # No float16.
  assert runtime.generator_dtype("float32") == "float32"
  assert runtime.generator_dtype("mixed_bfloat16", gpus=[]) == "mixed_bfloat16"
  with pytest.raises(UsageError, match="--precision"):
    runtime.generator_dtype("mixed_float16")


def _fresh_python(code, env, unset):
  """What `code` prints in a fresh Python, with `unset` removed from this environment and
  `env` added."""
  environment = {k: v for k, v in os.environ.items() if k not in unset}
  environment.update(env)
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=environment, cwd=REPO, check=True)
  return done.stdout.strip()


def _kernels(env):
  code = ("import hific_tf, os; from hific_tf import runtime; "
          "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), '|', runtime.KERNELS)")
  return _fresh_python(code, env, ("TF_ENABLE_ONEDNN_OPTS", runtime.CHOSEN_MARK))


def test_onednn_is_chosen_before_tensorflow_loads_unless_the_user_decided():
  chosen = _kernels({})
  assert chosen.startswith("1 |") and "set by the user" not in chosen
  assert _kernels({"TF_ENABLE_ONEDNN_OPTS": "0"}).startswith("0 |")
  assert "set by the user" in _kernels({"TF_ENABLE_ONEDNN_OPTS": "0"})
  # A child of a process that chose (the ladder's trainers) reports the choice as hific_tf's.
  assert "set by the user" not in _kernels({"TF_ENABLE_ONEDNN_OPTS": "1",
                                            runtime.CHOSEN_MARK: "1"})


def test_hific_info_system_names_the_choice():
  out = run_hific("info", "--system").stdout
  assert "precision" in out and "kernels" in out and "XLA" in out
  assert f"generator {runtime.generator_dtype()}" in out


def _allocator(env):
  code = ("from hific_tf import runtime; import os; decided = runtime.use_system_allocator(); "
          "import tensorflow; print(os.environ.get(runtime.SYSTEM_ALLOCATOR_VARIABLE), '|', "
          "decided)")
  return _fresh_python(code, env, (runtime.SYSTEM_ALLOCATOR_VARIABLE,))


def test_the_server_allocates_with_malloc_unless_the_user_decided():
  # `hific serve` is long-lived: oneDNN's own pool would keep every past peak (docs/SERVING.md).
  assert _allocator({}).startswith("1 |")
  assert _allocator({runtime.SYSTEM_ALLOCATOR_VARIABLE: "0"}) == (
      f"0 | {runtime.SYSTEM_ALLOCATOR_VARIABLE}=0 (set by the user)")


def test_bfloat16_refusal_names_the_missing_feature():
  avx2 = frozenset({"avx2", "fma"})
  line = runtime.bfloat16_refusal("decoding", flags=avx2, onednn=True)
  assert "AVX512-BF16" in line and "AMX-BF16" in line and "\n" not in line
  assert "TF_ENABLE_ONEDNN_OPTS=0" in line and "--precision float32" in line
  assert runtime.bfloat16_refusal("decoding", flags=avx2, onednn=False) is None
  assert runtime.bfloat16_refusal("decoding", flags=frozenset({"avx512_bf16"}),
                                  onednn=True) is None


def test_asking_for_bfloat16_turns_onednn_off_only_where_it_cannot_run_it():
  code = ("import os; from hific_tf import runtime; runtime.kernels_for_bfloat16(); "
          "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), '|', runtime.KERNELS)")
  unset = ("TF_ENABLE_ONEDNN_OPTS", runtime.CHOSEN_MARK)
  emulated = _fresh_python(code, {runtime.CPU_FLAGS_VARIABLE: "avx2 fma"}, unset)
  assert emulated.startswith("0 |") and "own kernels" in emulated
  native = _fresh_python(code, {runtime.CPU_FLAGS_VARIABLE: "avx2 avx512_bf16"}, unset)
  assert native.startswith("1 |")
  users = _fresh_python(code, {runtime.CPU_FLAGS_VARIABLE: "avx2 fma",
                               "TF_ENABLE_ONEDNN_OPTS": "1"}, unset)
  assert users.startswith("1 |") and "set by the user" in users  # Then refused in one line.
