"""The stock-op serving SavedModel (`hific export --serving`) and its range-coding client."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from conftest import run_hific, sample_photos

# Runs in a fresh process that never imports tensorflow_compression (nor hific_tf): every op
# of the SavedModel must then be a stock op, or loading fails with "Op type not registered".
_STOCK_ONLY = r"""
import json, sys
import numpy as np, tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
directory, image_path = sys.argv[1:3]
proto = saved_model_pb2.SavedModel()
proto.ParseFromString(open(directory + "/saved_model.pb", "rb").read())
graph = proto.meta_graphs[0].graph_def
ops = {node.op for node in graph.node}
ops |= {node.op for function in graph.library.function for node in function.node_def}
ops -= {function.signature.name for function in graph.library.function}
unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
module = tf.saved_model.load(directory)
from PIL import Image
image = np.asarray(Image.open(image_path).convert("RGB"))
rate = tf.constant(0.5)  # Any rate: the decoder's signatures take the header's.
analysis = module.signatures["analysis_at_rate"](image=tf.constant(image), rate=rate)
indexes = module.signatures["hyper_synthesis_at_rate"](z_symbols=analysis["z_symbols"],
                                                       y_shape=analysis["y_shape"], rate=rate)
out = module.signatures["synthesis_at_rate"](z_symbols=analysis["z_symbols"],
                                             y_symbols=analysis["y_symbols"],
                                             image_shape=analysis["image_shape"], rate=rate)
# A client written before rates: the image alone, then symbols alone (rate 0).
plain = module.signatures["analysis"](image=tf.constant(image))
plain_indexes = module.signatures["hyper_synthesis"](z_symbols=plain["z_symbols"],
                                                     y_shape=plain["y_shape"])
plain_out = module.signatures["synthesis"](z_symbols=plain["z_symbols"],
                                           y_symbols=plain["y_symbols"],
                                           image_shape=plain["image_shape"])
at_zero = module.signatures["analysis_at_rate"](image=tf.constant(image), rate=tf.constant(0.))
print(json.dumps({
    "unknown_ops": unknown, "op_count": len(ops),
    "tfc_imported": any(name.startswith("tensorflow_compression") for name in sys.modules),
    "hific_imported": any(name.startswith("hific_tf") for name in sys.modules),
    "indexes_match": bool(np.array_equal(indexes["scale_indexes"],
                                         analysis["scale_indexes"])),
    "image_shape": list(out["image"].shape),
    "plain_indexes_match": bool(np.array_equal(plain_indexes["scale_indexes"],
                                               plain["scale_indexes"])),
    "plain_is_rate_zero": bool(np.array_equal(plain["y_symbols"], at_zero["y_symbols"])),
    "rate_changes_symbols": not np.array_equal(plain["y_symbols"].shape,
                                               analysis["y_symbols"].shape) or
                            bool(np.any(plain["y_symbols"] != analysis["y_symbols"])),
    "plain_image_shape": list(plain_out["image"].shape),
}))
"""


def test_serving_model_has_only_stock_ops_and_runs_without_tfc(serving_model, photo_dir):
  done = subprocess.run([sys.executable, "-c", _STOCK_ONLY, str(serving_model),
                         str(photo_dir / "chelsea.png")], capture_output=True, text=True,
                        timeout=300, cwd="/")
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["unknown_ops"] == [] and result["op_count"] > 20
  assert not result["tfc_imported"] and not result["hific_imported"]
  # The decoder's hyper_synthesis gives exactly the indexes the encoder coded y with.
  assert result["indexes_match"]
  assert result["image_shape"] == [300, 451, 3]
  # An earlier client's requests (no rate anywhere) succeed, at rate 0.
  assert result["plain_indexes_match"] and result["plain_is_rate_zero"]
  assert result["rate_changes_symbols"]
  assert result["plain_image_shape"] == [300, 451, 3]


def test_stock_saved_model_cli_runs_the_analysis_signature(serving_model, tmp_path):
  image = sample_photos()["coffee"][:70, :90]
  np.save(tmp_path / "image.npy", image)
  stock = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  # The image alone, as a client written before rates sends it.
  done = subprocess.run(
      [stock, "run", "--dir", str(serving_model), "--tag_set", "serve", "--signature_def",
       "analysis", "--inputs", f"image={tmp_path / 'image.npy'}", "--outdir", str(tmp_path)],
      capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert np.load(tmp_path / "image_shape.npy").tolist() == [70, 90]
  assert np.load(tmp_path / "y_symbols.npy").shape[:2] == (8, 8)  # 128x128 padded, 1/16.
  assert np.load(tmp_path / "z_symbols.npy").dtype == np.int32


@pytest.mark.parametrize("name,shape", [("astronaut", None), ("coffee", (77, 131)),
                                        ("rocket", (1, 1))])
def test_split_client_writes_the_full_codecs_bytes(serving_model, codec, name, shape):
  from hific_tf.serving.split import SplitCodec
  client = SplitCodec(serving_model)
  image = sample_photos()[name]
  if shape:
    image = np.ascontiguousarray(image[:shape[0], :shape[1]])
  for rate in (0., 0.6):  # The model's own rate, and one the header has to carry.
    full_file, split_file = codec.compress(image, rate=rate), client.compress(image, rate=rate)
    assert split_file.to_bytes() == full_file.to_bytes()
    from_full = codec.decompress(full_file)
    assert np.array_equal(client.decompress(full_file), from_full)
    assert np.array_equal(codec.decompress(split_file), from_full)


def test_cli_compresses_and_decompresses_through_the_serving_model(serving_model, saved_model,
                                                                   tmp_path, photo_dir):
  source = photo_dir / "chelsea.png"
  run_hific("compress", "--model", serving_model, source, tmp_path / "split.hific")
  run_hific("compress", "--model", saved_model, source, tmp_path / "full.hific")
  assert (tmp_path / "split.hific").read_bytes() == (tmp_path / "full.hific").read_bytes()
  run_hific("decompress", "--model", serving_model, tmp_path / "split.hific",
            tmp_path / "split.png")
  run_hific("decompress", "--model", saved_model, tmp_path / "split.hific",
            tmp_path / "full.png")
  assert np.array_equal(np.asarray(Image.open(tmp_path / "split.png")),
                        np.asarray(Image.open(tmp_path / "full.png")))


def test_split_client_refuses_damaged_payloads_in_one_line(serving_model, tmp_path):
  """Damaged strings either fail tfc's exact-consumption check or decode to garbage of the
  declared size (a range coder cannot tell more; docs/SECURITY.md), never anything else."""
  import dataclasses

  from hific_tf import bitstream
  from hific_tf.serving.split import SplitCodec
  client = SplitCodec(serving_model)
  good = client.compress(sample_photos()["coffee"][:128, :128])
  variants = [dict(y_string=good.y_string[:1]), dict(z_string=good.z_string[:1]),
              dict(y_string=good.y_string + b"\x00" * 64),
              dict(y_string=bytes(b ^ 0x5A for b in good.y_string))]
  refused = []
  for change in variants:
    damaged = dataclasses.replace(good, **change)
    try:
      image = client.decompress(damaged)
      assert image.shape == (128, 128, 3)
    except bitstream.FormatError as error:
      assert "\n" not in str(error)
      refused.append(damaged)
  assert refused, "no damaged payload was refused"
  path = tmp_path / "damaged.hific"
  path.write_bytes(refused[0].to_bytes())
  done = run_hific("decompress", "--model", serving_model, path, tmp_path / "out.png",
                   check=False)
  assert done.returncode == 1 and not (tmp_path / "out.png").exists()
  assert done.stderr.strip().count("\n") == 0 and "corrupt .hific payload" in done.stderr
