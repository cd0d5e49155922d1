"""Range decoding in a worker process that can be killed: a spinning decode costs one request.

tensorflow-compression's range decoder can loop forever on a crafted string (guard.py), and a
running TensorFlow kernel cannot be cancelled: in one process, the stuck kernel keeps its
core and the codec must refuse all further decoding. A server therefore first range-decodes
each file in a worker process, under the deadline. Range decoding is deterministic, so a
file whose strings finish there cannot spin when the server then decodes it in-process (the
generator included); a file that outlives the deadline gets its worker killed and replaced,
and the request a one-line 400. Nothing is left degraded.

The worker loads the same SavedModel (a few hundred MB) and runs only range decoding and the
hyper-synthesis, a few ms per file: no measurable cost per request (bench/isolation_cost.py of
hific_tf 0.1.0).
"""

import multiprocessing
import os
import threading
import time

from hific_tf import bitstream
from hific_tf.errors import HificError
from hific_tf.serving import guard

# Loading TensorFlow and the SavedModel in a new worker: not counted against any file.
STARTUP_SECONDS = 300.


class WorkerDiedError(bitstream.FormatError):
  """The worker process died on a file (a crash in a decoding kernel)."""


def _worker(directory, max_pixels, connection):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from hific_tf.serving import resolve
  codec = resolve.load_codec(directory, max_pixels)
  connection.send(("ready", None))
  while True:
    try:
      data = connection.recv()
    except EOFError:
      return
    try:
      codec.range_decode_unguarded(bitstream.HificFile.from_bytes(data))
      connection.send(("ok", None))
    except HificError as error:
      connection.send(("error", str(error).splitlines()[0]))


class IsolatedRangeDecoder:
  """One worker process, replaced whenever a file outlives its deadline or kills it."""

  def __init__(self, directory, max_pixels=bitstream.DEFAULT_MAX_PIXELS):
    self.directory = str(directory)
    self.max_pixels = max_pixels
    self.context = multiprocessing.get_context("spawn")
    self.lock = threading.Lock()
    self.replaced = 0  # Workers killed and replaced so far.
    self._start()
    self._await_ready()

  def _start(self):
    parent, child = self.context.Pipe()
    self.process = self.context.Process(target=_worker, name="hific-range-decoder",
                                        args=(self.directory, self.max_pixels, child),
                                        daemon=True)
    self.process.start()
    child.close()
    self.connection = parent
    self.ready = False

  def _await_ready(self):
    if self.ready:
      return
    if not self.connection.poll(STARTUP_SECONDS):
      raise HificError(f"the range-decoding worker did not start within "
                       f"{STARTUP_SECONDS:.0f} s")
    message, _ = self.connection.recv()
    self.ready = message == "ready"

  def _replace(self):
    self.process.kill()
    self.process.join()
    self.connection.close()
    self.replaced += 1
    self._start()  # Loads in the background; the next request waits for it, not this one.

  def check(self, hific_file, seconds):
    """Returns if `hific_file`'s strings range-decode; else the one-line error, as a 400."""
    with self.lock:
      self._await_ready()
      start = time.monotonic()
      try:
        self.connection.send(hific_file.to_bytes())
        finished = self.connection.poll(seconds)
        outcome = self.connection.recv() if finished else None
      except (EOFError, OSError):
        self._replace()
        raise WorkerDiedError("corrupt .hific payload (the range decoder crashed on it)") \
            from None
      if outcome is None:
        self._replace()
        raise guard.DecodeDeadlineError(
            f"range decoding did not finish within {time.monotonic() - start:.0f} s; its "
            "worker was replaced (the strings keep tfc's range decoder looping)")
      status, message = outcome
      if status != "ok":
        raise bitstream.FormatError(message)

  def close(self):
    self.process.kill()
    self.process.join()
