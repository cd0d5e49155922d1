"""`hific serve`: HiFiC over HTTP, and a web page that compares it to JPEG and AVIF.

One codec per server: a bundled codec, a full SavedModel or a `--serving` SavedModel (then
the range coding runs here and the transforms in the loaded stock-op model). The endpoints:

  GET  /                the comparison page (hific_tf/serving/web: plain HTML, CSS and JS)
  GET  /health          {"status": "ok", "model": ..., "fingerprint": ...}; range decoding
                        runs first in a worker process that a spinning file gets killed and
                        replaced (serving/isolation.py), so the server stays "ok"; with
                        --in_process_decoding, 503 "degraded" once a crafted file left a
                        range decoder spinning (serving/guard.py)
  POST /compress        image bytes -> .hific bytes
  POST /decompress      .hific bytes -> PNG bytes
  POST /compare         image bytes -> JSON: HiFiC, JPEG and AVIF at the same file size,
                        each with bytes, bpp, PSNR, LPIPS and the decoded PNG (base64)

Uploads are read in chunks and refused past `max_upload_bytes` (413) before they are held
whole; images and .hific headers go through the same checks as the CLI (one-line 400s), with
per-endpoint pixel limits (4 MP by default: a couple of seconds per request on 2 cores).
The codec runs in worker threads, at most `workers` at a time; a request that waits
`queue_seconds` for one is shed (429, Retry-After), and one that takes longer than
`request_seconds` is answered 503. Memory is bounded by a formula of `workers` and the pixel
limits (docs/SERVING.md): glibc's malloc is held to a few arenas and trimmed after each
request, or freed activations of the convolutions stay resident.

The paper: Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020.
"""

import asyncio
import base64
import contextlib
import io
import pathlib
import signal
import sys
import threading
import time

from hific_tf import bitstream, runtime
from hific_tf import images as images_lib
from hific_tf.errors import HificError, UsageError
from hific_tf.measure import classical, metrics
from hific_tf.models.hific.latent_search import EffortError as EffortTimeout
from hific_tf.serving import guard

WEB_DIR = pathlib.Path(__file__).parent / "web"
DEFAULT_MAX_UPLOAD_BYTES = 32 << 20
# /compare runs LPIPS and two rate searches per request: about 4 s per megapixel here.
DEFAULT_COMPARE_MAX_PIXELS = 4_000_000
# /compress and /decompress: 4 MP takes 1.3 s and 2.6 s with small-lo on one idle 2-core
# machine (AMD EPYC, 2026), so a request stays within seconds with a neighbour running.
DEFAULT_MAX_PIXELS = 4_000_000
# A request that has not finished in this time is answered 503 (its worker finishes and
# frees its slot; the pixel limits keep that rare).
DEFAULT_REQUEST_SECONDS = 60.
# /compress?effort=N: the latent search stops (503, nothing sent) past this, before the
# request deadline cuts the answer off.
DEFAULT_EFFORT_SECONDS = 45.
COMPARED_CODECS = ("jpeg", "avif")


class UploadTooLarge(HificError):
  """A request body over the server's limit."""


class ServerBusy(HificError):
  """Every codec slot stayed busy for the queueing limit: 429, retry later."""


class RequestTimeout(HificError):
  """A request outlived the request deadline: 503, retry later."""


# How long a request may wait for a codec slot before it is shed with 429 (a queue without
# bound only turns overload into timeouts and memory).
DEFAULT_QUEUE_SECONDS = 10.


def _png_data_url(image):
  return "data:image/png;base64," + base64.b64encode(images_lib.encode_png(image)).decode()


class CodecService:
  """The work behind the endpoints, free of HTTP: one codec, LPIPS and a concurrency gate."""

  def __init__(self, codec, lpips_metric=None, workers=2,
               compare_max_pixels=DEFAULT_COMPARE_MAX_PIXELS, isolate=True,
               queue_seconds=DEFAULT_QUEUE_SECONDS, compress_max_pixels=DEFAULT_MAX_PIXELS,
               log=None, trim_memory=True, effort_seconds=DEFAULT_EFFORT_SECONDS):
    self.codec = codec
    self.effort_seconds = effort_seconds
    self.queue_seconds = queue_seconds
    self.compress_max_pixels = compress_max_pixels
    self.trim_memory = trim_memory
    self.log = log or (lambda line: print(f"hific serve: {line}", file=sys.stderr, flush=True))
    self.shed = 0  # Requests refused with 429 so far.
    if isolate and getattr(codec, "directory", None):
      # Range decoding first in a killable worker: a spinning file costs one request.
      from hific_tf.serving import isolation
      codec.preflight = isolation.IsolatedRangeDecoder(codec.directory, codec.max_pixels)
    self.lpips = lpips_metric
    self.gate = threading.BoundedSemaphore(workers)
    self.compare_max_pixels = compare_max_pixels

  @contextlib.contextmanager
  def _slot(self):
    """One of the `workers` codec slots, or ServerBusy after `queue_seconds`."""
    if not self.gate.acquire(timeout=self.queue_seconds):
      self.shed += 1
      self.log(f"shed a request (429) after {self.queue_seconds:.0f} s in the "
               f"queue ({self.shed} so far)")
      raise ServerBusy(f"all codec workers stayed busy for {self.queue_seconds:.0f} s; "
                       "retry later")
    try:
      yield
    finally:
      self.gate.release()
      if self.trim_memory:
        runtime.release_memory()

  def _image(self, data, max_pixels, endpoint):
    image = images_lib.load_rgb(io.BytesIO(data), name="upload")
    height, width = image.shape[:2]
    if height * width > max_pixels:
      raise images_lib.ImageError(
          f"upload: {width}x{height} is over the {endpoint} limit of {max_pixels} pixels")
    return image

  def _rate_options(self, rate):
    """compress()'s keywords for `rate` (checked first: a bad one is a 400 before any work)."""
    return {"rate": self.codec.checked_rate(rate)}

  def compress(self, data, effort=0, rate=None):
    """`effort` > 0 searches the latents first (latent_search), within `effort_seconds`;
    `rate` (gains.py) sets the codec's quantization gain, 0 the model's own, None the
    codec's default (a preset's rate)."""
    options = self._rate_options(rate)
    image = self._image(data, self.compress_max_pixels, "/compress")
    if effort:
      from hific_tf.models.hific import latent_search
      latent_search.iterations_for(effort)  # A bad value is a 400 before any work.
    with self._slot():
      if not effort:
        return self.codec.compress(image, **options).to_bytes()
      deadline = time.monotonic() + self.effort_seconds
      return self.codec.compress(image, effort=effort, deadline=deadline,
                                 **options).to_bytes()

  def decompress(self, data, realism=None):
    """`realism` (R in [0, 1], None: the codec's own) picks the decoder's trade-off."""
    realism = self.codec.checked_realism(realism)
    hific_file = bitstream.HificFile.from_bytes(data)
    # Before a slot: a file that spins holds the range-decoding worker, never a codec slot.
    self.codec.prove_range_decoding(hific_file)
    with self._slot():
      return images_lib.encode_png(self.codec.decompress(hific_file, realism=realism))

  def compare(self, data, rate=None, realism=None):
    options = self._rate_options(rate)
    realism = self.codec.checked_realism(realism)
    image = self._image(data, self.compare_max_pixels, "/compare")
    height, width = image.shape[:2]
    with self._slot():
      hific_file = self.codec.compress(image, **options)
      hific_bytes = hific_file.to_bytes()
      candidates = {"HiFiC": (self.codec.decompress(hific_file, realism=realism),
                              len(hific_bytes))}
      for name, result in classical.at_equal_size(image, len(hific_bytes),
                                                  COMPARED_CODECS).items():
        candidates[name.upper()] = result
      results = []
      for name, (reconstruction, size) in candidates.items():
        measured = metrics.measure(image, reconstruction, size, self.lpips,
                                   with_ms_ssim=False)
        results.append({
            "codec": name, "bytes": size, "bpp": measured["bpp"], "psnr": measured["psnr"],
            "lpips": measured["lpips"], "image": _png_data_url(reconstruction)})
    return {"width": width, "height": height, "rate": hific_file.rate, "realism": realism,
            "original": _png_data_url(image),
            "results": results,
            "hific_file": base64.b64encode(hific_bytes).decode()}

  def health(self):
    # "degraded": a crafted file left a range-decoding kernel spinning (guard.py); the codec
    # refuses to decode and the process should be replaced (503 tells a supervisor so).
    status = "degraded" if getattr(self.codec, "poisoned", False) else "ok"
    # "codec": the name the service was started with (a bundled name, a preset, a folder's);
    # "model": the config it was trained with.
    report = {"status": status, "codec": getattr(self.codec, "label", self.codec.config_name),
              "model": self.codec.config_name, "default_rate": self.codec.default_rate,
              "fingerprint": self.codec.fingerprint.hex(), "shed_requests": self.shed}
    if self.codec.takes_rate:  # The page's rate slider spans this.
      report["rate_range"] = list(self.codec.rate_range)
    report["default_realism"] = self.codec.checked_realism(None)
    if self.codec.has_realism:  # The page shows its realism slider.
      report["realism_range"] = [0., 1.]
    if self.codec.preflight is not None:
      report["range_decoder_replacements"] = self.codec.preflight.replaced
    return report


def create_app(service, max_upload_bytes=DEFAULT_MAX_UPLOAD_BYTES,
               request_seconds=DEFAULT_REQUEST_SECONDS):
  """The FastAPI application around a `CodecService`."""
  from fastapi import FastAPI, Request
  from fastapi.responses import FileResponse, JSONResponse, Response
  from fastapi.staticfiles import StaticFiles
  from starlette.concurrency import run_in_threadpool

  app = FastAPI(title="hific_tf", description=__doc__.split("\n\n")[0])

  async def read_body(request):
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_upload_bytes:
      raise UploadTooLarge(f"upload of {declared} bytes is over the limit of "
                           f"{max_upload_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
      size += len(chunk)
      if size > max_upload_bytes:
        raise UploadTooLarge(f"upload is over the limit of {max_upload_bytes} bytes")
      chunks.append(chunk)
    if not size:
      raise images_lib.ImageError("empty upload")
    return b"".join(chunks)

  @app.exception_handler(UploadTooLarge)
  async def too_large(request, error):
    return JSONResponse({"error": str(error)}, status_code=413)

  @app.exception_handler(ServerBusy)
  async def busy(request, error):
    return JSONResponse({"error": str(error)}, status_code=429, headers={"Retry-After": "5"})

  @app.exception_handler(EffortTimeout)
  async def effort_timed_out(request, error):
    return JSONResponse({"error": str(error)}, status_code=503)

  @app.exception_handler(RequestTimeout)
  async def timed_out(request, error):
    return JSONResponse({"error": str(error)}, status_code=503, headers={"Retry-After": "5"})

  async def run(work, body):
    """`work(body)` in a worker thread, under the request deadline."""
    try:
      return await asyncio.wait_for(run_in_threadpool(work, body), request_seconds)
    except asyncio.TimeoutError:
      service.log(f"a request outlived the {request_seconds:.0f} s deadline (503)")
      raise RequestTimeout(f"the request took longer than {request_seconds:.0f} s; "
                           "retry later") from None

  @app.exception_handler(guard.DecoderPoisonedError)
  async def poisoned(request, error):
    return JSONResponse({"error": str(error)}, status_code=503)

  @app.exception_handler(HificError)
  async def bad_input(request, error):
    # Every input error of the library is a HificError with a one-line message.
    return JSONResponse({"error": str(error).splitlines()[0]}, status_code=400)

  @app.get("/health")
  def health():
    report = service.health()
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

  def rate_of(request):
    text = request.query_params.get("rate")
    try:
      return None if text is None else float(text)
    except ValueError:
      raise UsageError(f"rate must be a number, got {text!r}") from None

  def realism_of(request):
    text = request.query_params.get("realism")
    try:
      return None if text is None else float(text)
    except ValueError:
      raise UsageError(f"realism must be a number from 0 to 1, got {text!r}") from None

  @app.post("/compress")
  async def compress(request: Request):
    # ?effort=N (0-4): the encoder's latent search, within the service's effort budget.
    # ?rate=R: the codec's rate (0, the model's own; each step of 1 doubles the quantization
    # gain); without it, the codec's default (a preset's rate).
    effort = request.query_params.get("effort", "0")
    if not effort.isdigit():
      raise UsageError(f"effort must be an integer from 0 to 4, got {effort!r}")
    rate = rate_of(request)
    data = await run(lambda body: service.compress(body, int(effort), rate),
                     await read_body(request))
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": 'attachment; filename="image.hific"'})

  @app.post("/decompress")
  async def decompress(request: Request):
    # ?realism=R (0-1): the decoder's realism, for a codec with the knob; default its own.
    realism = realism_of(request)
    data = await run(lambda body: service.decompress(body, realism), await read_body(request))
    return Response(data, media_type="image/png")

  @app.post("/compare")
  async def compare(request: Request):
    rate, realism = rate_of(request), realism_of(request)
    return await run(lambda body: service.compare(body, rate, realism),
                     await read_body(request))

  @app.get("/")
  def page():
    return FileResponse(WEB_DIR / "index.html")

  @app.middleware("http")
  async def revalidate_page(request, call_next):
    # The page and its scripts change with the package: browsers must revalidate them.
    response = await call_next(request)
    if request.method == "GET":
      response.headers.setdefault("Cache-Control", "no-cache")
    return response

  app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
  return app


def serve(app, host="127.0.0.1", port=8000, log=print):
  """Runs the app with uvicorn until SIGINT or SIGTERM (then finishes requests and returns)."""
  import uvicorn
  config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=3)
  server = uvicorn.Server(config)
  log(f"serving on http://{host}:{port} (Ctrl-C or SIGTERM stops)")
  # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
  # that was there before it; a no-op one makes that graceful stop a normal exit (code 0).
  previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    server.run()
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  log("stopped")
