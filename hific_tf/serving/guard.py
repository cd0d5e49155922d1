"""A deadline around range decoding, the one step whose time a crafted file can stretch.

tensorflow-compression's range decoder codes values outside a table's range with an escape
symbol followed by an Elias-gamma code, and reads zeros once a string is used up. Its loop
`while (DecodeLinearly(...) == 0) ++n;` (cc/kernels/range_coder_kernels.cc, OverflowDecode)
therefore never ends when a string runs out right after an escape: a 77-byte .hific file whose
z string is the single byte 0x3e spins a CPU core forever (tests/test_fuzz.py keeps it). The
loop is inside tfc's C++ kernel, which we cannot patch, and a running TensorFlow kernel cannot
be cancelled. So the bound is structural: range decoding runs in its own thread and the caller
stops waiting at a deadline proportional to the number of symbols (an honest decode runs at
tens of millions of symbols per second). The stuck kernel keeps its thread; the codec then
refuses further decoding, and the CLI and `hific serve` exit or report unhealthy so that the
process is replaced (docs/SECURITY.md).

Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020, is the model these
files come from; the range coder is tfc's.
"""

import collections
import hashlib
import math
import threading

import numpy as np
import tensorflow as tf

from hific_tf import bitstream, runtime
from hific_tf.errors import UsageError

# Seconds: BASE, plus PER_SYMBOL for each symbol the header declares (range decoding runs at
# tens of millions of symbols per second). The deadline covers range decoding only, never the
# generator: G's time depends on the machine (70 s for a 3 MP hific-lo decode with emulated
# bfloat16), and a slow machine must not make a valid file look corrupt.
# The export version from which every kind's signatures take the rate (models/hific/gains.py;
# serving/codec.py's EXPORT_VERSION history).
RATE_EXPORT_VERSION = 4

BASE_SECONDS = 10.
PER_SYMBOL_SECONDS = 1e-6


class DecodeDeadlineError(bitstream.FormatError):
  """Range decoding outlived its deadline: a crafted or damaged payload."""


class DecoderPoisonedError(bitstream.FormatError):
  """An earlier deadline left a decoding kernel running; this process should be replaced."""


def rejected_payload_error():
  """tfc's range decoder checks that each string is consumed exactly; most damaged or crafted
  payloads fail that check, which is reported as this one line."""
  return bitstream.FormatError("corrupt .hific payload (the range decoder rejected the "
                               "latent strings)")


def _decoded_or_rejected(function):
  """function(), with tfc's rejection of a string (InvalidArgumentError) as one FormatError."""
  try:
    return function()
  except tf.errors.InvalidArgumentError:
    raise rejected_payload_error() from None


def deadline_for(symbols):
  return BASE_SECONDS + PER_SYMBOL_SECONDS * symbols


def call_with_deadline(function, seconds):
  """function() in a daemon thread; its result, its exception, or DecodeDeadlineError."""
  outcome = {}
  finished = threading.Event()

  def run():
    try:
      outcome["value"] = function()
    except BaseException as error:
      outcome["error"] = error
    finally:
      finished.set()

  threading.Thread(target=run, name="hific-range-decode", daemon=True).start()
  if not finished.wait(seconds):
    raise DecodeDeadlineError(
        f"range decoding did not finish within {seconds:.0f} s and was abandoned (its "
        "strings keep tfc's range decoder looping)")
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]


class GuardedDecoder:
  """What both codec clients do before and around range decoding (mixed into each)."""

  poisoned = False  # Set once a range decode outlived its deadline.
  preflight = None  # An isolation.IsolatedRangeDecoder: range decoding in a killable worker.

  def _read_info(self, info, max_pixels):
    """The limits and geometry a header is checked against, from a SavedModel's model_info."""
    self.info = info
    self.max_pixels = max_pixels
    self.fingerprint = bytes.fromhex(info["fingerprint"])
    self.config_name = info["config_name"]
    self.pad_multiple = int(info.get("pad_multiple", bitstream.DEFAULT_PAD_MULTIPLE))
    self.latent_downsampling = int(info.get("latent_downsampling",
                                            bitstream.DEFAULT_LATENT_DOWNSAMPLING))
    config = info.get("config", {})
    self.also_reads = tuple(bytes.fromhex(f) for f in config.get("reads_fingerprints", ()))
    # Exports before version 4 code at their model's own rate only.
    self.takes_rate = int(info.get("export_version", 0)) >= RATE_EXPORT_VERSION
    self.rate_range = tuple(config.get("rate_range", (-1.5, 1.5)))
    self.latent_channels = int(config.get("latent_channels", 0))
    self.hyper_channels = int(config.get("hyper_filters", 0))
    runtime.check_bfloat16(f"the codec {self.config_name} ({info.get('format', 'SavedModel')})",
                           (info.get("generator_dtype"), info.get("encoder_dtype")))

  # Files whose strings the preflight worker has range-decoded already (prove_range_decoding),
  # by digest: the decode that follows skips that step. A few, in arrival order.
  _PROVEN_KEPT = 64

  def prove_range_decoding(self, hific_file):
    """Range-decodes `hific_file`'s strings in the preflight worker, under the deadline.

    A server calls this before it takes a codec slot, so that a file that spins holds the
    worker for its deadline and never a slot that compress requests wait for. The decode of
    the same file that follows skips the check. Without a preflight worker, a no-op.
    """
    symbols = self._admit(hific_file)
    if self.preflight is None:
      return
    self.preflight.check(hific_file, deadline_for(symbols))
    proven = self.__dict__.setdefault("_proven", collections.OrderedDict())
    proven[hashlib.sha256(hific_file.to_bytes()).digest()] = True
    while len(proven) > self._PROVEN_KEPT:
      proven.popitem(last=False)

  def _preflight(self, hific_file, seconds):
    """The preflight worker's check, unless `prove_range_decoding` has made it already."""
    proven = self.__dict__.get("_proven", {})
    if proven.pop(hashlib.sha256(hific_file.to_bytes()).digest(), None) is None:
      self.preflight.check(hific_file, seconds)

  def range_decode_unguarded(self, hific_file):
    """The header checks and range decoding of `hific_file`, with no deadline of its own.

    For the isolation worker (isolation.py), whose parent holds the deadline and kills the
    whole process when it passes.
    """
    self._admit(hific_file)
    return _decoded_or_rejected(self._range_decoder(hific_file))

  # The rate `compress` codes at when given none: a preset's (models/sources.py), else 0.
  default_rate = 0.

  def checked_rate(self, rate):
    """`rate` as the header stores it (float32; None: the default rate), or a one-line
    refusal."""
    rate = float(np.float32(self.default_rate if rate is None else rate))
    if not math.isfinite(rate) or abs(rate) > bitstream.MAX_RATE:
      raise UsageError(f"rate {rate} is outside [-{bitstream.MAX_RATE:g}, "
                       f"{bitstream.MAX_RATE:g}]")
    if rate and not self.takes_rate:
      raise UsageError(
          f"this codec ({self.info.get('kind', 'codec')} export, version "
          f"{self.info.get('export_version', 1)}) codes only at its model's own rate, not at "
          f"rate {rate:g}: export it again with this hific_tf")
    return rate

  # Decoders with the realism knob (models/hific/realism.py) set this when they load.
  has_realism = False

  def checked_realism(self, realism):
    """R to decode at: the codec's default when None; a one-line refusal of an R outside
    [0, 1], or of any R but its own for a codec without the knob."""
    default = float(self.info.get("config", {}).get("default_realism", 0.))
    if realism is None:
      return default
    realism = float(realism)
    if not 0. <= realism <= 1.:  # NaN too.
      raise UsageError(f"realism must be between 0 and 1, got {realism:g}")
    if not self.has_realism and realism != default:
      raise UsageError(f"the codec {self.config_name} has no realism knob: it decodes at "
                       f"realism {default:g} only, not {realism:g}")
    return realism

  def rate_args(self, rate):
    """The rate argument of this codec's signatures: none for exports made before rates."""
    return (tf.constant(rate, tf.float32),) if self.takes_rate else ()

  def _admit(self, hific_file):
    """Header checks, then the number of symbols the header declares (for the deadline)."""
    hific_file.validate(self.max_pixels, self.pad_multiple, self.latent_downsampling)
    bitstream.check_fingerprint(hific_file, self.fingerprint, self.config_name,
                                self.also_reads)
    self.checked_rate(hific_file.rate)
    if self.poisoned:
      raise DecoderPoisonedError(
          "decoding is disabled in this process: an earlier crafted file left tfc's range "
          "decoder running (restart the process)")
    return (hific_file.y_shape[0] * hific_file.y_shape[1] * self.latent_channels +
            hific_file.z_shape[0] * hific_file.z_shape[1] * self.hyper_channels)

  def _range_decode(self, function, seconds, hific_file):
    """function() under the deadline; a rejected string becomes one FormatError line.

    With a `preflight` worker, the file's strings are range-decoded there first (a spinning
    one costs the worker, not this process), and then function() runs here without a thread.
    """
    if self.preflight is not None:
      self._preflight(hific_file, seconds)
      return _decoded_or_rejected(function)
    try:
      return call_with_deadline(lambda: _decoded_or_rejected(function), seconds)
    except DecodeDeadlineError:
      self.poisoned = True
      raise

  def _ensure_range_decoding_ends(self, hific_file, seconds):
    """Returns once `hific_file`'s strings are known to range-decode within `seconds`.

    The preflight worker proves it when there is one; else they are decoded here, under the
    deadline. Range decoding is deterministic, so a later decode of the same strings ends too.
    """
    if self.preflight is not None:
      self._preflight(hific_file, seconds)
    else:
      self._range_decode(self._range_decoder(hific_file), seconds, hific_file)
