"""The rig client and the contract import and run without torch."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
sys.modules['torch'] = None  # any import of torch now fails
import stimloop_contract.service_client, stimloop_contract.trial_tables
import stimloop_rig.rig_client, stimloop_rig.cli, stimloop_rig.readers
from stimloop_rig.cli import app
from typer.testing import CliRunner
result = CliRunner().invoke(app, ['--help'])
assert result.exit_code == 0, result.output
assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}
print('ok')
"""


def test_client_runs_without_torch():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
