"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis), with a
rig and an analyst token: no response of 500 or above, and every response conforms to what
the document declares (status, media type, headers, schema). Bounded to a few examples per
operation so the run takes a couple of minutes on 2 cores."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_no_operation_errors_or_breaks_its_contract(service):
    """Every operation of the document, a few generated cases each, sent with a rig and an
    analyst token."""
    from stimloop.api.app import create_app

    root = service.settings.stimulus_root
    write_stimulus_set(root / "fuzz-b", generate_bodies(6, seed=11))
    write_stimulus_set(root / "fuzz-o", generate_objects(2, seed=11))
    write_stimulus_set(root / "fuzz-c", generate_control_bodies(2, seed=11))
    app = create_app(service.settings, service.redis)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def fuzz(case) -> None:
            for headers in (service.rig, service.analyst):
                case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:  # collect all operations' failures, then report them
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
