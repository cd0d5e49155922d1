// The comparison page: uploads a photo to /compare and shows each result on a slider.
"use strict";

const fileInput = document.getElementById("file");
const drop = document.getElementById("drop");
const status = document.getElementById("status");
const results = document.getElementById("results");
const template = document.getElementById("result-template");
const rate = document.getElementById("rate");
const rateValue = document.getElementById("rate-value");
const realism = document.getElementById("realism");
const realismValue = document.getElementById("realism-value");
const realismRow = document.getElementById("realism-row");
let lastFile = null;

function setStatus(text, isError) {
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

function formatNumbers(result) {
  const lpips = result.lpips === null ? "n/a" : result.lpips.toFixed(3);
  return `${result.bytes.toLocaleString()} bytes · ${result.bpp.toFixed(3)} bpp · ` +
         `PSNR ${result.psnr.toFixed(2)} dB · LPIPS ${lpips}`;
}

function showResult(result, originalUrl) {
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.codec = result.codec;
  node.querySelector(".original").src = originalUrl;
  node.querySelector(".decoded").src = result.image;
  node.querySelector(".codec").textContent = result.codec;
  node.querySelector(".numbers").textContent = formatNumbers(result);
  const slider = node.querySelector(".slider");
  const decoded = node.querySelector(".decoded");
  const divider = node.querySelector(".divider");
  const move = () => {
    decoded.style.clipPath = `inset(0 ${100 - slider.value}% 0 0)`;
    divider.style.left = `${slider.value}%`;
  };
  slider.addEventListener("input", move);
  move();
  results.appendChild(node);
}

function showDownload(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const link = document.getElementById("download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([bytes], {type: "application/octet-stream"}));
  document.getElementById("download-size").textContent = `(${bytes.length} bytes)`;
  document.getElementById("download-row").hidden = false;
}

async function compare(file) {
  if (!file) return;
  lastFile = file;
  delete document.body.dataset.state;
  results.replaceChildren();
  results.hidden = true;
  document.getElementById("download-row").hidden = true;
  setStatus(`Compressing ${file.name} with HiFiC, JPEG and AVIF…`);
  let response;
  try {
    const query = `rate=${encodeURIComponent(rate.value)}` +
        (realismRow.hidden ? "" : `&realism=${encodeURIComponent(realism.value)}`);
    response = await fetch(`/compare?${query}`, {method: "POST", body: file});
  } catch (error) {
    setStatus(`The server did not answer: ${error.message}`, true);
    return;
  }
  const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) {
    setStatus(body.error || `HTTP ${response.status}`, true);
    return;
  }
  for (const result of body.results) showResult(result, body.original);
  results.hidden = false;
  document.getElementById("download").download =
      file.name.replace(/\.[^.]*$/, "") + ".hific";
  showDownload(body.hific_file);
  const budget = body.results[0].bytes;
  const over = body.results.filter((r) => r.bytes > budget).map((r) => r.codec);
  setStatus(`${file.name}: ${body.width}×${body.height}. HiFiC: ${budget.toLocaleString()} ` +
            "bytes; the others at their best encoding no larger" +
            (over.length ? ` (${over.join(" and ")} cannot get this small: shown at its ` +
                           "smallest)." : "."));
  document.body.dataset.state = "done";
}

fileInput.addEventListener("change", () => compare(fileInput.files[0]));
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  compare(event.dataTransfer.files[0]);
});

rate.addEventListener("input", () => { rateValue.textContent = rate.value; });
rate.addEventListener("change", () => compare(lastFile));
realism.addEventListener("input", () => { realismValue.textContent = realism.value; });
realism.addEventListener("change", () => compare(lastFile));

fetch("/health").then((r) => r.json()).then((health) => {
  document.getElementById("model").textContent = `HiFiC (${health.codec || health.model})`;
  if (health.rate_range) {  // Codecs that code at any rate: the slider spans their range.
    [rate.min, rate.max] = health.rate_range;
    rate.value = rateValue.textContent = health.default_rate || 0;  // A preset's rate.
    document.getElementById("rate-row").hidden = false;
  }
  if (health.realism_range) {  // A decoder with the realism knob: it starts at its default.
    realism.value = realismValue.textContent = health.default_realism;
    realismRow.hidden = false;
  }
}).catch(() => {});
