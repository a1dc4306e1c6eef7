"""The storage contract: every test here runs on the local backend and on S3 over HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from common.storage import (
    MIN_PART_SIZE,
    InvalidKey,
    InvalidPart,
    InvalidRange,
    LocalStorage,
    ObjectNotFound,
    PartInfo,
    PartTooSmall,
    S3Storage,
    Storage,
    UploadNotFound,
)
from tests.fixtures_s3 import S3Server, unique_bucket

KiB = 1024
MiB = 1024 * KiB
PATTERN = bytes(range(256)) * 40  # 10 KiB, every offset distinguishable modulo 256


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_stream(storage: Storage, key: str, **kwargs: int | None) -> bytes:
    return b"".join([chunk async for chunk in storage.stream(key, **kwargs)])


async def keys_under(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key async for info in storage.list(prefix)]


class TestPutAndGet:
    async def test_bytes_come_back_unchanged_with_their_content_type(self, storage: Storage) -> None:
        info = await storage.put("thumbnails/1.jpg", PATTERN, content_type="image/jpeg")

        assert await storage.get("thumbnails/1.jpg") == PATTERN
        assert (info.size, info.etag, info.content_type) == (len(PATTERN), md5(PATTERN), "image/jpeg")

    async def test_a_second_put_replaces_the_object(self, storage: Storage) -> None:
        await storage.put("a/key", b"first version")
        await storage.put("a/key", b"second")

        assert await storage.get("a/key") == b"second"

    async def test_an_empty_object_is_an_object(self, storage: Storage) -> None:
        await storage.put("empty", b"")

        assert await storage.get("empty") == b""
        head = await storage.head("empty")
        assert head is not None and head.size == 0

    async def test_a_stream_from_an_async_generator_is_stored_whole(self, storage: Storage) -> None:
        pieces = [PATTERN[:1], PATTERN, b"", PATTERN[7:3000], b"tail"]

        info = await storage.put("streamed/object.bin", chunks(*pieces), content_type="video/mp4")

        expected = b"".join(pieces)
        assert await storage.get("streamed/object.bin") == expected
        assert (info.size, info.etag) == (len(expected), md5(expected))
        head = await storage.head("streamed/object.bin")
        assert head is not None and head.content_type == "video/mp4"

    async def test_a_stream_longer_than_a_part_is_stored_whole(self, storage: Storage) -> None:
        # On S3 this goes through a multipart upload (one full part and a short last one).
        block = PATTERN * (MIN_PART_SIZE // len(PATTERN) // 4 + 1)
        pieces = [block] * 4 + [b"end"]

        info = await storage.put("streamed/long.bin", chunks(*pieces))

        expected = b"".join(pieces)
        assert info.size == len(expected) > MIN_PART_SIZE
        assert md5(await storage.get("streamed/long.bin")) == md5(expected)
        assert await storage.list_multipart_uploads("streamed/") == []

    async def test_a_stream_that_fails_midway_leaves_the_previous_object_in_place(
        self, storage: Storage
    ) -> None:
        await storage.put("videos/6/source", b"previous")

        async def broken() -> AsyncIterator[bytes]:
            yield b"new data that never completes"
            raise ConnectionResetError("client went away")

        with pytest.raises(ConnectionResetError):
            await storage.put("videos/6/source", broken())

        assert await storage.get("videos/6/source") == b"previous"
        assert await keys_under(storage) == ["videos/6/source"]
        assert await storage.list_multipart_uploads() == []

    async def test_content_type_defaults_to_octet_stream(self, storage: Storage) -> None:
        await storage.put("no-type", b"x")

        head = await storage.head("no-type")
        assert head is not None and head.content_type == "application/octet-stream"

    async def test_getting_a_missing_object_raises_object_not_found(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            await storage.get("missing/object")


class TestRangeReads:
    @pytest.fixture
    async def key(self, storage: Storage) -> str:
        await storage.put("videos/1/segment.ts", PATTERN, content_type="video/mp2t")
        return "videos/1/segment.ts"

    async def test_without_a_range_the_whole_object_streams(self, storage: Storage, key: str) -> None:
        assert await read_stream(storage, key) == PATTERN

    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            (100, 199, PATTERN[100:200]),
            (0, 0, PATTERN[:1]),
            (10_000, None, PATTERN[10_000:]),
            (None, 49, PATTERN[:50]),
            (len(PATTERN) - 1, None, PATTERN[-1:]),
            (5_000, 10**9, PATTERN[5_000:]),
        ],
        ids=["middle", "first-byte", "from-offset", "up-to-end", "last-byte", "end-past-size"],
    )
    async def test_a_range_returns_exactly_the_inclusive_byte_span(
        self, storage: Storage, key: str, start: int | None, end: int | None, expected: bytes
    ) -> None:
        assert await read_stream(storage, key, start=start, end=end) == expected

    async def test_a_range_starting_past_the_end_is_refused(self, storage: Storage, key: str) -> None:
        with pytest.raises(InvalidRange):
            await read_stream(storage, key, start=len(PATTERN))

    async def test_a_range_ending_before_it_starts_is_refused(self, storage: Storage, key: str) -> None:
        with pytest.raises(InvalidRange):
            await read_stream(storage, key, start=10, end=5)

    async def test_a_reader_may_stop_early(self, storage: Storage, key: str) -> None:
        stream = storage.stream(key)
        first = await anext(stream)
        await stream.aclose()

        assert PATTERN.startswith(first) and first
        assert await read_stream(storage, key, start=1, end=2) == PATTERN[1:3]

    async def test_streaming_a_missing_object_raises_object_not_found(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            await read_stream(storage, "missing/segment.ts")


class TestHeadExistsDelete:
    async def test_head_describes_a_stored_object(self, storage: Storage) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)
        await storage.put("videos/2/master.m3u8", b"#EXTM3U\n", content_type="application/vnd.apple.mpegurl")

        head = await storage.head("videos/2/master.m3u8")

        assert head is not None
        assert head.key == "videos/2/master.m3u8"
        assert (head.size, head.etag) == (8, md5(b"#EXTM3U\n"))
        assert head.content_type == "application/vnd.apple.mpegurl"
        assert head.last_modified is not None and head.last_modified > before

    async def test_a_missing_object_has_no_head_and_does_not_exist(self, storage: Storage) -> None:
        assert await storage.head("videos/none") is None
        assert await storage.exists("videos/none") is False

    async def test_a_deleted_object_is_gone(self, storage: Storage) -> None:
        await storage.put("videos/3/source", b"data")
        assert await storage.exists("videos/3/source") is True

        await storage.delete("videos/3/source")

        assert await storage.exists("videos/3/source") is False
        assert await keys_under(storage) == []

    async def test_deleting_a_missing_object_is_not_an_error(self, storage: Storage) -> None:
        await storage.delete("never/stored")


class TestDeletePrefix:
    async def test_every_object_under_the_prefix_and_nothing_else_is_removed(self, storage: Storage) -> None:
        for key in (
            "videos/1/master.m3u8",
            "videos/1/360p/seg_000.ts",
            "videos/10/master.m3u8",
            "thumbnails/1.jpg",
        ):
            await storage.put(key, b"x")

        removed = await storage.delete_prefix("videos/1/")

        assert removed == 2
        assert await keys_under(storage) == ["thumbnails/1.jpg", "videos/10/master.m3u8"]

    async def test_a_prefix_with_nothing_under_it_removes_nothing(self, storage: Storage) -> None:
        await storage.put("videos/5/master.m3u8", b"x")

        assert await storage.delete_prefix("videos/6/") == 0
        assert await storage.exists("videos/5/master.m3u8")

    async def test_an_empty_prefix_is_refused_rather_than_wiping_the_store(self, storage: Storage) -> None:
        await storage.put("keep", b"x")

        with pytest.raises(InvalidKey):
            await storage.delete_prefix("")
        assert await storage.exists("keep")


class TestList:
    async def test_objects_are_listed_in_key_order_with_size_and_etag(self, storage: Storage) -> None:
        stored = {"b/2": b"22", "a/1": b"1", "a-b": b"333", "a/0/z": b"", "c": b"4444"}
        for key, data in stored.items():
            await storage.put(key, data, content_type="text/plain")

        listed = [info async for info in storage.list()]

        assert [info.key for info in listed] == sorted(stored)
        assert [(info.size, info.etag) for info in listed] == [
            (len(stored[key]), md5(stored[key])) for key in sorted(stored)
        ]
        assert all(info.content_type is None and info.last_modified is not None for info in listed)

    async def test_a_prefix_is_a_plain_string_prefix(self, storage: Storage) -> None:
        for key in ("videos/1/a", "videos/1/b/c", "videos/10/a", "videos/2/a", "thumbnails/1.jpg"):
            await storage.put(key, b"x")

        assert await keys_under(storage, "videos/1/") == ["videos/1/a", "videos/1/b/c"]
        assert await keys_under(storage, "videos/1") == ["videos/1/a", "videos/1/b/c", "videos/10/a"]
        assert await keys_under(storage, "thumb") == ["thumbnails/1.jpg"]
        assert await keys_under(storage, "nothing/") == []


class TestMultipartUpload:
    async def test_three_parts_uploaded_listed_and_completed_form_the_object(self, storage: Storage) -> None:
        key = "videos/7/source"
        first = PATTERN * (MIN_PART_SIZE // len(PATTERN)) + PATTERN[: MIN_PART_SIZE % len(PATTERN)]
        second = bytes(reversed(first))
        last = b"z" * KiB
        assert len(first) == len(second) == MIN_PART_SIZE

        upload_id = await storage.create_multipart(key, "video/mp4")
        parts = [
            await storage.upload_part(key, upload_id, 1, first),
            await storage.upload_part(key, upload_id, 2, chunks(second[:KiB], second[KiB:])),
            await storage.upload_part(key, upload_id, 3, last),
        ]
        listed = await storage.list_parts(key, upload_id)
        uploads = await storage.list_multipart_uploads("videos/7/")

        assert listed == parts
        assert [(p.part_number, p.size, p.etag) for p in parts] == [
            (1, MIN_PART_SIZE, md5(first)),
            (2, MIN_PART_SIZE, md5(second)),
            (3, KiB, md5(last)),
        ]
        assert [(u.key, u.upload_id) for u in uploads] == [(key, upload_id)]
        # moto reports a fixed date in 2010 here (real S3 and MinIO report the real one), so only
        # the type is checked: an aware UTC time, not in the future.
        assert uploads[0].initiated_at.utcoffset() == timedelta(0)
        assert uploads[0].initiated_at <= datetime.now(UTC) + timedelta(minutes=1)
        assert await storage.head(key) is None  # nothing visible before completion

        info = await storage.complete_multipart(key, upload_id, listed)

        assert info.size == 2 * MIN_PART_SIZE + KiB
        assert info.etag.endswith("-3")
        head = await storage.head(key)
        assert head is not None
        assert (head.size, head.etag, head.content_type) == (info.size, info.etag, "video/mp4")
        assert md5(await read_stream(storage, key)) == md5(first + second + last)
        assert await read_stream(storage, key, start=MIN_PART_SIZE - 2, end=MIN_PART_SIZE + 1) == (
            first[-2:] + second[:2]
        )
        assert await storage.list_multipart_uploads("videos/7/") == []
        with pytest.raises(UploadNotFound):
            await storage.list_parts(key, upload_id)

    async def test_a_single_small_part_is_a_valid_upload(self, storage: Storage) -> None:
        upload_id = await storage.create_multipart("small/file", "text/plain")
        part = await storage.upload_part("small/file", upload_id, 1, b"hello")

        await storage.complete_multipart("small/file", upload_id, [part])

        assert await storage.get("small/file") == b"hello"

    async def test_uploading_a_part_number_again_replaces_that_part(self, storage: Storage) -> None:
        upload_id = await storage.create_multipart("again/file")
        await storage.upload_part("again/file", upload_id, 1, b"old bytes")
        part = await storage.upload_part("again/file", upload_id, 1, b"new")

        assert await storage.list_parts("again/file", upload_id) == [PartInfo(1, md5(b"new"), 3)]
        await storage.complete_multipart("again/file", upload_id, [part])
        assert await storage.get("again/file") == b"new"

    async def test_a_too_small_part_before_the_last_is_refused(self, storage: Storage) -> None:
        key = "videos/8/source"
        upload_id = await storage.create_multipart(key, "video/mp4")
        parts = [
            await storage.upload_part(key, upload_id, 1, b"a" * KiB),
            await storage.upload_part(key, upload_id, 2, b"b" * KiB),
        ]

        with pytest.raises(PartTooSmall):
            await storage.complete_multipart(key, upload_id, parts)

        assert await storage.head(key) is None
        # The upload is still open (as on S3) and can be aborted.
        assert [u.upload_id for u in await storage.list_multipart_uploads(key)] == [upload_id]
        await storage.abort_multipart(key, upload_id)

    async def test_completing_with_a_part_that_was_not_uploaded_is_refused(self, storage: Storage) -> None:
        upload_id = await storage.create_multipart("bad/parts")
        part = await storage.upload_part("bad/parts", upload_id, 1, b"data")

        with pytest.raises(InvalidPart):
            await storage.complete_multipart("bad/parts", upload_id, [PartInfo(1, md5(b"other"), 4)])
        with pytest.raises(InvalidPart):
            await storage.complete_multipart("bad/parts", upload_id, [part, PartInfo(2, md5(b"x"), 1)])
        with pytest.raises(InvalidPart):
            await storage.complete_multipart("bad/parts", upload_id, [])
        assert await storage.head("bad/parts") is None
        await storage.abort_multipart("bad/parts", upload_id)

    async def test_an_aborted_upload_leaves_no_object_and_is_no_longer_listed(self, storage: Storage) -> None:
        key = "videos/9/source"
        upload_id = await storage.create_multipart(key, "video/mp4")
        await storage.upload_part(key, upload_id, 1, b"partial data")
        assert [u.upload_id for u in await storage.list_multipart_uploads("videos/")] == [upload_id]

        await storage.abort_multipart(key, upload_id)

        assert await storage.head(key) is None
        assert await storage.list_multipart_uploads("videos/") == []
        with pytest.raises(UploadNotFound):
            await storage.list_parts(key, upload_id)
        await storage.abort_multipart(key, upload_id)  # aborting twice is harmless

    async def test_parts_for_an_unknown_upload_or_another_key_are_refused(self, storage: Storage) -> None:
        if isinstance(storage, S3Storage):
            pytest.skip(
                "moto answers UploadPart for an unknown upload id with a 500 and ignores the key; "
                "S3 and MinIO answer NoSuchUpload, which S3Storage maps to UploadNotFound"
            )
        upload_id = await storage.create_multipart("owner/key")
        aborted_id = await storage.create_multipart("owner/key")
        await storage.abort_multipart("owner/key", aborted_id)

        with pytest.raises(UploadNotFound):
            await storage.upload_part("owner/key", aborted_id, 1, b"x")
        with pytest.raises(UploadNotFound):
            await storage.upload_part("owner/key", "not-an-upload-id", 1, b"x")
        with pytest.raises(UploadNotFound):
            await storage.upload_part("other/key", upload_id, 1, b"x")
        with pytest.raises(UploadNotFound):
            await storage.list_parts("other/key", upload_id)
        await storage.abort_multipart("owner/key", upload_id)

    async def test_uploads_are_listed_by_prefix(self, storage: Storage) -> None:
        ids = {key: await storage.create_multipart(key) for key in ("up/b", "up/a", "other/c")}

        listed = await storage.list_multipart_uploads("up/")

        assert [(u.key, u.upload_id) for u in listed] == [("up/a", ids["up/a"]), ("up/b", ids["up/b"])]
        for key, upload_id in ids.items():
            await storage.abort_multipart(key, upload_id)

    async def test_part_numbers_outside_s3s_range_are_refused(self, storage: Storage) -> None:
        upload_id = await storage.create_multipart("numbers/key")

        for number in (0, 10_001):
            with pytest.raises(InvalidPart):
                await storage.upload_part("numbers/key", upload_id, number, b"x")
        await storage.abort_multipart("numbers/key", upload_id)


def full_part(seed: int) -> bytes:
    """MIN_PART_SIZE bytes that differ from every other seed's at every offset."""
    return bytes((i * 7 + seed) % 251 for i in range(256)) * (MIN_PART_SIZE // 256)


def multipart_etag(*parts: bytes) -> str:
    return md5(b"".join(bytes.fromhex(md5(part)) for part in parts)) + f"-{len(parts)}"


class TestMultipartPartOrder:
    """Parts sent in order, out of order, twice, or left out of the completion."""

    KEY = "videos/11/source"

    async def send(self, storage: Storage, upload_id: str, number: int, data: bytes) -> PartInfo:
        # Odd-sized chunks and one big one, as a network stream would bring them.
        pieces = [data[:1000], data[1000 : 2 * MiB], data[2 * MiB :]]
        return await storage.upload_part(self.KEY, upload_id, number, chunks(*pieces))

    async def test_parts_sent_in_order_as_streams_come_back_byte_for_byte(self, storage: Storage) -> None:
        data = [full_part(1), full_part(2), full_part(3), b"end" * 1000]
        upload_id = await storage.create_multipart(self.KEY, "video/mp4")

        parts = [await self.send(storage, upload_id, n, part) for n, part in enumerate(data, start=1)]
        info = await storage.complete_multipart(self.KEY, upload_id, parts)

        assert [(p.etag, p.size) for p in parts] == [(md5(part), len(part)) for part in data]
        assert (info.size, info.etag) == (sum(map(len, data)), multipart_etag(*data))
        assert await storage.get(self.KEY) == b"".join(data)
        assert await storage.list_multipart_uploads(self.KEY) == []

    @pytest.mark.parametrize("again", [1, 2, 3])
    async def test_a_part_sent_again_with_other_bytes_ends_with_the_new_bytes(
        self, storage: Storage, again: int
    ) -> None:
        data = {1: full_part(1), 2: full_part(2), 3: b"last" * 1000}
        upload_id = await storage.create_multipart(self.KEY)
        first = [await self.send(storage, upload_id, n, part) for n, part in data.items()]
        data[again] = full_part(9) + b"longer" if again < 3 else b"other last"

        resent = await self.send(storage, upload_id, again, data[again])
        listed = await storage.list_parts(self.KEY, upload_id)

        assert listed == [resent if p.part_number == again else p for p in first]
        with pytest.raises(InvalidPart):  # the replaced part's ETag no longer names a part
            await storage.complete_multipart(self.KEY, upload_id, first)
        info = await storage.complete_multipart(self.KEY, upload_id, listed)
        assert await storage.get(self.KEY) == data[1] + data[2] + data[3]
        assert info.etag == multipart_etag(data[1], data[2], data[3])

    @pytest.mark.parametrize("order", [(3, 1, 2), (1, 3, 2), (2, 1, 3)], ids=str)
    async def test_parts_sent_out_of_order_are_joined_in_part_number_order(
        self, storage: Storage, order: tuple[int, ...]
    ) -> None:
        data = {1: full_part(1), 2: full_part(2), 3: b"tail" * 1000}
        upload_id = await storage.create_multipart(self.KEY)
        for number in order:
            await self.send(storage, upload_id, number, data[number])

        listed = await storage.list_parts(self.KEY, upload_id)
        info = await storage.complete_multipart(self.KEY, upload_id, listed)

        assert [p.part_number for p in listed] == [1, 2, 3]
        assert await storage.get(self.KEY) == data[1] + data[2] + data[3]
        assert info.etag == multipart_etag(data[1], data[2], data[3])

    @pytest.mark.parametrize(
        ("sent", "completed"),
        [((1, 2, 3), (1, 2)), ((1, 2, 3), (1, 3)), ((1, 2, 3), (2, 3)), ((1, 2, 5), (1, 2, 5))],
        ids=str,
    )
    async def test_completing_with_some_of_the_parts_joins_exactly_those(
        self, storage: Storage, sent: tuple[int, ...], completed: tuple[int, ...]
    ) -> None:
        data = {n: full_part(n) for n in sent}
        upload_id = await storage.create_multipart(self.KEY)
        parts = {n: await self.send(storage, upload_id, n, data[n]) for n in sent}

        info = await storage.complete_multipart(self.KEY, upload_id, [parts[n] for n in completed])

        assert await storage.get(self.KEY) == b"".join(data[n] for n in completed)
        assert info.etag == multipart_etag(*(data[n] for n in completed))
        with pytest.raises(UploadNotFound):
            await storage.list_parts(self.KEY, upload_id)

    async def test_a_completion_that_is_refused_leaves_the_upload_as_it_was(self, storage: Storage) -> None:
        data = [full_part(1), b"x" * KiB, full_part(3)]
        upload_id = await storage.create_multipart(self.KEY)
        parts = [await self.send(storage, upload_id, n, part) for n, part in enumerate(data, start=1)]

        with pytest.raises(PartTooSmall):  # part 2 is short and not the last
            await storage.complete_multipart(self.KEY, upload_id, parts)
        with pytest.raises(InvalidPart):  # listed out of order
            await storage.complete_multipart(self.KEY, upload_id, [parts[1], parts[0]])

        assert await storage.head(self.KEY) is None
        assert await storage.list_parts(self.KEY, upload_id) == parts
        await storage.complete_multipart(self.KEY, upload_id, parts[:2])
        assert await storage.get(self.KEY) == data[0] + data[1]


class TestPublicEndpoint:
    async def test_urls_for_clients_are_signed_for_the_public_address_and_work_there(
        self, s3_server: S3Server
    ) -> None:
        # The services reach the store at 127.0.0.1; clients know it as localhost (compose's
        # minio:9000 versus the address a browser uses). Same server, two names.
        public = s3_server.endpoint_url.replace("127.0.0.1", "localhost")
        assert public != s3_server.endpoint_url
        store = S3Storage(
            bucket=unique_bucket(),
            endpoint_url=s3_server.endpoint_url,
            public_endpoint_url=public,
            region=s3_server.region,
            access_key_id=s3_server.access_key_id,
            secret_access_key=s3_server.secret_access_key,
            path_style=True,
        )
        async with store:
            await store.ensure_bucket()
            await store.put("thumbnails/1.jpg", PATTERN, content_type="image/jpeg")
            for_client = await store.presign_get("thumbnails/1.jpg", 60, public=True)
            internal = await store.presign_get("thumbnails/1.jpg", 60)
        assert for_client is not None and for_client.startswith(public + "/")
        assert internal is not None and internal.startswith(s3_server.endpoint_url + "/")
        async with httpx.AsyncClient() as client:
            response = await client.get(for_client)
        assert (response.status_code, response.content) == (200, PATTERN)


class TestPresignedGet:
    async def test_s3_gives_a_url_a_plain_http_client_downloads_and_local_gives_none(
        self, storage: Storage
    ) -> None:
        await storage.put("videos/4/360p/seg_000.ts", PATTERN, content_type="video/mp2t")

        url = await storage.presign_get("videos/4/360p/seg_000.ts", expires_s=60)

        if isinstance(storage, S3Storage):
            assert url is not None
            async with httpx.AsyncClient() as client:
                response = await client.get(url)
                assert response.status_code == 200
                assert response.content == PATTERN
                ranged = await client.get(url, headers={"Range": "bytes=10-19"})
                assert (ranged.status_code, ranged.content) == (206, PATTERN[10:20])
        else:
            assert isinstance(storage, LocalStorage)
            assert url is None
            assert storage.local_path("videos/4/360p/seg_000.ts").read_bytes() == PATTERN

    async def test_expiry_outside_s3s_limits_is_refused(self, storage: Storage) -> None:
        for expires_s in (0, 8 * 24 * 3600):
            with pytest.raises(ValueError):
                await storage.presign_get("any/key", expires_s=expires_s)


BAD_KEYS = [
    "../escape",
    "a/../../escape",
    "/etc/passwd",
    "",
    "a//b",
    "a/./b",
    "trailing/",
    ".multipart/x",
    "videos/.hidden",
    "back\\slash",
    "nul\x00byte",
    "x" * 1025,
]


class TestKeys:
    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    async def test_keys_that_could_escape_or_collide_are_refused_everywhere(
        self, storage: Storage, key: str
    ) -> None:
        with pytest.raises(InvalidKey):
            await storage.put(key, b"x")
        with pytest.raises(InvalidKey):
            await storage.get(key)
        with pytest.raises(InvalidKey):
            await storage.head(key)
        with pytest.raises(InvalidKey):
            await storage.create_multipart(key)
        assert await keys_under(storage) == []

    async def test_the_refusal_says_what_is_wrong(self, storage: Storage) -> None:
        with pytest.raises(InvalidKey, match=r"'\.\.'"):
            await storage.put("videos/../../etc/passwd", b"x")

    async def test_spec_style_keys_with_dots_dashes_and_unicode_are_fine(self, storage: Storage) -> None:
        keys = ["videos/abc-123/1080p/seg_00001.ts", "thumbnails/abc-123.jpg", "files/naïve name (1).mp4"]
        for key in keys:
            await storage.put(key, key.encode())

        assert await keys_under(storage) == sorted(keys)
        assert [await storage.get(key) for key in keys] == [key.encode() for key in keys]
