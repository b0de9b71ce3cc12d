"""The dependency rules of docs/ARCHITECTURE.md, checked by parsing every import.

Layers, lowest first: config -> contracts -> datasets -> graph -> models ->
serving -> training -> components -> pipeline. A package imports only from the
layers its row allows; `component.py` files only declare (TFX, config,
contracts, artifact types and their own executor), and no executor imports a
`component.py`. Imports inside functions count too.
"""
import ast
import os

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LOW = {"config", "contracts"}
# Package (or root module) -> the e2e_grec packages it may import.
ALLOWED = {
    "__init__": set(),
    "config": set(),
    "contracts": {"config"},
    "schemas": set(),
    "datasets": _LOW,
    "graph": _LOW | {"datasets"},
    "models": _LOW | {"datasets", "graph"},
    "serving": _LOW | {"datasets", "graph", "models"},
    "training": _LOW | {"datasets", "graph", "models", "serving"},
    "components": _LOW | {"datasets", "graph", "models", "serving", "training"},
    # The search drives `e2e-grec train` runs in child processes.
    "tuning": _LOW | {"datasets"},
    # pipeline/ only wires components.
    "pipeline": _LOW | {"components"},
    # Entry points and measurements may use every layer.
    "cli": None,
    "benchmarks": None,
}
# What a component.py may import from e2e_grec besides its own executor.
COMPONENT_ALLOWED = {"e2e_grec.config", "e2e_grec.contracts", "e2e_grec.components.artifacts"}
SKIPPED_DIRS = {"tests", "kubeflow", "docs", "configs", "__pycache__"}


def e2e_grec_imports(source: str) -> list[tuple[int, str]]:
  """(line, dotted name) of everything a source imports from `e2e_grec`, anywhere in it.

  `from a.b import c` gives `a.b.c`, whether `c` is a module or a name in `a.b`.
  """
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
  return [(line, m) for line, m in found if m.startswith("e2e_grec.")]


def _within(name: str, modules: set[str]) -> bool:
  return any(name == m or name.startswith(m + ".") for m in modules)


def violations(relative_path: str, source: str) -> list[str]:
  """Every rule that the file at `relative_path` (inside the package) breaks."""
  parts = relative_path.split(os.sep)
  layer = parts[0].removesuffix(".py")
  if layer not in ALLOWED:
    return [f"{relative_path}: package {layer!r} has no row in ALLOWED; place it in a layer"]
  allowed = ALLOWED[layer]
  problems = []
  for line, module in e2e_grec_imports(source):
    target = module.split(".")[1]
    where = f"{relative_path}:{line}: imports {module}"
    if allowed is not None and target != layer and target not in allowed:
      problems.append(f"{where}, but {layer}/ may only import {sorted(allowed)}")
    if layer == "components" and parts[-1] == "component.py":
      own_executor = ".".join(["e2e_grec", *parts[:-1], "executor"])
      if not _within(module, COMPONENT_ALLOWED | {own_executor}):
        problems.append(f"{where}: a component.py only declares (allowed: "
                        f"{sorted(COMPONENT_ALLOWED)} and its executor)")
    if (layer == "components" and parts[-1] == "executor.py"
        and ".component." in module + "."):
      problems.append(f"{where}: an executor does the work without its declaration")
  return problems


def _package_files():
  for directory, subdirs, files in os.walk(PACKAGE_DIR):
    subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith(".")]
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        yield os.path.relpath(path, PACKAGE_DIR), path


def test_every_module_imports_only_from_allowed_layers():
  problems = []
  for relative, path in _package_files():
    with open(path) as f:
      problems += violations(relative, f.read())
  assert not problems, "\n".join(problems)


def test_the_checker_catches_each_kind_of_violation():
  bad = {
      os.path.join("datasets", "vocab.py"): "from e2e_grec.graph import node_tables",
      os.path.join("models", "train.py"): "def f():\n  from e2e_grec.serving import export",
      os.path.join("serving", "export.py"): "import e2e_grec.pipeline.pipeline",
      os.path.join("serving", "server.py"): "from e2e_grec import training",
      os.path.join("models", "ranker.py"): "from e2e_grec.components import artifacts",
      os.path.join("pipeline", "run.py"): "from e2e_grec.models import train",
      os.path.join("components", "trainer", "component.py"): "from e2e_grec.models import train",
      os.path.join("components", "trainer", "executor.py"):
          "from e2e_grec.components.trainer import component",
      "newlayer.py": "import os",
  }
  for relative, source in bad.items():
    assert violations(relative, source), relative
  fine = {
      os.path.join("training", "runner.py"): "from e2e_grec.serving import export",
      os.path.join("components", "trainer", "component.py"):
          "from e2e_grec.components.trainer import executor\nfrom e2e_grec import contracts",
      os.path.join("graph", "builder.py"): "from e2e_grec.datasets import history",
  }
  for relative, source in fine.items():
    assert not violations(relative, source), relative
