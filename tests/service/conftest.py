"""A service over the CI Redis (its own database and key prefix), a temporary models store and
stimulus root, with workers run in-process in burst mode."""

from __future__ import annotations

import uuid

import pytest
from redis import Redis

from tests.support.loop import loop  # noqa: F401  (the module-scoped loop fixture, for every test here)
from tests.support.paths import REGISTRY
from tests.support.service import (
    Service,
    cleanup,
    redis_test_url,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from fastapi.testclient import TestClient
    from stimloop.api.app import create_app
    from stimloop.api.auth import create_token
    from stimloop.runtime.settings import Settings

    tmp = tmp_path_factory.mktemp("service")
    store = tmp / "models_store"
    store.mkdir()
    (store / "backbones.toml").write_text(REGISTRY.read_text())
    settings = Settings(
        models_store=store,
        redis_url=redis_test_url(),
        key_prefix=f"stimloop-test-{uuid.uuid4().hex[:8]}",
        stimulus_root=tmp / "stimuli",
        device="cpu",
        job_stale_s=600,
    )
    redis = Redis.from_url(settings.redis_url)
    redis.ping()
    rig = {"Authorization": f"Bearer {create_token(settings.tokens_path, 'rig', 'rig')}"}
    analyst = {"Authorization": f"Bearer {create_token(settings.tokens_path, 'analyst', 'a')}"}
    client = TestClient(create_app(settings, redis), raise_server_exceptions=False)
    yield Service(settings, redis, client, rig, analyst, tmp)
    client.app.state.uploads.close()  # the upload processes end with the module
    cleanup(redis, settings)


@pytest.fixture
def deployment(request, tmp_path):
    """Settings and the CI Redis for a worker run in this test, no API: a key prefix of the
    test module's own (``stimloop-<module>-<hex>``) and a temporary models store."""
    from stimloop.runtime.settings import Settings

    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    settings = Settings(
        models_store=tmp_path,
        redis_url=redis_test_url(),
        key_prefix=f"stimloop-{module}-{uuid.uuid4().hex[:8]}",
    )
    redis = Redis.from_url(redis_test_url())
    yield settings, redis
    cleanup(redis, settings)
