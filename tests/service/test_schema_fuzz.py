"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis), with a
rig and an analyst token, in both directions: schema-valid requests are never refused for a
rule the document does not state (positive data acceptance), schema-invalid ones are always
refused, no response is 500 or above, every response conforms to what the document declares
(status, media type, headers, schema), and an undocumented method is a 405 with ``Allow``.
Bounded to a few examples per operation so the run takes a couple of minutes on 2 cores."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
# Binary bodies (an NPZ of trials, a zip of images) have rules no schema can state (a
# readable archive; trials naming the session's images): their refusals are 422 or 400
# with the rule named, as the operations' descriptions say.
BINARY_BODIES = {"upload_phase_one", "upload_phase_two", "upload_phase_three"}
BINARY_BODIES |= {"upload_stimulus_set"}


def windows_in_order(case) -> bool:
    """The one rule of a session's settings that no schema can state, documented in the
    operation: each window's end after its start (422 otherwise)."""
    windows = (case.body or {}).get("windows") if isinstance(case.body, dict) else None
    if not isinstance(windows, dict):
        return True
    return all(not isinstance(w, list) or len(w) != 2 or w[1] > w[0] for w in windows.values())


CROSS_FIELD = {"create_session": windows_in_order}


def test_no_operation_errors_or_breaks_its_contract(service):
    """Every operation of the document, a few generated cases each, valid and invalid, sent
    with a rig and an analyst token."""
    from stimloop.api.app import create_app

    root = service.settings.stimulus_root
    write_stimulus_set(root / "fuzz-b", generate_bodies(6, seed=11))
    write_stimulus_set(root / "fuzz-o", generate_objects(2, seed=11))
    write_stimulus_set(root / "fuzz-c", generate_control_bodies(2, seed=11))
    app = create_app(service.settings, service.redis)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30, [op.label for op in operations]
    failures = []
    for operation in operations:
        checks = CHECKS
        if operation.definition.raw.get("operationId") in BINARY_BODIES:
            checks = [c for c in CHECKS if c is not positive_data_acceptance]
        rule = CROSS_FIELD.get(operation.definition.raw.get("operationId"))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            if rule is not None and mode is GenerationMode.POSITIVE:
                strategy = strategy.filter(rule)
            try:
                fuzz(strategy, checks, service)
            except Unsatisfiable:  # nothing of this operation can be made invalid
                continue
            except BaseException as exc:  # all operations' failures (groups too), then report
                if not isinstance(exc, Exception | BaseExceptionGroup):
                    raise
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
    assert not failures, "\n\n".join(failures)


def fuzz(strategy, checks, service) -> None:
    """A few cases of ``strategy``, each sent with both tokens and checked."""

    @given(case=strategy)
    @settings(
        max_examples=6,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def run(case) -> None:
        for headers in (service.rig, service.analyst):
            case.call_and_validate(headers=headers, checks=checks)

    run()


def test_an_undocumented_method_is_405_with_allow(service):
    r = service.client.patch("/v1/sessions", headers=service.rig)
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem")
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
