"""wrk as the benchmarks' load client: the Lua that reports its figures as JSON, and one runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

# Appended to every script: wrk prints one line of JSON that run_wrk reads back.
WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def paced_delay(delay_ms: float) -> str:
    """Lua: a random pause (mean ``delay_ms``) before each request, so the connections do not
    march in step and send bursts: the offered load is smooth, as from many independent clients."""
    return (
        f"\nmath.randomseed(os.time())\nfunction delay()\n  return math.random() * {2 * delay_ms:.3f}\nend\n"
    )


def run_wrk(
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    headers: Sequence[str] = (),
) -> dict[str, Any]:
    """Run wrk with ``script`` (which must end with WRK_DONE) against ``url``; its figures."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "5s"]
        for header in headers:
            argv += ["-H", header]
        out = subprocess.run(
            [*argv, "-s", handle.name, url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    found = re.search(r"WRKJSON (\{.*\})", out)
    if not found:
        raise RuntimeError(f"unexpected wrk output: {out}")
    data = json.loads(found.group(1))
    duration = data["duration_us"] / 1e6
    return {
        "req_s": round(data["requests"] / duration, 1),
        "requests": data["requests"],
        "errors": data["errors"],
        "non_2xx": data["non2xx"],
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
    }
