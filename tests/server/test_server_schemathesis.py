"""Bad input at scale: schemathesis generates requests from the server's own /openapi.json
(the types_zoo fixture: every input kind) and checks that none gets a 5xx and every
documented response matches the schema. Positive (schema-valid) and negative
(schema-violating) bodies, more than 1000 requests in all, derandomized for CI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server.harness import ServerProcess, copy_fixture

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# (method, path, mode) -> examples. The cancel route has only a string path parameter,
# which no request can violate, so it gets no negative budget.
BUDGET = {
    ("POST", "/predictions", "positive"): 700,
    ("POST", "/predictions", "negative"): 350,
    ("POST", "/predictions/{prediction_id}/cancel", "positive"): 60,
    ("GET", "/health-check", "positive"): 20,
    ("GET", "/", "positive"): 20,
}


@pytest.fixture(scope="module")
def server(conformance_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    project = copy_fixture(conformance_dir / "predictors" / "types_zoo", tmp_path_factory.mktemp("st"))
    srv = ServerProcess(project, env={"COG_PREDICT_TYPE_STUB": "predict.py:Predictor"})
    yield srv
    srv.stop()


def test_generated_requests_get_no_5xx_and_conform_to_the_schema(server: ServerProcess) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    statuses: Counter[tuple[str, int]] = Counter()

    for (method, path, mode), examples in BUDGET.items():
        operation = schema[path][method]
        strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: object) -> None:
            response = case.call(base_url=server.url, timeout=60)  # type: ignore[attr-defined]
            statuses[(f"{method} {path}", response.status_code)] += 1
            case.validate_response(response, checks=checks)  # type: ignore[attr-defined]

        run()

    total = sum(statuses.values())
    print("schemathesis requests by status:", dict(statuses))
    assert total >= 1000, statuses
    assert not [k for k in statuses if k[1] >= 500], statuses
    # the run exercised both accepted and rejected predictions
    assert statuses[("POST /predictions", 200)] > 100, statuses
    assert statuses[("POST /predictions", 422)] > 100, statuses
    assert server.health()["status"] == "READY", server.log()
