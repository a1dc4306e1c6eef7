"""A 1 GiB tus upload into storage (local backend) against a real `streamify up`; prints JSON.

Starts `streamify up` as a subprocess on free ports (own data directory in a temp dir, databases
``streamify_benchup_<run>_*`` created and dropped, Redis database 13, one transcoder), signs up a
creator (register, login, channel, refresh), creates a video per upload and sends the bytes with
the tus protocol (POST to create, PATCH chunks of ``--chunk-mib``; each chunk body is a generator
of 1 MiB blocks, so the client never holds more than one block). Measured, in the same run:

- ``direct``: to the catalog's own /uploads (the baseline), and
- ``gateway``: through the gateway's /api/v1/uploads, as a client would;

for each: MB/s (10^6 bytes/s, first byte of the creation request to the last PATCH's answer,
which includes the catalog's completion work: moving the file into place and sniffing it with
ffprobe), the RSS growth of the gateway and catalog processes (found by the port they listen
on; peak during the upload minus the value after a small warm-up upload; sampled every 20 ms with
psutil), the CPU seconds each of the two spent on the upload, and how busy the whole machine was
meanwhile (the machine is shared: a busy one explains a slow run). The bytes are not a video:
after the upload the video ends ``failed`` (the sniffing says so), which does not matter here.
Targets (issue 3): >= 150 MB/s through the gateway, each process < 64 MiB growth.

    .venv/bin/python bench/upload.py [--mib 1024] [--chunk-mib 128] [--skip-direct]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import RESULTS, Up, port_range  # noqa: E402

MIB = 1024**2
BLOCK = MIB
PASSWORD = "bench-upload-canyon-47"


class RssSampler:
    """Peak RSS of some processes, sampled in a thread while the upload runs."""

    def __init__(self, processes: dict[str, psutil.Process], interval_s: float = 0.02) -> None:
        self.processes, self.interval_s = processes, interval_s
        self.baseline = {name: p.memory_info().rss for name, p in processes.items()}
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, process in self.processes.items():
                self.peak[name] = max(self.peak[name], process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end = {name: p.memory_info().rss for name, p in self.processes.items()}

    def report(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "baseline_mib": round(self.baseline[name] / MIB, 1),
                "peak_growth_mib": round((self.peak[name] - self.baseline[name]) / MIB, 1),
                "end_growth_mib": round((self.end[name] - self.baseline[name]) / MIB, 1),
            }
            for name in self.processes
        }


def _blocks(size: int, block: bytes) -> Iterator[bytes]:
    """``size`` bytes as a stream of ``block``-sized pieces (the last one cut)."""
    left = size
    while left > 0:
        piece = block if left >= len(block) else block[:left]
        left -= len(piece)
        yield piece


class Creator:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        email = f"bench-upload-{uuid.uuid4().hex[:10]}@example.com"
        registered = http.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Bench"}
        )
        registered.raise_for_status()
        login = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        self.token = login.json()["access_token"]
        channel = http.post(
            "/api/v1/users/me/channel", json={"channel_name": f"Bench {email[:20]}"}, headers=self.headers
        )
        channel.raise_for_status()
        refreshed = http.post("/api/v1/auth/refresh", json={"refresh_token": login.json()["refresh_token"]})
        refreshed.raise_for_status()
        self.token = refreshed.json()["access_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def video(self) -> str:
        created = self.http.post("/api/v1/videos", json={"title": "Bench upload"}, headers=self.headers)
        created.raise_for_status()
        return str(created.json()["id"])


def tus_upload(
    http: httpx.Client, endpoint: str, creator: Creator, size: int, chunk: int
) -> tuple[float, list[float]]:
    """Create a tus upload of ``size`` bytes at ``endpoint`` and send them: the seconds it took, and
    each PATCH's (the last one includes the catalog's completion: moving the file into place, sniffing)."""
    block = os.urandom(BLOCK)
    video_id = creator.video()
    metadata = "video_id " + base64.b64encode(video_id.encode()).decode()
    tus = {"Tus-Resumable": "1.0.0", **creator.headers}
    started = time.monotonic()
    created = http.post(endpoint, headers={**tus, "Upload-Length": str(size), "Upload-Metadata": metadata})
    if created.status_code != 201:
        raise RuntimeError(f"tus creation: {created.status_code} {created.text}")
    # The catalog answers with the public path (/api/v1/uploads/{id}); straight at the catalog the
    # same upload is at its own /uploads/{id}.
    upload_id = created.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    location = f"{endpoint}/{upload_id}"
    offset = 0
    patches: list[float] = []
    while offset < size:
        length = min(chunk, size - offset)
        headers = {
            **tus,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }
        sent = time.monotonic()
        answer = http.patch(location, headers=headers, content=_blocks(length, block))
        patches.append(round(time.monotonic() - sent, 2))
        if answer.status_code != 204:
            raise RuntimeError(f"tus PATCH at {offset}: {answer.status_code} {answer.text}")
        offset = int(answer.headers["Upload-Offset"])
    return time.monotonic() - started, patches


def measure(up: Up, creator: Creator, *, base_url: str, path: str, size: int, chunk: int) -> dict[str, Any]:
    processes = {
        "gateway": up.listener(up.port),
        "catalog": up.listener(int(up.service_url("catalog").rsplit(":", 1)[1])),
    }
    with httpx.Client(base_url=base_url, timeout=300) as http:
        # Warm-up: every code path once (connections, imports, buffers) before the baseline.
        tus_upload(http, base_url + path, creator, 16 * MIB, 8 * MIB)
        cpu_before = {name: _cpu_s(p) for name, p in processes.items()}
        machine_before = psutil.cpu_times()
        with RssSampler(processes) as rss:
            seconds, patches = tus_upload(http, base_url + path, creator, size, chunk)
        machine_after = psutil.cpu_times()
        cpu = {name: round(_cpu_s(p) - cpu_before[name], 2) for name, p in processes.items()}
    idle = machine_after.idle - machine_before.idle
    total = sum(machine_after) - sum(machine_before)
    return {
        "bytes": size,
        "seconds": round(seconds, 2),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "patch_s": patches,
        "rss": rss.report(),
        "cpu_s": cpu,
        # How busy the whole machine was meanwhile (other work on it included): 1.0 is every core.
        "machine_busy": round(1 - idle / total, 2) if total > 0 else None,
    }


def _cpu_s(process: psutil.Process) -> float:
    """User + system CPU seconds of ``process`` (all its threads) so far."""
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="upload size in MiB (default 1024)")
    parser.add_argument("--chunk-mib", type=int, default=128, help="bytes per PATCH in MiB (default 128)")
    parser.add_argument("--skip-direct", action="store_true", help="only through the gateway")
    options = parser.parse_args()
    size, chunk = options.mib * MIB, options.chunk_mib * MIB

    prefix = f"streamify_benchup_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    up = Up(tmp / "data", port_range(), prefix)
    report: dict[str, Any] = {"size_mib": options.mib, "chunk_mib": options.chunk_mib, "storage": "local"}
    try:
        report["stack_ready_s"] = round(up.start(), 1)
        with httpx.Client(base_url=up.url, timeout=60) as api:
            creator = Creator(api)
            storage = up.data_dir / "storage"
            if not options.skip_direct:
                report["direct_catalog"] = measure(
                    up, creator, base_url=up.service_url("catalog"), path="/uploads", size=size, chunk=chunk
                )
                shutil.rmtree(storage / "uploads", ignore_errors=True)
            report["gateway"] = measure(
                up, creator, base_url=up.url, path="/api/v1/uploads", size=size, chunk=chunk
            )
        if "direct_catalog" in report:
            report["gateway_vs_direct_throughput"] = round(
                report["gateway"]["mb_per_s"] / report["direct_catalog"]["mb_per_s"], 3
            )
        growth = report["gateway"]["rss"]
        report["targets_met"] = {
            "mb_per_s_ge_150": report["gateway"]["mb_per_s"] >= 150,
            "gateway_rss_lt_64mib": growth["gateway"]["peak_growth_mib"] < 64,
            "catalog_rss_lt_64mib": growth["catalog"]["peak_growth_mib"] < 64,
        }
        report["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    finally:
        up.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        asyncio.run(up.drop_databases())
    text = json.dumps(report, indent=2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "upload.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
