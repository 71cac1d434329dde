"""The API process never imports torch: it enqueues, workers compute."""

from __future__ import annotations

import subprocess
import sys

from tests.support.service import redis_test_url

CODE = """
import sys, tempfile, pathlib
sys.modules['torch'] = None  # any import of torch now fails loudly
from fastapi.testclient import TestClient
from redis import Redis
from stimloop.api.app import create_app
from stimloop.api.auth import create_token
from stimloop.runtime.settings import Settings

store = pathlib.Path(tempfile.mkdtemp()) / 'models_store'
settings = Settings(models_store=store, redis_url=sys.argv[1], key_prefix='stimloop-torchfree')
token = create_token(settings.tokens_path, 'rig', 'torch-free')
client = TestClient(create_app(settings, Redis.from_url(sys.argv[1])))
headers = {'Authorization': f'Bearer {token}'}
for path in ('/v1/health', '/v1/backbones', '/v1/sessions', '/openapi.json'):
    r = client.get(path, headers=headers)
    assert r.status_code == 200, (path, r.status_code, r.text)
assert 'resnet50_random' in client.get('/v1/backbones', headers=headers).text
assert sys.modules['torch'] is None
print('ok')
"""


def test_the_api_starts_and_answers_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", CODE, redis_test_url()], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
