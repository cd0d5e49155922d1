"""The fastest correct way to run HiFiC on this machine, chosen before TensorFlow loads.

A HiFiC training step (Mentzer et al., NeurIPS 2020) is a few hundred convolutions, and which
kernels run them decides its cost more than anything in the model. Measured side by side on
the project's machines (bench/train_speed.py --compare, docs/PERFORMANCE.md):
- oneDNN was faster than TensorFlow's own CPU kernels on every x86 CPU tried (1.33x on an
  AVX2-only EPYC, 1.8x on an AVX-512 EPYC), but TensorFlow only turns it on by itself on
  CPUs with AVX512-VNNI, AVX512-BF16 or AMX. So hific_tf turns it on, unless the user set
  TF_ENABLE_ONEDNN_OPTS.
- bfloat16 pays only where the CPU computes it natively (AVX512-BF16 or AMX-BF16: 1.23x over
  float32 on the AVX-512 EPYC, about 1.7x on a Xeon with AMX); elsewhere TensorFlow emulates
  it about 5x slower than float32, and oneDNN's fused convolutions have no bfloat16 kernel
  there.
- On GPUs: float16 with loss scaling on Volta and Turing (V100, T4), bfloat16 from Ampere on.
- XLA (jit_compile) made the CPU step about 3x slower (its CPU convolutions are not oneDNN's),
  so it is on for GPUs only.

Nothing here imports TensorFlow except `describe`/`choose`, which look for GPUs.
"""

import ctypes
import ctypes.util
import os
import platform
import sys

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
CHOSEN_MARK = "HIFIC_TF_CHOSE_ONEDNN"  # Child processes inherit the choice, not a user's.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags():
  """The CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
  try:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
      for line in info:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def native_bfloat16(flags=None):
  """The flag that makes bfloat16 native on this CPU, or None."""
  flags = cpu_flags() if flags is None else flags
  return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


def configure_environment():
  """Turns oneDNN on for x86 CPUs unless the user decided; must run before TF is imported.

  Returns what was decided, for `describe`.
  """
  chosen = f"{ONEDNN_VARIABLE}=1 (oneDNN: faster than TensorFlow's own CPU kernels)"
  if ONEDNN_VARIABLE in os.environ:
    if os.environ.get(CHOSEN_MARK) == os.environ[ONEDNN_VARIABLE]:
      return chosen
    return f"{ONEDNN_VARIABLE}={os.environ[ONEDNN_VARIABLE]} (set by the user)"
  if "tensorflow" in sys.modules:
    return "TensorFlow was imported before hific_tf: its default kernels"
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return "TensorFlow's default kernels (not an x86 CPU)"
  os.environ[ONEDNN_VARIABLE] = os.environ[CHOSEN_MARK] = "1"
  return chosen


KERNELS = configure_environment()


def _gpu_capabilities():
  import tensorflow as tf
  found = []
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    found.append(details.get("compute_capability", (0, 0)))
  return found


def choose(precision="auto", jit_compile="auto", gpus=None):
  """(precision policy, jit_compile) for training on this machine; "auto" picks the fastest.

  `gpus`: the GPUs' compute capabilities, if known (looked up when None).
  """
  if gpus is None:
    gpus = _gpu_capabilities() if "auto" in (precision, jit_compile) else []
  if precision == "auto":
    if gpus:
      lowest = min(gpus)
      precision = ("mixed_bfloat16" if lowest >= (8, 0) else
                   "mixed_float16" if lowest >= (7, 0) else "float32")
    else:
      precision = "mixed_bfloat16" if native_bfloat16() else "float32"
  if jit_compile == "auto":
    jit_compile = bool(gpus)
  return precision, bool(jit_compile)


CODING_PRECISIONS = ("auto", "float32", "mixed_bfloat16")


def generator_dtype(precision="auto", gpus=None):
  """The compute type of the generator of a codec built here; "auto" picks the fastest.

  Only the generator: its pixels are all a bfloat16 decode changes (bench/precision.py
  measures by how much), while a bfloat16 encoder would make the same photo compress to
  different bytes on different machines, and the hyperprior, which derives the range coder's
  tables on both ends, is float32 whatever is asked. bfloat16 where the CPU computes it
  natively or on GPUs from Ampere on; float32 elsewhere (never emulated bfloat16, never
  float16, whose range a generator's activations can overflow).
  """
  if precision not in CODING_PRECISIONS:
    from hific_tf.errors import UsageError
    raise UsageError(f"--precision {precision}: one of {', '.join(CODING_PRECISIONS)}")
  if precision != "auto":
    return precision
  chosen, _ = choose("auto", jit_compile=False, gpus=gpus)
  return "float32" if chosen == "mixed_float16" else chosen


def describe(precision, jit_compile):
  """One line saying how this process computes, for the start of `hific train`."""
  bf16 = native_bfloat16()
  gpus = _gpu_capabilities()
  device = (f"{len(gpus)} GPU(s), compute capability {min(gpus)}" if gpus else
            f"CPU ({'native bfloat16: ' + bf16 if bf16 else 'no native bfloat16'})")
  return (f"{device}; precision {precision}; XLA {'on' if jit_compile else 'off'}; "
          f"kernels: {KERNELS}")


SYSTEM_ALLOCATOR_VARIABLE = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def use_system_allocator():
  """Makes oneDNN's kernels allocate with malloc, not TensorFlow's pool; before TF loads.

  TensorFlow's oneDNN kernels allocate from a BFC pool of their own that grows to the largest
  working set of every image size seen and never shrinks, so a long-running server ends up
  holding the sum of its worst moments. From malloc, freed buffers go back to the system
  (`release_memory`). Measured with bench/serve_soak.py (40 s, 3 clients, small-lo, a Xeon
  with AMX): peak server RSS 1236 MB against 1530 MB with the pool. The pool is faster (a
  768x512 encode took 22% more time with malloc, a decode 5%), so only `hific serve` makes
  this choice, and a user's own setting of the variable wins. Returns what was decided.
  """
  if SYSTEM_ALLOCATOR_VARIABLE in os.environ:
    return f"{SYSTEM_ALLOCATOR_VARIABLE}={os.environ[SYSTEM_ALLOCATOR_VARIABLE]} (set by the user)"
  if "tensorflow" in sys.modules:
    return "TensorFlow was imported before hific_tf: its oneDNN pool"
  os.environ[SYSTEM_ALLOCATOR_VARIABLE] = "1"
  return f"{SYSTEM_ALLOCATOR_VARIABLE}=1 (oneDNN allocates with malloc)"


# --- glibc's malloc, for processes that code images (no-ops elsewhere). ----------------------

def _glibc():
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name) if name else None
  except OSError:
    return None
  return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
# `hific serve --malloc_arenas`: glibc keeps one arena per thread by default (up to 8 per
# core), each holding freed megabytes of activations resident; two suffice for two workers.
MALLOC_ARENAS = 2
# Tensors of 1 MB and more get pages of their own, returned to the system when freed.
CODING_MMAP_THRESHOLD = 1 << 20


def limit_malloc_arenas(arenas):
  """Caps glibc's malloc arenas (M_ARENA_MAX) for threads that start from now on."""
  if _LIBC is not None:
    _LIBC.mallopt(M_ARENA_MAX, arenas)


def release_memory():
  """Returns freed heap pages to the system (glibc's malloc_trim)."""
  if _LIBC is not None:
    _LIBC.malloc_trim(0)


def return_large_buffers():
  """Makes large tensors come from, and go back to, the system (M_MMAP_THRESHOLD, 1 MB).

  glibc raises its mmap threshold after each large free, so that the next large buffers come
  from the heap and stay in it: coding a large image then holds the trunk's, the range
  decoder's and the windows' buffers at once (hific-lo's 2048x1536 decode: 2170 MB peak with
  glibc's default, 1957 MB with this, for about 10% more time; bench/codec_speed.py
  --memory_variants). Training keeps glibc's default, which avoids a page fault per tensor
  per step.
  """
  if _LIBC is not None:
    _LIBC.mallopt(M_MMAP_THRESHOLD, CODING_MMAP_THRESHOLD)
