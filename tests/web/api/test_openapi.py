"""The OpenAPI document validates, the docs page serves it from our own static files, and a
schemathesis run against a live server finds no 5xx on any GET or JSON POST route."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.django_db


def test_it_publishes_a_valid_openapi_document(client, owner):
    import schemathesis

    client.force_login(owner.user)
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema; raises on any violation
    assert document["info"]["version"] == "1"
    security = document["components"]["securitySchemes"]
    assert {s["type"] for s in security.values()} == {"http", "apiKey"}
    upload = document["paths"]["/api/v1/projects/{project_uuid}/models"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    errors = upload["responses"]
    assert {"401", "403", "404", "413", "422"} <= set(errors)


def test_it_serves_the_docs_page_without_a_cdn(client, owner):
    client.force_login(owner.user)
    page = client.get("/api/v1/docs").content.decode()
    assert "/api/v1/openapi.json" in page
    assert "swagger-ui-bundle.js" in page and "cdn." not in page


@pytest.fixture
def hypothesis_home(tmp_path):
    """Hypothesis keeps caches under ./.hypothesis by default: not in the checkout."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


def _fuzz(operation, mode, *, base_url: str, headers: dict, real_ids: dict, ran: dict) -> None:
    """Up to a dozen generated requests to one operation; fails on any 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    @settings(
        max_examples=12,
        deadline=None,
        database=None,  # nothing to replay between runs: examples are derandomized
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(st.tuples(operation.as_strategy(generation_mode=mode), st.booleans()))
    def run(drawn):
        case, aim_at_real_objects = drawn
        if aim_at_real_objects and case.path_parameters:
            case.path_parameters = {
                name: real_ids.get(name, value) for name, value in case.path_parameters.items()
            }
        case.call_and_validate(base_url=base_url, headers=headers, checks=[not_a_server_error])
        ran[operation.label] = ran.get(operation.label, 0) + 1

    run()


@pytest.mark.django_db(transaction=True)
def test_it_answers_generated_requests_without_a_server_error(
    live_server,
    hypothesis_home,
    owner,
    token_for,
    project,
    model_version,
    dataset,
    finished_job,
    queued_job,
):
    """Positive and negative (invalid) requests to every GET and JSON POST operation, with an
    owner's token; about half aimed at the team's real objects instead of random ids."""
    import schemathesis

    headers = {"Authorization": f"Bearer {token_for(owner)}"}
    document = requests.get(
        f"{live_server.url}/api/v1/openapi.json", headers=headers, timeout=30
    ).json()
    schema = schemathesis.openapi.from_dict(document)
    real_ids = {
        "project_uuid": str(project.uuid),
        "version_uuid": str(model_version.uuid),
        "job_uuid": str(finished_job.uuid),
        "artifact_uuid": str(finished_job.artifacts.first().uuid),
    }
    ran: dict[str, int] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        body = operation.definition.raw.get("requestBody", {}).get("content", {})
        if operation.method.upper() not in ("GET", "POST") or "multipart/form-data" in body:
            continue  # uploads: covered with real files in test_workflows
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _fuzz(
                operation,
                mode,
                base_url=live_server.url,
                headers=headers,
                real_ids=real_ids,
                ran=ran,
            )
    # Every GET and JSON POST operation was exercised, within a bounded time.
    assert len(ran) == 17, sorted(ran)
    assert time.monotonic() - started < 240
