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
# The CPU flags hific_tf acts on, in place of /proc/cpuinfo's (space-separated): lets the
# test suite take the decisions an AVX2-only CPU takes on whatever machine it runs on.
CPU_FLAGS_VARIABLE = "HIFIC_TF_CPU_FLAGS"


def cpu_flags():
  """The CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
  if CPU_FLAGS_VARIABLE in os.environ:
    return frozenset(os.environ[CPU_FLAGS_VARIABLE].split())
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


def onednn_chosen_here():
  """Whether oneDNN is on because hific_tf chose it (not the user, not TensorFlow)."""
  return os.environ.get(CHOSEN_MARK) == "1" and os.environ.get(ONEDNN_VARIABLE) == "1"


def kernels_for_bfloat16():
  """Makes a process that will compute in bfloat16 use kernels that can; before TF loads.

  oneDNN's fused convolutions (which TensorFlow's graph optimizer makes of every conv + bias
  in a tf.function) have bfloat16 kernels only on CPUs with AVX512-BF16 or AMX-BF16;
  elsewhere the graph fails with "Value for attr 'T' of bfloat16 is not in the list of
  allowed values". TensorFlow's own kernels run bfloat16 on any x86 CPU, emulated (about 3x
  slower than float32 on an AVX2-only EPYC, docs/PERFORMANCE.md). So where this CPU has no
  native bfloat16 and oneDNN is on by hific_tf's choice, it is turned off for this process.
  A user's own TF_ENABLE_ONEDNN_OPTS=1 is kept (`bfloat16_refusal` then explains).
  Returns what was decided.
  """
  global KERNELS
  if native_bfloat16() or not onednn_chosen_here() or "tensorflow" in sys.modules:
    return KERNELS
  os.environ[ONEDNN_VARIABLE] = os.environ[CHOSEN_MARK] = "0"
  KERNELS = (f"{ONEDNN_VARIABLE}=0 (TensorFlow's own kernels: bfloat16 was asked for and "
             "this CPU has no native bfloat16, which oneDNN needs)")
  return KERNELS


def onednn_enabled():
  """Whether this process's TensorFlow runs oneDNN's kernels (imports TensorFlow)."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import
  return bool(_pywrap_util_port.IsMklEnabled())


def bfloat16_refusal(what, flags=None, onednn=None):
  """One line saying why `what` cannot compute in bfloat16 in this process, or None.

  `flags` and `onednn` default to this CPU's and this process's (onednn_enabled).
  """
  flags = cpu_flags() if flags is None else flags
  if native_bfloat16(flags) or platform.machine().lower() not in ("x86_64", "amd64"):
    return None
  if not (onednn_enabled() if onednn is None else onednn):
    return None
  return (f"{what} computes in bfloat16, which oneDNN's kernels cannot run on this CPU (it "
          f"has neither {' nor '.join(f.upper().replace('_', '-') for f in NATIVE_BF16_FLAGS)})"
          f": use float32 (--precision float32), or set {ONEDNN_VARIABLE}=0 for TensorFlow's "
          "own kernels (bfloat16 emulated, about 3x slower)")


def check_bfloat16(what, dtypes):
  """Raises UsageError (one line) if any of `dtypes` is bfloat16 and cannot run here."""
  if not any("bfloat16" in str(dtype) for dtype in dtypes):
    return
  refusal = bfloat16_refusal(what)
  if refusal:
    from hific_tf.errors import UsageError
    raise UsageError(refusal)


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

  Only the generator: its pixels are all a bfloat16 decode changes (bench/codec_speed.py --held_out precision
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
  if not bf16 and onednn_enabled() and not onednn_chosen_here():
    bf16 = (f"no native bfloat16: bfloat16 refused while {ONEDNN_VARIABLE}=1 is set")
  elif not bf16 and onednn_enabled():
    bf16 = ("no native bfloat16: a command asking for bfloat16 turns oneDNN off and runs it "
            "emulated on TensorFlow's own kernels")
  elif not bf16:
    bf16 = "no native bfloat16: bfloat16 emulated on TensorFlow's own kernels"
  gpus = _gpu_capabilities()
  device = (f"{len(gpus)} GPU(s), compute capability {min(gpus)}" if gpus else
            f"CPU ({bf16 if bf16.startswith('no ') else 'native bfloat16: ' + bf16})")
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
