"""Which CUDA base image a GPU model gets: torch version -> CUDA -> ``nvidia/cuda`` tag.

The choice is explicit and overridable: with torch pinned we take the highest CUDA
that torch release was published for (as Cog does); ``build.cuda`` / ``build.cudnn``
in cog.yaml override it. The tables are facts about torch and NVIDIA releases;
:func:`resolve_cuda` returns the decision and a one-line reason that the build prints.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from cogkit.exceptions import ConfigError

# torch major.minor -> CUDA versions its wheels were published for (download.pytorch.org/whl/cuXYZ).
TORCH_CUDA: dict[str, tuple[str, ...]] = {
    "2.0": ("11.7", "11.8"),
    "2.1": ("11.8", "12.1"),
    "2.2": ("11.8", "12.1"),
    "2.3": ("11.8", "12.1"),
    "2.4": ("11.8", "12.1", "12.4"),
    "2.5": ("11.8", "12.1", "12.4"),
    "2.6": ("11.8", "12.4", "12.6"),
    "2.7": ("11.8", "12.6", "12.8"),
    "2.8": ("12.6", "12.8", "12.9"),
    "2.9": ("12.6", "12.8", "13.0"),
    "2.10": ("12.6", "12.8", "13.0"),
    "2.11": ("12.6", "12.8", "13.0"),
    "2.12": ("12.6", "12.9", "13.0"),
}

# CUDA major.minor -> (full version, cuDNN major, Ubuntu) of the newest nvidia/cuda runtime image.
CUDA_IMAGES: dict[str, tuple[str, str, str]] = {
    "11.7": ("11.7.1", "8", "22.04"),
    "11.8": ("11.8.0", "8", "22.04"),
    "12.0": ("12.0.1", "8", "22.04"),
    "12.1": ("12.1.1", "8", "22.04"),
    "12.2": ("12.2.2", "8", "22.04"),
    "12.3": ("12.3.2", "9", "22.04"),
    "12.4": ("12.4.1", "9", "22.04"),
    "12.5": ("12.5.1", "9", "22.04"),
    "12.6": ("12.6.3", "9", "24.04"),
    "12.8": ("12.8.1", "9", "24.04"),
    "12.9": ("12.9.1", "9", "24.04"),
    "13.0": ("13.0.1", "9", "24.04"),
}

# Older Ubuntu releases that also have an nvidia/cuda cudnn runtime image for that CUDA
# (besides the one in CUDA_IMAGES): where another Python is needed.
OTHER_UBUNTUS: dict[str, tuple[str, ...]] = {
    "12.6": ("22.04",),
    "12.8": ("22.04",),
    "12.9": ("22.04",),
    "13.0": ("22.04",),
}

# Ubuntu release -> the Pythons its archive ships (python3.X), its default first; 22.04's
# universe also has 3.11. GPU images use one of them: the other ways to get a Python
# (uv/pyenv builds, the deadsnakes PPA) download from GitHub or Launchpad, which a build
# limited to package registries cannot reach.
UBUNTU_PYTHON: dict[str, tuple[str, ...]] = {"22.04": ("3.10", "3.11"), "24.04": ("3.12",)}

# CUDA used when neither torch nor build.cuda says otherwise (Cog's default).
DEFAULT_CUDA = "11.8"


@dataclass(frozen=True)
class CudaChoice:
    cuda: str  # major.minor
    cuda_full: str  # major.minor.patch as in the image tag
    cudnn: str
    ubuntu: str
    reason: str
    python_version: str | None = None  # set by with_python; else the Ubuntu's default

    @property
    def python(self) -> str:
        """The Python (major.minor) the image gets, from this image's Ubuntu."""
        return self.python_version or UBUNTU_PYTHON[self.ubuntu][0]

    @property
    def image(self) -> str:
        return f"nvidia/cuda:{cuda_image_tag(self.cuda_full, self.cudnn, self.ubuntu)}"

    @property
    def torch_index(self) -> str:
        """The PyTorch wheel index for this CUDA (e.g. .../whl/cu124)."""
        return "https://download.pytorch.org/whl/cu" + self.cuda.replace(".", "")


def cuda_image_tag(cuda_full: str, cudnn: str, ubuntu: str) -> str:
    # NVIDIA's tag scheme: up to 12.3 the cuDNN major is in the tag ("cudnn8", "cudnn9");
    # from 12.4 on the images carry cuDNN 9 and the tag just says "cudnn".
    minor = _major_minor(cuda_full)
    cudnn_part = "cudnn" if _as_tuple(minor) >= (12, 4) else f"cudnn{cudnn}"
    return f"{cuda_full}-{cudnn_part}-runtime-ubuntu{ubuntu}"


def ubuntus_for(cuda: str) -> tuple[str, ...]:
    """The Ubuntu releases with an nvidia/cuda runtime image for ``cuda``, newest first."""
    return (CUDA_IMAGES[cuda][2], *OTHER_UBUNTUS.get(cuda, ()))


def with_python(choice: CudaChoice, python_version: str, where: str = "cog.yaml") -> tuple[CudaChoice, list[str]]:
    """``choice`` on the Ubuntu release whose own Python is ``python_version``.

    Raises BuildError naming build.python_version and the Pythons that work for that CUDA
    when none of its images has it. Returns warnings to print (a patch release asked for
    is the distribution's, not pinned)."""
    from cogkit.build.builders import BuildError

    wanted = _major_minor(python_version)
    for ubuntu in ubuntus_for(choice.cuda):
        if wanted in UBUNTU_PYTHON.get(ubuntu, ()):
            break
    else:
        works = sorted({v for u in ubuntus_for(choice.cuda) for v in UBUNTU_PYTHON.get(u, ())}, key=_as_tuple)
        elsewhere = sorted((c for c in CUDA_IMAGES if any(wanted in UBUNTU_PYTHON.get(u, ()) for u in ubuntus_for(c))),
                           key=_as_tuple)
        hint = (f"; CUDA {', '.join(elsewhere)} images have Python {wanted} (build.cuda)" if elsewhere else "")
        raise BuildError(
            f"{where}: build.python_version: Python {python_version} is not available for a GPU image with "
            f"CUDA {choice.cuda}: GPU images use the Python of the nvidia/cuda image's Ubuntu "
            f"({', '.join('Ubuntu ' + u for u in ubuntus_for(choice.cuda))}), because downloading another "
            f"Python needs GitHub; set build.python_version to {' or '.join(works)}{hint}"
        )
    warnings = []
    if python_version != wanted:
        warnings.append(f"build.python_version {python_version}: GPU images get Ubuntu {ubuntu}'s Python {wanted} "
                        "at its own patch release")
    if ubuntu != choice.ubuntu:
        choice = dataclasses.replace(choice, ubuntu=ubuntu, reason=f"{choice.reason}; Ubuntu {ubuntu} for Python {wanted}")
    return dataclasses.replace(choice, python_version=wanted), warnings


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


_LOCAL_CUDA = re.compile(r"\+cu(\d+)(\d)$")


def torch_cuda_versions(torch_version: str) -> tuple[tuple[str, ...], bool]:
    """CUDA versions published for a torch release, and whether the release is in our table.

    A pin with a local version (``2.6.0+cu124``) names its wheel's CUDA, so that one only:
    another CUDA's wheel index does not hold that file. A torch release newer than the
    table gets the newest row (and the caller warns)."""
    local = _LOCAL_CUDA.search(torch_version)
    if local:
        return (f"{int(local.group(1))}.{local.group(2)}",), True
    key = _major_minor(torch_version.split("+")[0])
    if key in TORCH_CUDA:
        return TORCH_CUDA[key], True
    newest = max(TORCH_CUDA, key=_as_tuple)
    if _as_tuple(key) > _as_tuple(newest):
        return TORCH_CUDA[newest], False
    raise ConfigError(
        f"cog.yaml: build.gpu: cogkit does not know which CUDA versions torch {torch_version} was built for "
        f"(known: torch {', '.join(sorted(TORCH_CUDA, key=_as_tuple))}); set build.cuda explicitly"
    )


def resolve_cuda(
    torch_version: str | None,
    cuda: str | None = None,
    cudnn: str | None = None,
    torch_named: bool = False,
) -> tuple[CudaChoice, list[str]]:
    """Pick the CUDA image for a GPU build; returns the choice and warnings to print.

    ``torch_version`` is the pinned torch version (None when not pinned), ``torch_named``
    whether torch is in the requirements at all."""
    warnings: list[str] = []
    if cuda:
        key = _major_minor(cuda)
        if key not in CUDA_IMAGES:
            raise ConfigError(
                f"cog.yaml: build.cuda: no nvidia/cuda runtime image is known for CUDA {cuda} "
                f"(known: {', '.join(sorted(CUDA_IMAGES, key=_as_tuple))})"
            )
        reason = f"CUDA {cuda} from build.cuda"
        if torch_version:
            supported, _ = torch_cuda_versions(torch_version)
            if key not in supported:
                warnings.append(
                    f"build.cuda {cuda} is not one torch {torch_version} was built for "
                    f"({', '.join(supported)}); keeping {cuda} as requested"
                )
    elif torch_version:
        supported, known = torch_cuda_versions(torch_version)
        usable = [c for c in supported if c in CUDA_IMAGES]
        if not usable:
            raise ConfigError(
                f"cog.yaml: build.gpu: no nvidia/cuda runtime image is known for the CUDA of torch {torch_version} "
                f"({', '.join(supported)}; known: {', '.join(sorted(CUDA_IMAGES, key=_as_tuple))})"
            )
        key = max(usable, key=_as_tuple)
        if not known:
            warnings.append(
                f"torch {torch_version} is newer than cogkit's CUDA table; assuming it supports "
                f"{', '.join(supported)} like the newest known release (set build.cuda to choose)"
            )
        reason = (
            f"CUDA {key}: the highest CUDA torch {torch_version} was built for "
            f"({', '.join(usable)}); set build.cuda to choose another"
        )
    elif torch_named:
        raise ConfigError(
            "cog.yaml: build.gpu: torch is not pinned to a version, so cogkit cannot tell which CUDA it needs; "
            "pin it (e.g. torch==2.6.0) or set build.cuda"
        )
    else:
        key = DEFAULT_CUDA
        reason = f"CUDA {key}: the default when neither torch nor build.cuda says otherwise"

    full, default_cudnn, ubuntu = CUDA_IMAGES[key]
    if cuda and cuda.count(".") == 2:
        full = cuda  # an exact patch release was asked for
    if cudnn and cudnn.split(".")[0] != default_cudnn:
        raise ConfigError(
            f"cog.yaml: build.cudnn: cuDNN {cudnn} is not available with CUDA {key} "
            f"(the nvidia/cuda runtime image for CUDA {key} has cuDNN {default_cudnn})"
        )
    return CudaChoice(key, full, default_cudnn, ubuntu, reason), warnings
