"""`cogkit export`'s refusals: a clear line naming the flag and the rule on stderr, a non-zero
exit status (1 for cogkit's own checks, 2 for argparse's usage errors), nothing on stdout."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.build.test_export_manifests import IMAGE, export, make_project


def refused(r, status: int, *words: str) -> None:
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    for word in words:
        assert word in r.stderr, r.stderr


@pytest.mark.parametrize("target", ["kserve", "k8s"])
@pytest.mark.parametrize("model", ["resnet", "acme/", "/resnet", "acme/res/net", "acme/res net", "_acme/resnet",
                                   "ac!me/resnet", "acme/resnet-", "acme/" + "r" * 64])
def test_bad_owner_name(tmp_path: Path, target: str, model: str) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    refused(export(project, target, model, "--image", IMAGE), 1, "error: OWNER/NAME:", "'/'")


def test_a_name_kubernetes_cannot_take_says_what_it_became(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    refused(export(project, "kserve", "acme/3d_Model", "--image", IMAGE), 1,
            "OWNER/NAME: NAME '3d_Model' gives the Kubernetes name '3d-model'", "starting with a letter")


@pytest.mark.parametrize("target", ["kserve", "k8s"])
def test_missing_image(tmp_path: Path, target: str) -> None:
    project = make_project(tmp_path / "m", gpu=True)
    refused(export(project, target, "acme/resnet"), 1, "error: --image is required")


def test_image_falls_back_to_cog_yaml_image(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False, extra="image: registry.example.com/acme/resnet\n")
    r = export(project, "kserve", "acme/resnet")
    assert r.returncode == 0, r.stderr
    (doc,) = yaml.safe_load_all(r.stdout)
    assert doc["spec"]["predictor"]["containers"][0]["image"] == "registry.example.com/acme/resnet"


@pytest.mark.parametrize("image", ["registry.example.com/Acme/resnet:v1", "acme/resnet:v 1", "acme/resnet:-v1"])
def test_bad_image(tmp_path: Path, image: str) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    refused(export(project, "k8s", "acme/resnet", "--image", image), 1, "error: --image:", "image reference")


@pytest.mark.parametrize("target", ["kserve", "k8s"])
def test_missing_cog_yaml(tmp_path: Path, target: str) -> None:
    refused(export(tmp_path, target, "acme/resnet", "--image", IMAGE), 1, "error: --project: no cog.yaml in")
    refused(export(tmp_path, target, "acme/resnet", "--image", IMAGE, "--project", str(tmp_path / "nope")), 1,
            "error: --project:", "is not a folder")


def test_invalid_cog_yaml(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    (project / "cog.yaml").write_text("build:\n  gpu: yes please\n")
    refused(export(project, "kserve", "acme/resnet", "--image", IMAGE), 1, "build.gpu: must be true or false")


@pytest.mark.parametrize("args, status, words", [
    (["--replicas", "0"], 1, ["error: --replicas: must be an integer >= 1"]),
    (["--replicas", "two"], 2, ["--replicas", "invalid int value"]),
    (["--cpu", "lots"], 1, ["error: --cpu: 'lots' is not a Kubernetes quantity"]),
    (["--memory", "2 GB"], 1, ["error: --memory:"]),
])
def test_bad_numbers(tmp_path: Path, args: list[str], status: int, words: list[str]) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    refused(export(project, "k8s", "acme/resnet", "--image", IMAGE, *args), status, *words)


def test_usage_errors(tmp_path: Path) -> None:
    project = make_project(tmp_path / "m", gpu=False)
    refused(export(project), 2, "TARGET")
    refused(export(project, "kserve"), 2, "OWNER/NAME")
    refused(export(project, "helm", "acme/resnet"), 2, "invalid choice")
    refused(export(project, "kserve", "acme/resnet", "--replicas", "2"), 2, "unrecognized arguments")
