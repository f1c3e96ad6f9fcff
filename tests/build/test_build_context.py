"""What goes into the build context: .dockerignore matching, weight-file detection,
staging by hard link, requirements gathering, the CUDA choice and the cogkit wheel."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cogkit.build.context import WEIGHTS_MIN_BYTES, find_weights, project_files, stage_tree
from cogkit.build.cuda import CUDA_IMAGES, UBUNTU_PYTHON, resolve_cuda, ubuntus_for
from cogkit.build.dockerignore import DockerIgnore
from cogkit.build.requirements import CPU_TORCH_INDEX, IMAGE_DIR, gather
from cogkit.build.wheel import build_cogkit_wheel
from cogkit.exceptions import ConfigError

# --- .dockerignore ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patterns, path, excluded",
    [
        (["*.txt"], "a.txt", True),
        (["*.txt"], "dir/a.txt", False),  # * stops at /, and only the root is matched
        (["**/*.txt"], "dir/sub/a.txt", True),
        (["**/*.txt"], "a.txt", True),
        (["data"], "data/x/y.bin", True),  # a folder pattern covers everything below it
        (["/data/"], "data/y.bin", True),  # leading / and trailing / are cleaned
        (["./data"], "data", True),
        (["dat?"], "data", True),
        (["dat?"], "dat/x", False),
        (["[a-c]*.py"], "b.py", True),
        (["[^a-c]*.py"], "b.py", False),
        (["[^a-c]*.py"], "d.py", True),
        (["[!a-c]*.py"], "b.py", True),  # Go: "!" is just a member of the class
        (["[!a-c]*.py"], "d.py", False),
        (["*", "!keep.py"], "keep.py", False),
        (["*", "!keep.py"], "other.py", True),
        (["models/**", "!models/keep/**"], "models/keep/w.bin", False),
        (["models/**", "!models/keep/**"], "models/drop/w.bin", True),
        (["models/**"], "models", False),  # "x/**" is what is inside x
        (["# a comment", "", "  x  "], "x", True),
        (["docs/**/*.md"], "docs/a/b/c.md", True),
        (["docs/**/*.md"], "docs/c.md", True),
        (["a\\*b"], "a*b", True),
        (["a\\*b"], "axb", False),
        (["*.tmp", "!important.tmp", "*.tmp"], "important.tmp", True),  # the last match decides
    ],
)
def test_dockerignore_matching(patterns: list[str], path: str, excluded: bool) -> None:
    assert DockerIgnore(patterns).excluded(path) is excluded


def test_project_files_honour_dockerignore_and_skip_dot_cog(tmp_path: Path) -> None:
    for rel in ["predict.py", "cog.yaml", "data/a.bin", "data/keep.bin", "logs/x.log", ".cog/junk", "sub/deep/f.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "empty").mkdir()
    (tmp_path / "link.py").symlink_to("predict.py")
    (tmp_path / ".dockerignore").write_text("data\n!data/keep.bin\nlogs/\n")
    files = project_files(tmp_path)
    assert sorted(files.files) == sorted([
        ".dockerignore", "cog.yaml", "data/keep.bin", "link.py", "predict.py", "sub/deep/f.txt",
    ])
    assert "empty" in files.dirs and "sub/deep" in files.dirs
    assert not any(d.startswith((".cog", "logs", "data")) for d in files.dirs)


# --- weights ----------------------------------------------------------------------------------


def _sized(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def test_find_weights_follows_cogs_rule(tmp_path: Path) -> None:
    big, small = WEIGHTS_MIN_BYTES, WEIGHTS_MIN_BYTES - 1
    _sized(tmp_path / "model.safetensors", big)  # root files qualify
    _sized(tmp_path / "weights/unet.bin", big)
    _sized(tmp_path / "weights/tiny.bin", small)  # under 10 MB
    _sized(tmp_path / "media/video.mp4", big)  # media is not weights
    _sized(tmp_path / "pkg/data.bin", big)  # a folder with code is a package
    (tmp_path / "pkg/__init__.py").write_text("")
    _sized(tmp_path / "lib/table.bin", big)  # ... also with the code further down
    (tmp_path / "lib/sub").mkdir(parents=True)
    (tmp_path / "lib/sub/mod.py").write_text("")
    _sized(tmp_path / "pkg2/data/w.bin", big)  # code only above: the data folder is weights
    (tmp_path / "pkg2/__init__.py").write_text("")
    _sized(tmp_path / "shots/a.heic", big)
    _sized(tmp_path / ".git/objects/pack.pack", big)
    _sized(tmp_path / "big.py", big)
    (tmp_path / "predict.py").write_text("")
    files = project_files(tmp_path).files
    assert sorted(find_weights(tmp_path, files)) == ["model.safetensors", "pkg2/data/w.bin", "weights/unet.bin"]


def test_stage_tree_hard_links_and_splits_weights(tmp_path: Path) -> None:
    project = tmp_path / "p"
    _sized(project / "w/model.bin", WEIGHTS_MIN_BYTES)
    (project / "predict.py").parent.mkdir(parents=True, exist_ok=True)
    (project / "predict.py").write_text("x = 1\n")
    (project / "alias.py").symlink_to("predict.py")
    (project / "empty").mkdir()
    files = project_files(project)
    dest = tmp_path / "ctx"
    stage_tree(project, dest, files, find_weights(project, files.files))
    assert (dest / "weights/w/model.bin").stat().st_ino == (project / "w/model.bin").stat().st_ino
    assert (dest / "src/predict.py").stat().st_ino == (project / "predict.py").stat().st_ino
    assert os.readlink(dest / "src/alias.py") == "predict.py"
    assert (dest / "src/empty").is_dir()
    assert not (dest / "src/w/model.bin").exists()


# --- requirements -----------------------------------------------------------------------------


def test_gather_requirements_follows_includes_and_local_wheels(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels/foo-1.0-py3-none-any.whl").write_bytes(b"PK")
    (tmp_path / "requirements.txt").write_text(
        "# top\ntorch==2.6.0+cu124  # pinned\ncog>=0.9\n-r more/extra.txt\n"
        "numpy \\\n  >=1.26\n--extra-index-url https://example.org/simple\n"
    )
    (tmp_path / "more").mkdir()
    (tmp_path / "more/extra.txt").write_text("Coglet\n./wheels/foo-1.0-py3-none-any.whl\ntorchvision\n")
    req = gather(tmp_path, "requirements.txt", [])
    assert req.entry == "requirements.txt"
    assert req.torch_version == "2.6.0+cu124" and req.torch_named
    assert sorted(req.dropped) == ["Coglet", "cog>=0.9"]
    assert req.files["requirements.txt"].splitlines() == [
        "torch==2.6.0+cu124", f"-r {IMAGE_DIR}/python/more/extra.txt", "numpy   >=1.26",
        "--extra-index-url https://example.org/simple",
    ]
    assert req.files["more/extra.txt"].splitlines() == [
        f"{IMAGE_DIR}/python/wheels/foo-1.0-py3-none-any.whl", "torchvision",
    ]
    assert req.artifacts == {"wheels/foo-1.0-py3-none-any.whl": tmp_path / "wheels/foo-1.0-py3-none-any.whl"}
    generated = req.generated_file(CPU_TORCH_INDEX).splitlines()
    assert generated[1:] == [f"--extra-index-url {CPU_TORCH_INDEX}", f"-r {IMAGE_DIR}/python/requirements.txt"]


def test_user_pytorch_index_is_kept_not_doubled(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("--extra-index-url https://download.pytorch.org/whl/cu121\ntorch==2.3.1\n")
    req = gather(tmp_path, "r.txt", [])
    assert req.has_torch_index
    assert "--extra-index-url" not in req.generated_file(CPU_TORCH_INDEX)


def test_requirements_outside_the_project_are_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (tmp_path / "outside.txt").write_text("six\n")
    (project / "r.txt").write_text("-r ../outside.txt\n")
    with pytest.raises(ConfigError, match="outside the project"):
        gather(project, "r.txt", [])


def test_python_packages_without_torch_need_no_index(tmp_path: Path) -> None:
    req = gather(tmp_path, None, ["six==1.16.0", "cogkit"])
    assert req.packages == ["six==1.16.0"] and not req.torch_named
    assert req.generated_file(CPU_TORCH_INDEX).splitlines()[1:] == ["six==1.16.0"]


# --- CUDA choice ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "torch, cuda, image",
    [
        ("2.6.0", None, "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"),
        ("2.5.1", None, "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"),
        ("2.3.1", None, "nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04"),
        ("2.9.0", None, "nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04"),
        # A local version names the wheel's CUDA: the cu124 index holds 2.6.0+cu124, cu126's does not.
        ("2.6.0+cu124", None, "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"),
        ("2.1.2+cu118", None, "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"),
        ("2.6.0", "11.8", "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"),
        ("2.6.0", "12.4.0", "nvidia/cuda:12.4.0-cudnn-runtime-ubuntu22.04"),
        (None, None, "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"),
        (None, "12.8", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"),
    ],
)
def test_cuda_choice(torch: str | None, cuda: str | None, image: str) -> None:
    choice, warnings = resolve_cuda(torch, cuda, torch_named=torch is not None)
    assert choice.image == image
    assert not warnings
    assert choice.reason


def test_cuda_choice_warnings_and_errors() -> None:
    choice, warnings = resolve_cuda("2.6.0", "12.1")
    assert choice.cuda == "12.1" and "not one torch 2.6.0 was built for" in warnings[0]
    choice, warnings = resolve_cuda("2.99.0")
    assert choice.cuda in CUDA_IMAGES and "newer than cogkit's CUDA table" in warnings[0]
    with pytest.raises(ConfigError, match="torch is not pinned"):
        resolve_cuda(None, torch_named=True)
    with pytest.raises(ConfigError, match=r"build\.cudnn: cuDNN 8 is not available with CUDA 12\.6"):
        resolve_cuda("2.6.0", cudnn="8")
    with pytest.raises(ConfigError, match=r"build\.cuda: no nvidia/cuda runtime image is known for CUDA 10\.2"):
        resolve_cuda(None, cuda="10.2")
    with pytest.raises(ConfigError, match="does not know which CUDA versions torch 1.9.0"):
        resolve_cuda("1.9.0")
    with pytest.raises(ConfigError, match=r"no nvidia/cuda runtime image is known for the CUDA of torch 1\.12\.1\+cu102 \(10\.2;"):
        resolve_cuda("1.12.1+cu102")
    choice, warnings = resolve_cuda("2.6.0+cu124", "12.6")
    assert choice.cuda == "12.6" and "not one torch 2.6.0+cu124 was built for (12.4)" in warnings[0]


def test_every_cuda_image_ubuntu_has_a_known_python() -> None:
    for cuda in CUDA_IMAGES:
        assert all(u in UBUNTU_PYTHON for u in ubuntus_for(cuda)), cuda
        assert resolve_cuda(None, cuda)[0].python == UBUNTU_PYTHON[CUDA_IMAGES[cuda][2]][0]


def test_local_torch_version_picks_its_wheel_index() -> None:
    assert resolve_cuda("2.6.0+cu124")[0].torch_index == "https://download.pytorch.org/whl/cu124"


# --- the cogkit wheel -------------------------------------------------------------------------


def test_cogkit_wheel_is_reproducible_and_installable(tmp_path: Path) -> None:
    first = build_cogkit_wheel(tmp_path / "a")
    second = build_cogkit_wheel(tmp_path / "b")
    assert first.name == second.name and first.name.startswith("cogkit-") and first.name.endswith("-py3-none-any.whl")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        assert "cogkit/__init__.py" in names and "cogkit/build/dockerfile.py" in names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        info = next(n for n in names if n.endswith(".dist-info/RECORD"))
        record = zf.read(info).decode()
        assert "cogkit/server/__main__.py,sha256=" in record
        entry_points = zf.read(info.replace("RECORD", "entry_points.txt")).decode()
        assert "cogkit = cogkit.cli.main:main" in entry_points
        metadata = zf.read(info.replace("RECORD", "METADATA")).decode()
    # The dependencies are the checkout's current ones, not those of the last `pip install -e .`.
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        assert f"Requires-Dist: {dep}\n" in metadata
    assert f"Version: {project['version']}\n" in metadata
    # pip accepts it (offline, no dependencies).
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(first)], check=True)
    assert (target / "cogkit" / "build" / "wheel.py").is_file()
