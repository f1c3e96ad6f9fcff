"""Check a KServe InferenceService against the ``kserve`` package's own client models, strictly.

Run it with ``.venv-kserve/bin/python`` (scripts/test.sh makes that venv: ``kserve`` pins
protobuf < 7, which cogkit's .venv cannot take beside ray[serve]):

    .venv-kserve/bin/python tests/build/kserve_models_check.py [PATH]   # JSON or YAML; stdin without PATH

Exit status 0: valid; 1: invalid, one ``path: problem`` line per error on stdout; 2: it could not
check (the packages are missing, unreadable input), the reason on stderr.

The models are OpenAPI-generated classes: ``attribute_map`` maps each Python attribute to its
JSON key and ``openapi_types`` gives its type (``str``, ``int``, ``list[V1Container]``,
``dict(str, str)``, a model's name, ...). KServe's models name the Kubernetes types they embed
(V1Container, V1Probe, V1ObjectMeta, ...), which come from the ``kubernetes`` client's models,
read the same way. Every object is walked against its model:

- a key the model does not map is an error (unknown field: kubectl's --validate=strict);
- a value of the wrong JSON type is an error (bool is not an int; an int is a float), so is null;
- a field the model requires (its setter refuses None / its pydantic field is required) must be there;
- ``object`` is any JSON value, except the IntOrString fields below (an int or a string);
- Kubernetes' resource.Quantity: KServe's models call it ``ResourceQuantity``; the Kubernetes
  client types it as ``str``, so its quantity fields are listed below. A quantity is an int or a
  string that ``kubernetes.utils.parse_quantity`` reads (a float is refused, as the API server does).

Only the document's shape is checked: rules of KServe's webhook and Knative are the test's.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import re
import sys
import types
from pathlib import Path
from typing import Any

ROOT_MODEL = "V1beta1InferenceService"

# Kubernetes fields of type resource.Quantity that the kubernetes client's models type as `str`
# (k8s.io/api: core/v1 and the autoscaling metric targets), by model and attribute.
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"), ("V1VolumeResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "size_limit"),
    ("V1ResourceFieldSelector", "divisor"),
    ("V1PodSpec", "overhead"),
    ("V2MetricTarget", "average_value"), ("V2MetricTarget", "value"),
}
# util/intstr.IntOrString fields, which the client's models type as `object`.
INT_OR_STRING_FIELDS = {
    ("V1HTTPGetAction", "port"), ("V1TCPSocketAction", "port"),
    ("V1RollingUpdateDeployment", "max_surge"), ("V1RollingUpdateDeployment", "max_unavailable"),
}
# KServe's models name a few Kubernetes types by their Go package path (k8s.io/api/apps/v1's
# DeploymentStrategy); the kubernetes client names them by version and kind.
_K8S_IO_API = re.compile(r"^K8sIoApi[A-Z][a-z]+((?:V\d+(?:alpha\d+|beta\d+)?)[A-Z]\w*)$")
_LIST = re.compile(r"^[Ll]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$")


class CannotCheck(Exception):
    pass


def load_models() -> tuple[dict[str, type], Any, Any]:
    """KServe's model classes by name, the kubernetes client's models module, parse_quantity."""
    # kserve/__init__.py imports the model server (numpy, fastapi, grpc, pandas, ...), which
    # .venv-kserve does not install: load kserve.models under a bare `kserve` package instead.
    # Its modules import only kserve.configuration (six, urllib3) and each other.
    spec = importlib.util.find_spec("kserve")
    if spec is None or not spec.submodule_search_locations:
        raise CannotCheck("the kserve package is not installed in this interpreter")
    package = types.ModuleType("kserve")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["kserve"] = package
    import kserve.models
    import kubernetes.client.models as k8s_models
    from kubernetes.utils.quantity import parse_quantity

    classes: dict[str, type] = {}
    # kserve/models/__init__.py leaves some modules out (the Knative types): read each one.
    for info in pkgutil.iter_modules(kserve.models.__path__):
        module = importlib.import_module(f"kserve.models.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and hasattr(obj, "openapi_types"):
                classes[name] = obj
    if ROOT_MODEL not in classes:
        raise CannotCheck(f"kserve.models has no {ROOT_MODEL}")
    return classes, k8s_models, parse_quantity


class Checker:
    def __init__(self) -> None:
        self.kserve, self.k8s, self.parse_quantity = load_models()
        from kserve.configuration import Configuration

        self.configuration = Configuration()
        self.errors: list[str] = []
        self._required: dict[type, set[str]] = {}

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path or '<root>'}: {message}")

    def model(self, name: str) -> type | None:
        if name in self.kserve:
            return self.kserve[name]
        m = _K8S_IO_API.match(name)
        cls = getattr(self.k8s, m.group(1) if m else name, None)
        return cls if isinstance(cls, type) and hasattr(cls, "openapi_types") else None

    def required(self, cls: type) -> set[str]:
        """The attributes the model will not go without."""
        if cls not in self._required:
            fields = getattr(cls, "model_fields", None)
            if fields is not None:  # the kubernetes client's pydantic models
                req = {a for a, f in fields.items() if f.is_required()}
            else:  # OpenAPI's legacy python models (kserve's): the setter refuses None
                obj = cls.__new__(cls)
                obj.local_vars_configuration = self.configuration  # client_side_validation on
                req = set()
                for attr in cls.openapi_types:
                    try:
                        setattr(obj, attr, None)
                    except ValueError:
                        req.add(attr)
            self._required[cls] = req
        return self._required[cls]

    def check_object(self, value: Any, cls: type, path: str) -> None:
        if not isinstance(value, dict):
            self.error(path, f"must be an object ({cls.__name__}), got {type(value).__name__}")
            return
        by_key = {key: attr for attr, key in cls.attribute_map.items()}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in by_key:
                self.error(where, f"unknown field: {cls.__name__} has {', '.join(sorted(by_key))}")
                continue
            attr = by_key[key]
            if item is None:
                self.error(where, "null")
                continue
            if (cls.__name__, attr) in QUANTITY_FIELDS:
                kind = {"str": "ResourceQuantity", "Dict[str, str]": "Dict[str, ResourceQuantity]",
                        "dict(str, str)": "dict(str, ResourceQuantity)"}[cls.openapi_types[attr]]
            elif (cls.__name__, attr) in INT_OR_STRING_FIELDS:
                kind = "IntOrString"
            else:
                kind = cls.openapi_types[attr]
            self.check(item, kind, where)
        for attr in sorted(self.required(cls)):
            if cls.attribute_map[attr] not in value:
                self.error(path, f"missing required field {cls.attribute_map[attr]!r} ({cls.__name__})")

    def check(self, value: Any, kind: str, path: str) -> None:
        if value is None:
            self.error(path, "null")
            return
        if m := _LIST.match(kind):
            if not isinstance(value, list):
                self.error(path, f"must be a list ({kind}), got {type(value).__name__}")
                return
            for i, item in enumerate(value):
                self.check(item, m.group(1), f"{path}[{i}]")
            return
        if m := _DICT.match(kind):
            if not isinstance(value, dict):
                self.error(path, f"must be an object ({kind}), got {type(value).__name__}")
                return
            for key, item in value.items():
                self.check(item, m.group(1) or m.group(2), f"{path}.{key}")
            return
        is_int = isinstance(value, int) and not isinstance(value, bool)
        ok = {
            "str": lambda: isinstance(value, str),
            "int": lambda: is_int,
            "float": lambda: is_int or isinstance(value, float),
            "bool": lambda: isinstance(value, bool),
            "object": lambda: True,
            "IntOrString": lambda: is_int or isinstance(value, str),
            "datetime": lambda: isinstance(value, str) and bool(_RFC3339.match(value)),
            "date": lambda: isinstance(value, str) and bool(re.match(r"^\d{4}-\d\d-\d\d$", value)),
            "bytes": lambda: isinstance(value, str),  # base64 in JSON
            "ResourceQuantity": lambda: self.is_quantity(value),
        }.get(kind)
        if ok is not None:
            if not ok():
                self.error(path, f"must be {'a Kubernetes quantity' if kind == 'ResourceQuantity' else kind}, "
                                 f"got {value!r}")
            return
        cls = self.model(kind)
        if cls is None:
            self.error(path, f"cannot check type {kind!r}: no such model in kserve or kubernetes")
            return
        self.check_object(value, cls, path)

    def is_quantity(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return False
        try:
            self.parse_quantity(value)
        except (ValueError, TypeError):
            return False
        return True


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: kserve_models_check.py [PATH]", file=sys.stderr)
        return 2
    try:
        text = Path(argv[0]).read_text() if argv and argv[0] != "-" else sys.stdin.read()
        try:
            doc = json.loads(text)
        except ValueError:
            import yaml  # PyYAML: a dependency of the kubernetes client

            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"neither JSON nor YAML: {e}") from None
        checker = Checker()
    except (OSError, ValueError, ImportError, CannotCheck) as e:
        print(f"kserve_models_check: cannot check: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    checker.check_object(doc, checker.kserve[ROOT_MODEL], "")
    for line in checker.errors:
        print(line)
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
