"""Bodies stream through the gateway: 1 GiB up and 1 GiB down keep the gateway's memory flat.

The gateway runs as a real uvicorn process (the production protocol) in front of a real upstream
process that discards or generates the bytes; the gateway's RSS is sampled while they flow.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import psutil
import pytest

from tests.gateway.conftest import ServerProcess

GIB = 1024**3
MIB = 1024**2
LIMIT_MIB = 64


class RSSPeak:
    """Peak resident memory of a process, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RSSPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MIB


async def zeros(total: int) -> AsyncIterator[bytes]:
    chunk = bytes(MIB)
    sent = 0
    while sent < total:
        part = chunk if total - sent >= MIB else chunk[: total - sent]
        sent += len(part)
        yield part


@pytest.mark.slow
class TestStreamingMemory:
    async def test_a_1_gib_upload_and_download_keep_gateway_rss_flat(
        self, gateway_process: ServerProcess
    ) -> None:
        base = gateway_process.url
        async with aiohttp.ClientSession(
            read_bufsize=MIB, timeout=aiohttp.ClientTimeout(total=120)
        ) as session:
            # Warm the connection pools and buffers so the baseline is the steady state.
            async with session.get(
                f"{base}/api/v1/videos/warm", params={"op": "bytes", "n": str(8 * MIB)}
            ) as r:
                await r.read()

            with RSSPeak(gateway_process.proc.pid) as upload_rss:
                started = time.perf_counter()
                async with session.post(
                    f"{base}/api/v1/uploads/big",
                    params={"op": "sink"},
                    data=zeros(GIB),
                    headers={"Content-Length": str(GIB)},
                ) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["received"] == GIB
                upload_s = time.perf_counter() - started

            with RSSPeak(gateway_process.proc.pid) as download_rss:
                started = time.perf_counter()
                received = 0
                async with session.get(
                    f"{base}/api/v1/videos/big", params={"op": "bytes", "n": str(GIB)}
                ) as response:
                    assert response.status == 200
                    async for part in response.content.iter_chunked(MIB):
                        received += len(part)
                download_s = time.perf_counter() - started
            assert received == GIB

        up_mb_s, down_mb_s = GIB / upload_s / 1e6, GIB / download_s / 1e6
        print(
            f"\n1 GiB upload: {up_mb_s:.0f} MB/s, gateway RSS +{upload_rss.growth_mib:.1f} MiB"
            f" (baseline {upload_rss.baseline / MIB:.0f} MiB)"
            f"\n1 GiB download: {down_mb_s:.0f} MB/s, gateway RSS +{download_rss.growth_mib:.1f} MiB"
        )
        assert upload_rss.growth_mib < LIMIT_MIB
        assert download_rss.growth_mib < LIMIT_MIB

    async def test_a_client_that_leaves_mid_download_leaves_the_gateway_healthy(
        self, gateway_process: ServerProcess
    ) -> None:
        seen = len(gateway_process.log_lines())
        async with aiohttp.ClientSession() as session:
            response = await session.get(
                f"{gateway_process.url}/api/v1/videos/big", params={"op": "bytes", "n": str(GIB)}
            )
            await response.content.read(4 * MIB)
            response.close()
        await asyncio.sleep(0.5)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{gateway_process.url}/api/v1/videos/x") as r,
        ):
            assert r.status == 200
        errors = [
            line for line in gateway_process.log_lines()[seen:] if line.get("level") in ("warning", "error")
        ]
        assert errors == []
