"""`hific serve` end to end: a real server process, real HTTP, a real headless Chromium."""

import concurrent.futures
import http.client
import io
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
from PIL import Image
import pytest

from conftest import sample_photos

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port():
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _post(url, data, timeout=300):
  """(status, body bytes) of a POST, 4xx/5xx included.

  A server may answer 413 from the Content-Length alone and close while the body is still
  being sent: the client must then read the answer despite the broken pipe.
  """
  parsed = urllib.parse.urlsplit(url)
  connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
  try:
    connection.putrequest("POST", parsed.path + (f"?{parsed.query}" if parsed.query else ""))
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    try:
      for start in range(0, len(data), 1 << 16):
        connection.send(data[start:start + (1 << 16)])
    except (BrokenPipeError, ConnectionResetError):
      pass
    response = connection.getresponse()
    return response.status, response.read()
  finally:
    connection.close()


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def server(saved_model, tmp_path_factory):
  port = _free_port()
  log = tmp_path_factory.mktemp("serve") / "stderr.txt"
  with open(log, "w") as stderr:
    process = subprocess.Popen(
        [sys.executable, "-m", "hific_tf.cli", "serve", "--model", str(saved_model), "--port",
         str(port), "--max_upload_mb", "1"], stdout=subprocess.DEVNULL, stderr=stderr,
        stdin=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 300
  while True:
    try:
      with urllib.request.urlopen(url + "/health", timeout=5) as response:
        health = json.loads(response.read())
        break
    except (urllib.error.URLError, ConnectionError):
      if process.poll() is not None or time.time() > deadline:
        process.kill()
        pytest.fail(f"hific serve did not start: {log.read_text()[-2000:]}")
      time.sleep(1)
  yield {"url": url, "process": process, "log": log, "health": health}
  if process.poll() is None:
    process.kill()


def test_health_names_the_model(server, codec, saved_model):
  assert server["health"] == {"status": "ok", "codec": saved_model.name,
                              "model": codec.config_name, "default_rate": 0.,
                              "fingerprint": codec.fingerprint.hex(), "shed_requests": 0,
                              "range_decoder_replacements": 0,
                              "rate_range": list(codec.rate_range), "default_realism": 0.}


def test_twenty_concurrent_requests_are_all_correct(server, codec):
  """Ten compress and ten decompress requests at once, each on a different image; half of
  the compress requests at another rate, their files carrying it."""
  photos = sample_photos()
  rng = np.random.default_rng(0)
  jobs = []
  for index in range(20):
    photo = photos[list(photos)[index % len(photos)]]
    height, width = (int(v) for v in rng.integers(40, 160, size=2))
    crop = np.ascontiguousarray(photo[:height, :width, :3])
    expected_file = codec.compress(crop)
    if index % 2:
      jobs.append(("/decompress", expected_file.to_bytes(),
                   _png(codec.decompress(expected_file))))
    elif index % 4:
      jobs.append(("/compress", _png(crop), expected_file.to_bytes()))
    else:
      jobs.append(("/compress?rate=0.5", _png(crop),
                   codec.compress(crop, rate=0.5).to_bytes()))
  with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
    answers = list(pool.map(lambda job: _post(server["url"] + job[0], job[1]), jobs))
  for (path, _, expected), (status, body) in zip(jobs, answers):
    assert status == 200, (path, body[:200])
    if path.startswith("/compress"):
      assert body == expected
    else:
      decoded = np.asarray(Image.open(io.BytesIO(body)))
      assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(expected))))


def test_bad_requests_get_one_line_4xx_and_the_server_stays_up(server, codec):
  oversized = _png(np.random.default_rng(1).integers(0, 256, (700, 700, 3), dtype=np.uint8))
  assert len(oversized) > 1 << 20
  good = codec.compress(sample_photos()["coffee"][:64, :64]).to_bytes()
  photo = _png(sample_photos()["coffee"][:64, :64])
  corrupt = good[:40] + bytes(b ^ 0xFF for b in good[40:60]) + good[60:]
  cases = [("/compress", oversized, 413), ("/decompress", corrupt, 400),
           ("/compress", b"not an image", 400), ("/decompress", b"", 400),
           ("/compare", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, 400),
           ("/compress?rate=abc", photo, 400), ("/compress?rate=99", photo, 400)]
  for path, data, expected_status in cases:
    status, body = _post(server["url"] + path, data)
    assert status == expected_status, (path, body[:200])
    message = json.loads(body)["error"]
    assert message and "\n" not in message and "Traceback" not in message
  with urllib.request.urlopen(server["url"] + "/health", timeout=10) as response:
    assert json.loads(response.read())["status"] == "ok"
  assert server["process"].poll() is None


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason="Debian's chromium and chromium-driver are not installed "
                           "(`make test` installs them when it runs as root)")
def test_page_in_headless_chromium_shows_three_results_on_sliders(server, tmp_path):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  photo = tmp_path / "coffee.png"
  Image.fromarray(sample_photos()["coffee"][100:292, 200:456]).save(photo)
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=390,844"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  try:
    driver.get(server["url"] + "/")
    driver.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(driver, 300).until(
        lambda d: d.execute_script("return document.body.dataset.state") == "done"
        or "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert driver.find_element(By.ID, "status").get_attribute("class") != "error", \
        driver.find_element(By.ID, "status").text
    figures = driver.find_elements(By.CSS_SELECTOR, ".result")
    assert [f.get_attribute("data-codec") for f in figures] == ["HiFiC", "JPEG", "AVIF"]
    pattern = re.compile(r"[\d,]+ bytes · \d\.\d{3} bpp · PSNR \d+\.\d\d dB · LPIPS 0\.\d{3}")
    for figure in figures:
      assert pattern.fullmatch(figure.find_element(By.CSS_SELECTOR, ".numbers").text)
      slider = figure.find_element(By.CSS_SELECTOR, "input.slider")
      assert slider.is_displayed()
      decoded = figure.find_element(By.CSS_SELECTOR, "img.decoded")
      assert driver.execute_script("return arguments[0].naturalWidth", decoded) == 256
    # Moving a slider re-clips its decoded picture.
    slider = figures[0].find_element(By.CSS_SELECTOR, "input.slider")
    driver.execute_script("arguments[0].value = 20; arguments[0].dispatchEvent("
                          "new Event('input'))", slider)
    clip = figures[0].find_element(By.CSS_SELECTOR, "img.decoded").value_of_css_property(
        "clip-path")
    assert "80%" in clip
    link = driver.find_element(By.ID, "download")
    assert link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download") == "coffee.hific"
    # The rate slider codes the photo again at the chosen rate: a larger HiFiC file.
    first_bytes = int(re.match(r"[\d,]+", figures[0].find_element(
        By.CSS_SELECTOR, ".numbers").text).group().replace(",", ""))
    rate = driver.find_element(By.ID, "rate")
    assert rate.is_displayed()
    driver.execute_script("arguments[0].value = 1; arguments[0].dispatchEvent("
                          "new Event('input')); arguments[0].dispatchEvent("
                          "new Event('change'))", rate)
    assert driver.find_element(By.ID, "rate-value").text == "1"
    WebDriverWait(driver, 300).until(
        lambda d: d.execute_script("return document.body.dataset.state") == "done"
        or "error" in d.find_element(By.ID, "status").get_attribute("class"))
    figures = driver.find_elements(By.CSS_SELECTOR, ".result")
    again = int(re.match(r"[\d,]+", figures[0].find_element(
        By.CSS_SELECTOR, ".numbers").text).group().replace(",", ""))
    assert again > first_bytes, (first_bytes, again)
    # Phone-sized: nothing wider than the viewport.
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    screenshot = tmp_path / "page.png"
    driver.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] > 0
    if os.environ.get("HIFIC_SCREENSHOT"):
      driver.save_screenshot(os.environ["HIFIC_SCREENSHOT"])
  finally:
    driver.quit()


def test_sigterm_stops_the_server_within_five_seconds(server):
  """Runs last in this module: it ends the shared server."""
  process = server["process"]
  start = time.time()
  process.send_signal(signal.SIGTERM)
  code = process.wait(timeout=5)
  assert time.time() - start < 5
  assert code == 0
  log = pathlib.Path(server["log"]).read_text()
  assert "Traceback" not in log and "stopped" in log


def test_overload_is_shed_with_429_not_queued_without_bound(codec):
  # Every codec slot busy (held here) for longer than the queueing limit: the request is
  # refused at once with ServerBusy (HTTP 429 with Retry-After), and counted on /health.
  import time

  from hific_tf.serving import server as server_lib
  service = server_lib.CodecService(codec, workers=1, isolate=False, queue_seconds=0.5)
  photo = io.BytesIO()
  Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(photo, format="PNG")
  assert service.gate.acquire(timeout=1)
  try:
    start = time.monotonic()
    with pytest.raises(server_lib.ServerBusy):
      service.compress(photo.getvalue())
    assert 0.4 < time.monotonic() - start < 5
  finally:
    service.gate.release()
  assert service.health()["shed_requests"] == 1
  assert len(service.compress(photo.getvalue())) > 0  # A free slot serves again.


def _asgi_post(app, path, body):
  """(status, body) of a POST sent through the ASGI interface of `app` (no network)."""
  import asyncio
  incoming = [{"type": "http.request", "body": body, "more_body": False}]
  sent = []

  async def receive():
    return incoming.pop(0) if incoming else {"type": "http.disconnect"}

  async def send(message):
    sent.append(message)

  path, _, query = path.partition("?")
  scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
           "headers": [(b"content-length", str(len(body)).encode())],
           "query_string": query.encode(),
           "http_version": "1.1", "scheme": "http", "server": ("test", 80),
           "client": ("test", 1), "root_path": "", "asgi": {"version": "3.0"}}
  asyncio.run(app(scope, receive, send))
  status = next(m["status"] for m in sent if m["type"] == "http.response.start")
  return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_compress_effort_is_checked_before_any_work(codec):
  """/compress?effort=N: a bad value, or a codec the search cannot run through (a SavedModel
  folder has no Keras model), is a 400 with one line; effort 0 is the plain encode."""
  from hific_tf.serving import server as server_lib
  app = server_lib.create_app(server_lib.CodecService(codec, isolate=False), request_seconds=60)
  small = _png(np.full((40, 40, 3), 90, np.uint8))
  for query, needle in (("effort=x", "integer"), ("effort=9", "from 0 to 4"),
                        ("effort=1", "needs a codec with weights")):
    status, body = _asgi_post(app, f"/compress?{query}", small)
    assert status == 400 and needle in json.loads(body)["error"], (query, body)
  status, body = _asgi_post(app, "/compress?effort=0", small)
  assert status == 200 and body == codec.compress(np.full((40, 40, 3), 90, np.uint8)).to_bytes()


def test_compress_has_its_own_pixel_limit_and_requests_a_deadline(codec):
  from hific_tf.serving import server as server_lib
  service = server_lib.CodecService(codec, isolate=False, compress_max_pixels=4000)
  app = server_lib.create_app(service, request_seconds=60)
  status, body = _asgi_post(app, "/compress", _png(np.full((100, 100, 3), 90, np.uint8)))
  assert status == 400 and "over the /compress limit of 4000 pixels" in json.loads(body)["error"]
  status, body = _asgi_post(app, "/compress", _png(np.full((60, 60, 3), 90, np.uint8)))
  from hific_tf import bitstream
  assert status == 200 and bitstream.HificFile.from_bytes(body).width == 60
  # A real compress cannot finish in a millisecond: 503 with Retry-After, server unharmed.
  hurried = server_lib.create_app(server_lib.CodecService(codec, isolate=False),
                                  request_seconds=0.001)
  status, body = _asgi_post(hurried, "/compress", _png(sample_photos()["coffee"]))
  assert status == 503 and "took longer than" in json.loads(body)["error"]


def test_a_short_soak_has_no_failures_and_bounded_memory():
  # bench/serve_soak.py against a real `hific serve` with the default codec: good answers
  # checked, hostile requests refused with 4xx, no other 5xx, /health ok at the end.
  done = subprocess.run(
      [sys.executable, str(pathlib.Path(__file__).parent.parent / "bench" / "serve_soak.py"),
       "--seconds", "12", "--clients", "3", "--json", "-"], capture_output=True, text=True,
      timeout=900)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
  figures = json.loads(done.stdout[done.stdout.index("{\n"):])
  assert figures["failures"] == 0 and figures["health_at_end"]["status"] == "ok"
  assert figures["requests"] > 10  # The long soak is bench/serve_soak.py's own run.
  assert figures["rss_peak_mb"] < 1700  # docs/SERVING.md: 1.3 GB + 0.2 GB x 2 workers.
