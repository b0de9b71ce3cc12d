"""kubeflow/Dockerfile, read as Docker would (no engine here): pinned, non-root, the
pinned stack without a compiler or test tools, Beam's boot entrypoint, a GPU variant."""
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, "kubeflow", "Dockerfile")
VARIANTS = ("cpu", "gpu")


def instructions(path: str) -> list[tuple[str, str]]:
  """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
  with open(path) as f:
    lines = [line for line in f.read().splitlines() if not line.lstrip().startswith("#")]
  joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
  return [(keyword.upper(), rest.strip()) for keyword, _, rest in
          (line.strip().partition(" ") for line in joined.splitlines() if line.strip())]


def build_args(steps: list[tuple[str, str]]) -> dict[str, str]:
  return dict(arg.split("=", 1) for keyword, arg in steps if keyword == "ARG" and "=" in arg)


def expand(text: str, args: dict[str, str]) -> str:
  return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def pins(path: str) -> dict[str, str]:
  """package (extras dropped, lower case) -> pinned version, from a requirements file."""
  result = {}
  with open(path) as f:
    for line in f:
      match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)", line.strip())
      if match:
        result[match.group(1).lower()] = match.group(3)
  return result


@pytest.fixture(scope="module")
def steps():
  return instructions(DOCKERFILE)


def test_base_images_are_pinned_to_exact_versions(steps):
  args = build_args(steps)
  images = [expand(arg.split()[0], args) for keyword, arg in steps if keyword == "FROM"]
  assert len(images) == 2
  for image in images:
    assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), image
  python_image = images[-1]
  assert python_image.startswith("python:3.11.")


def test_uv_is_pinned_and_installs_the_pinned_stack_not_editable(steps):
  args = build_args(steps)
  runs = [expand(arg, args) for keyword, arg in steps if keyword == "RUN"]
  assert re.search(r"pip install \"?uv==\d+\.\d+\.\d+", " ".join(runs))
  stack = [r for r in runs if "-r /tmp/build/requirements.txt" in r]
  assert len(stack) == 1 and "--override /tmp/build/overrides.txt" in stack[0]
  assert not any(re.search(r"(^|\s)(-e|--editable)\s", r) for r in runs)
  copied = " ".join(arg for keyword, arg in steps if keyword == "COPY")
  assert "requirements.txt" in copied and "requirements-dev.txt" not in copied


def test_no_compiler_and_no_test_tools_in_the_image(steps):
  runs = " ".join(arg for keyword, arg in steps if keyword == "RUN")
  assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get)\b", runs)
  for name in ("requirements.txt", "overrides.txt"):
    assert "pytest" not in pins(os.path.join(REPO, name)), name
  # The one dependency that used to need a compiler is pinned to its wheels.
  assert pins(os.path.join(REPO, "overrides.txt"))["pyfarmhash"] == "0.5.1"
  with open(os.path.join(REPO, "kubeflow", "Dockerfile.dockerignore")) as f:
    ignored = f.read().split()
  assert {".venv", "tests", ".git"} <= set(ignored)


def test_beam_boot_entrypoint_matches_the_pinned_beam(steps):
  args = build_args(steps)
  beam_image = expand(next(arg for keyword, arg in steps if keyword == "FROM"), args)
  beam = pins(os.path.join(REPO, "requirements.txt"))["apache-beam"]
  assert beam_image.split()[0] == f"apache/beam_python3.11_sdk:{beam}"
  assert ("COPY", "--from=beam_sdk /opt/apache/beam /opt/apache/beam") in steps
  assert steps[-1] == ("ENTRYPOINT", '["/opt/apache/beam/boot"]')


def test_runs_as_a_non_root_user(steps):
  users = [arg for keyword, arg in steps if keyword == "USER"]
  assert users and users[-1].split(":")[0] not in ("root", "0")
  # Everything after the last USER runs unprivileged: no installs there.
  last_user = max(i for i, (keyword, _) in enumerate(steps) if keyword == "USER")
  assert all(keyword != "RUN" for keyword, _ in steps[last_user:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_has_its_overrides_file(steps, variant):
  args = build_args(steps)
  assert args["VARIANT"] == "cpu"
  copied = [arg for keyword, arg in steps if keyword == "COPY"
            and "overrides-${VARIANT}.txt" in arg]
  assert copied
  path = os.path.join(REPO, "kubeflow", f"overrides-{variant}.txt")
  assert os.path.exists(path)
  if variant == "gpu":  # the same TensorFlow, with its CUDA wheels
    with open(path) as f:
      assert (f"tensorflow[and-cuda]=={pins(os.path.join(REPO, 'requirements.txt'))['tensorflow']}"
              in f.read())


def test_documented_tf_serving_images_are_at_least_the_training_tf():
  tensorflow = tuple(int(p) for p in pins(os.path.join(REPO, "requirements.txt"))[
      "tensorflow"].split(".")[:2])
  assert tuple(int(p) for p in pins(os.path.join(REPO, "requirements.txt"))[
      "tensorflow-serving-api"].split(".")[:2]) >= tensorflow
  documents = ["README.md", "kubeflow/README.md", "kubeflow/kserve.yaml"]
  found = []
  for name in documents:
    with open(os.path.join(REPO, name)) as f:
      text = f.read()
    for match in re.finditer(r"tensorflow/serving:(\d+)\.(\d+)|runtimeVersion:\s*\"?(\d+)\.(\d+)",
                             text):
      version = tuple(int(g) for g in match.groups() if g is not None)
      found.append((name, version))
      assert version >= tensorflow, (name, match.group(0))
  assert any(name == "kubeflow/kserve.yaml" for name, _ in found)
