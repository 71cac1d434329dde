"""Secrets in a request's query string are redacted before a log line is written."""

from __future__ import annotations

import logging

from stimloop.api.access_log import RedactTokens, redact


def test_secret_parameters_and_our_tokens_are_redacted_and_the_rest_kept():
    assert redact("/v1/sessions?token=abc&x=1") == "/v1/sessions?token=[redacted]&x=1"
    assert (
        redact("/a?ACCESS_TOKEN=abc;api_key=k") == "/a?ACCESS_TOKEN=[redacted];api_key=[redacted]"
    )
    assert redact("/a/stl_0123456789abcdef/b") == "/a/stl_[redacted]/b"
    assert redact("/v1/sessions/abc?replace=true") == "/v1/sessions/abc?replace=true"


def test_the_filter_rewrites_an_access_log_records_arguments():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/x?token=stl_abcdefgh12345678", "1.1", 401), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert "stl_abcdefgh" not in record.getMessage()
    assert "/v1/x?token=[redacted]" in record.getMessage()
