"""The package's shape: a clone that stands alone, no import cycles, the library apart from
the CLI, one error base, one image rule and the CLI's conventions."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from conftest import REPO, run_hific
from hific_tf import errors, images
from hific_tf.cli import main as cli_main

PACKAGE = REPO / "hific_tf"


def _module_name(path):
  relative = path.relative_to(REPO).with_suffix("")
  parts = list(relative.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _imports(path):
  """hific_tf modules that `path` imports anywhere (module level or inside functions)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("hific_tf"))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hific_tf"):
      for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        found.add(candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                  or (PACKAGE.parent / candidate.replace(".", "/")).is_dir() else node.module)
  return found


def _graph():
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  return {name: {i for i in _imports(path) if i in modules and i != name}
          for name, path in modules.items()}


def test_no_import_cycles():
  graph = _graph()
  # Package __init__ files are namespaces; an edge to one is an edge to nothing.
  state = {}

  def visit(node, stack):
    state[node] = "open"
    for target in graph[node]:
      if state.get(target) == "open":
        cycle = stack[stack.index(target):] + [target]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if target not in state:
        visit(target, stack + [target])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


# The floors of docs/ARCHITECTURE.md, lowest first, by folder: a module imports only from its
# own folder or from a lower floor. The modules directly in hific_tf/ are the ground floor
# (errors, geometry, runtime, configs, images, the .hific container), except the package's
# public face, which re-exports from above it.
FLOORS = (("",), ("measure",), ("models",), ("serving",), ("training", "evaluation"), ("cli",))
PUBLIC_FACE = {"hific_tf", "hific_tf.lpips"}


def _folder(module):
  """The folder under hific_tf/ a module sits in ("" for the modules directly in it)."""
  parts = module.split(".")
  return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else ""


def _floor(module):
  folder = _folder(module)
  matches = [level for level, folders in enumerate(FLOORS) if folder in folders]
  assert matches, f"{module}: its folder hific_tf/{folder} is on no floor of ARCHITECTURE.md"
  return matches[0]


def test_every_import_points_down_the_floors_the_folders_show():
  architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text()
  for folders in FLOORS[1:]:
    for folder in folders:
      assert f"{folder}/" in architecture, f"ARCHITECTURE.md does not place {folder}/"
  assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} \
      == {f for floor in FLOORS for f in floor if f}, "a folder of hific_tf/ on no floor"
  for name, targets in _graph().items():
    if name in PUBLIC_FACE:
      continue
    for target in targets:
      assert target not in PUBLIC_FACE, f"{name} imports the public face {target}"
      upward = _floor(target) > _floor(name) or (
          _floor(target) == _floor(name) and _folder(target) != _folder(name))
      assert not upward, f"{name} imports {target}, which is not below it"


def test_maintainer_tools_live_outside_the_package():
  """The ladder, bundling and plots are bin/'s; bench/ finds its helpers without path hacks."""
  assert not (PACKAGE / "training" / "ladder.py").exists()
  for path in REPO.glob("bench/*.py"):
    assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path"
  scripts = [p for p in REPO.glob("bench/*.py") if p.name != "common.py"]
  assert len(scripts) <= 12, sorted(p.name for p in scripts)


def test_user_facing_failures_raise_hific_errors():
  """No bare builtin exception for something a user can cause; the allowed ones are bugs."""
  allowed = {  # (module, exception): why it is a programming error, not a user's.
      ("hific_tf/models/hific/layers.py", "ValueError"): "a network built with 1 channel",
      ("hific_tf/models/hific/hyperprior.py", "RuntimeError"): "coding before build_coders",
      ("hific_tf/bitstream.py", "ValueError"): "a fingerprint of the wrong length",
  }
  builtin = {"ValueError", "FileNotFoundError", "FileExistsError", "RuntimeError", "KeyError",
             "TypeError", "OSError", "IOError", "Exception"}
  for path in PACKAGE.rglob("*.py"):
    relative = str(path.relative_to(REPO))
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
        name = getattr(node.exc.func, "id", None)
        if name in builtin:
          assert (relative, name) in allowed, f"{relative}:{node.lineno} raises a bare {name}"


def test_the_library_never_imports_the_cli():
  for name, targets in _graph().items():
    if not name.startswith("hific_tf.cli"):
      assert not [t for t in targets if t.startswith("hific_tf.cli")], name
  code = ("import sys, hific_tf.evaluation.runner, hific_tf.models.zoo, hific_tf.training.train;"
          "print([m for m in sys.modules if m.startswith('hific_tf.cli')])")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_nothing_reads_outside_the_checkout():
  for path in list(REPO.glob("hific_tf/**/*.py")) + list(REPO.glob("tests/*.py")) + list(
      REPO.glob("bench/*.py")) + list(REPO.glob("bin/*")) + [REPO / "Makefile"]:
    if path == pathlib.Path(__file__):
      continue  # It names what it looks for.
    text = path.read_text(errors="replace")
    outside = "/".join(("..", "shared"))
    assert outside not in text and '"shared"' not in text, path


def test_every_user_facing_error_shares_one_base():
  from hific_tf import bitstream
  from hific_tf.evaluation import runner
  from hific_tf.measure import weights
  from hific_tf.models import sources, zoo
  from hific_tf.training import data, photos, train
  for error in (images.ImageError, data.DataError, train.TrainError, runner.EvaluationError,
                bitstream.FormatError, weights.WeightsNotFoundError, photos.PhotoDataError,
                zoo.UnknownCodecError, sources.SourceError):
    assert issubclass(error, errors.HificError), error
  assert issubclass(runner.EvaluationError, errors.UsageError)


def _all_parsers():
  top = cli_main.build_parser()
  subparsers = [a for a in top._actions if a.__class__.__name__ == "_SubParsersAction"][0]
  return [("hific", top)] + list(subparsers.choices.items())


def test_every_flag_has_help_and_the_help_shows_defaults():
  for name, parser in _all_parsers():
    for action in parser._actions:
      if action.__class__.__name__ in ("_HelpAction", "_SubParsersAction"):
        continue
      assert action.help, f"hific {name}: {action.option_strings or action.dest} has no help"
  done = run_hific("train", "--help")
  assert "(default: 1000)" in done.stdout


@pytest.mark.parametrize("argv,verbose", [
    (["hific", "-V", "info", "--config", "tiny-mselpips"], True),
    (["hific", "info", "-V", "--config", "tiny-mselpips"], True),
    (["hific", "info", "--config", "tiny-mselpips"], False),
])
def test_verbose_before_or_after_the_command(argv, verbose):
  assert cli_main.parse_args(argv).verbose is verbose


def test_one_image_rule_for_training_compress_and_evaluate(tmp_path):
  """WebP, TIFF and PPM are read by the same decoder everywhere; a bad file is one line."""
  from hific_tf.training import data
  rng = np.random.default_rng(0)
  for suffix in (".webp", ".tif", ".ppm"):
    Image.fromarray(rng.integers(0, 255, [80, 96, 3], np.uint8)).save(tmp_path / f"a{suffix}")
  files = images.list_images(tmp_path)
  assert [pathlib.Path(f).suffix for f in files] == [".ppm", ".tif", ".webp"]
  batch = next(iter(data.training_dataset(2, 64, train_glob=str(tmp_path))))
  assert batch.shape == (2, 64, 64, 3)
  (tmp_path / "broken.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 garbage")
  done = run_hific("train", "--config", "tiny-mselpips", "--train_glob", tmp_path,
                   "--model_dir", tmp_path / "run", "--steps", 1, check=False)
  assert done.returncode == 1
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f"hific: error: {tmp_path / 'broken.webp'}: not a readable image"), lines
  assert not (tmp_path / "run").exists(), "the model was built before the data was checked"


def test_model_dir_config_records_what_the_run_used(stage1_dir):
  """config.json holds the flags' values (steps 30 from --steps), not only the config's."""
  import json

  from conftest import TRAIN_STEPS
  recorded = json.loads((stage1_dir / "config.json").read_text())
  assert recorded["num_steps"] == TRAIN_STEPS
  assert recorded["batch_size"] == 4 and recorded["crop_size"] == 128


def test_the_code_passes_its_lint():
  """ruff.toml's rules (pyflakes, import order, bugbear) on the library, bin/, bench/, tests/."""
  done = subprocess.run([sys.executable, "-m", "ruff", "check", "hific_tf", "bin", "bench",
                         "tests"], capture_output=True, text=True, cwd=REPO)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
