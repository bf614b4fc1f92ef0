"""Property-based API testing with schemathesis against the OpenAPI document, on the ASGI app in process (no
server): for every operation a bounded number of generated requests (valid and invalid, ``MAX_EXAMPLES`` each,
derandomised so CI is reproducible), sent with an API key on a keyed server. No answer is a 5xx, every error is the
JSON error shape ``{"error": {"code", "message"}}``, and schemathesis' own checks pass (documented status codes,
content types and response schemas, undeclared methods answered 405 with ``Allow``, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from ser.serve.app import create_app
from ser.serve.engine import ModelHolder
from ser.serve.settings import Settings
from tests.conftest import export_tiny_model

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance  # noqa: E402

schemathesis.serializer.alias("audio/*", "application/octet-stream")  # raw audio bodies are bytes

KEY = "k-schemathesis"
UPLOADS = {"/v1/predict", "/v1/predict/batch", "/v1/timeline"}
MAX_EXAMPLES = 20


# The app is made at collection (cheap: no model yet; the schema is read from it there) and gets its model from the
# module fixture below (routes read the holder from app.state). schemathesis' lazy `from_fixture` schemas do not run
# under pytest 9, so the schema is loaded eagerly.
APP = create_app(Settings(api_keys=[f"fuzz:{KEY}"], request_timeout_s=20, inference_workers=1))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"X-API-Key": KEY})


@pytest.fixture(scope="module", autouse=True)
def loaded_model(tmp_path_factory):
    model_dir: Path = export_tiny_model(tmp_path_factory.mktemp("schemathesis") / "m", "1")
    holder = ModelHolder(model_dir)
    assert holder.reload().ok
    APP.state.holder = holder


def _check_error_shape(response) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], body
    assert isinstance(err.get("message"), str) and err["message"], body
    assert set(err) <= {"code", "message", "details"}, body


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api(case):
    response = case.call(headers={"X-API-Key": KEY})
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
    _check_error_shape(response)
    # Any bytes are a schema-valid upload but only audio is accepted, and a multipart text part is bytes like a file
    # part: the checks that valid data is accepted and invalid data refused do not apply to the upload bodies.
    excluded = [positive_data_acceptance, negative_data_rejection] if case.path in UPLOADS else []
    case.validate_response(response, excluded_checks=excluded)
