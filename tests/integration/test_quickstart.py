"""The README's library example runs as written."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_against_the_local_redis(local_redis) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env={**os.environ, "REDIS_URL": local_redis.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "indexed: 5"
    assert "Storm shell jacket" in lines[1] and "Rain boots" in lines[2]  # both waterproof, both <= $200
    assert "'clicks': 1" in result.stdout and "q4 after refresh" in result.stdout
