"""Object storage on S3 or an S3-compatible server (MinIO, Ceph, moto) through aiobotocore.

Open it with ``async with S3Storage(...) as storage`` (the aiobotocore client is an async context
and must be closed); call ``ensure_bucket()`` once at start-up when the bucket may not exist yet.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import exceptions as boto

from common.storage.base import (
    DEFAULT_CONTENT_TYPE,
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    Data,
    MultipartUpload,
    ObjectInfo,
    PartInfo,
    iter_data,
    read_all,
    strip_etag,
    validate_expiry,
    validate_key,
    validate_part_list,
    validate_part_number,
    validate_prefix,
    validate_range,
)
from common.storage.errors import (
    InvalidPart,
    InvalidRange,
    ObjectNotFound,
    PartTooSmall,
    StorageError,
    StorageUnavailable,
    UploadNotFound,
)

READ_CHUNK = 256 * 1024
# Error codes S3 (and compatible servers) use for "try again later".
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "RequestTimeTooSkewed",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Storage:
    """A :class:`~common.storage.base.Storage` in one S3 bucket.

    ``endpoint_url`` is ``None`` for AWS itself, or a MinIO/compatible server's URL;
    ``public_endpoint_url`` is the address clients outside the services' network reach the same
    store at (``presign_get(..., public=True)`` signs for it; None: the same as ``endpoint_url``);
    ``path_style`` addresses ``endpoint/bucket/key`` instead of ``bucket.endpoint/key`` (MinIO and
    most self-hosted servers want it). Without keys, botocore's usual credential chain applies
    (environment, profile, instance role).

    ``upload_part`` sends one part as one request with a Content-Length, so a part given as a
    stream is gathered in memory first: callers bound their part size (``put`` uses ``part_size``).
    """

    MIN_PART_SIZE = MIN_PART_SIZE

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        path_style: bool = False,
        part_size: int = DEFAULT_PART_SIZE,
        max_pool_connections: int = 20,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        if part_size < self.MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {self.MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.public_endpoint_url = public_endpoint_url
        self.region = region
        self.part_size = part_size
        self._credentials = {"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "auto"},
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # Newer botocore adds CRC checksums to every request and demands them on responses,
            # which several S3-compatible servers reject; checksums only where S3 requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: AsyncExitStack | None = None
        self._s3: Any = None
        self._public_signer: Any = None

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Create the aiobotocore client (``async with`` does this for you)."""
        if self._s3 is not None:
            return
        stack = AsyncExitStack()
        client = get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=self._config,
            **self._credentials,
        )
        self._s3 = await stack.enter_async_context(client)
        if self.public_endpoint_url and self.public_endpoint_url != self.endpoint_url:
            # Signing is local computation, but SigV4 covers the host: URLs for clients must be
            # signed for the address they will use. This client only ever signs.
            signer = get_session().create_client(
                "s3",
                endpoint_url=self.public_endpoint_url,
                region_name=self.region,
                config=self._config,
                **self._credentials,
            )
            self._public_signer = await stack.enter_async_context(signer)
        self._stack = stack

    async def aclose(self) -> None:
        stack, self._stack, self._s3, self._public_signer = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> Any:
        """The open aiobotocore S3 client, for the rare call this interface does not cover."""
        if self._s3 is None:
            raise RuntimeError("S3Storage is not open: use `async with S3Storage(...)` or `await open()`")
        return self._s3

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (in ``region``)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
            return
        except boto.ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise _translate(exc, None) from exc
        except (TimeoutError, boto.BotoCoreError, aiohttp.ClientError) as exc:
            raise _translate(exc, None) from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await self.client.create_bucket(**kwargs)
        except boto.ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":  # another process won the race
                raise _translate(exc, None) from exc

    # -- objects ---------------------------------------------------------------------------

    async def put(self, key: str, data: Data, content_type: str | None = None) -> ObjectInfo:
        """One PUT for bytes or a short stream; a long stream becomes a multipart upload."""
        validate_key(key)
        content_type = content_type or DEFAULT_CONTENT_TYPE
        if isinstance(data, bytes | bytearray | memoryview):
            return await self._put_object(key, bytes(data), content_type)
        blocks = _blocks(iter_data(data), self.part_size)
        try:
            first = await anext(blocks, b"")
            second = await anext(blocks, None)
            if second is None:
                return await self._put_object(key, first, content_type)
            upload_id = await self.create_multipart(key, content_type)
            try:
                parts = [
                    await self.upload_part(key, upload_id, 1, first),
                    await self.upload_part(key, upload_id, 2, second),
                ]
                del first, second
                async for block in blocks:
                    parts.append(await self.upload_part(key, upload_id, len(parts) + 1, block))
                return await self.complete_multipart(key, upload_id, parts)
            except BaseException:
                with contextlib.suppress(StorageError):
                    await asyncio.shield(self.abort_multipart(key, upload_id))
                raise
        finally:
            await blocks.aclose()

    async def _put_object(self, key: str, body: bytes, content_type: str) -> ObjectInfo:
        with _errors(key):
            response = await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )
        return ObjectInfo(
            key=key, size=len(body), etag=strip_etag(response["ETag"]), content_type=content_type
        )

    async def get(self, key: str) -> bytes:
        validate_key(key)
        with _errors(key):
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        validate_key(key)
        validate_range(start, end)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start is not None or end is not None:
            kwargs["Range"] = f"bytes={start or 0}-{'' if end is None else end}"
        with _errors(key):
            response = await self.client.get_object(**kwargs)
        body = response["Body"]
        try:
            with _errors(key):
                async for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk
        finally:
            # Closing releases the connection even when the reader stopped early.
            body.close()

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            with _errors(key):
                response = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return None
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=strip_etag(response["ETag"]),
            content_type=response.get("ContentType"),
            last_modified=response.get("LastModified"),
        )

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def delete(self, key: str) -> None:
        validate_key(key)
        with _errors(key):
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def delete_prefix(self, prefix: str) -> int:
        """List a page (up to 1000 keys), delete it in one DeleteObjects request, repeat."""
        validate_prefix(prefix, allow_empty=False)
        deleted = 0
        paginator = self.client.get_paginator("list_objects_v2")
        with _errors(None):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not keys:
                    continue
                response = await self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )
                errors = response.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise StorageError(
                        f"could not delete {len(errors)} objects under {prefix!r}: "
                        f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                    )
                deleted += len(keys)
        return deleted

    async def list(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        validate_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        with _errors(None):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=strip_etag(item["ETag"]),
                        last_modified=item.get("LastModified"),
                    )

    async def presign_get(self, key: str, expires_s: int, *, public: bool = False) -> str | None:
        """A SigV4 presigned GET URL, valid for ``expires_s`` seconds (at most 7 days); ``public``
        signs it for ``public_endpoint_url``."""
        validate_key(key)
        validate_expiry(expires_s)
        signer = self._public_signer if public and self._public_signer is not None else self.client
        url: str = await signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url

    # -- multipart -------------------------------------------------------------------------

    async def create_multipart(self, key: str, content_type: str | None = None) -> str:
        validate_key(key)
        with _errors(key):
            response = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type or DEFAULT_CONTENT_TYPE
            )
        upload_id: str = response["UploadId"]
        return upload_id

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: Data) -> PartInfo:
        validate_key(key)
        validate_part_number(part_number)
        body = await read_all(data)
        with _errors(key):
            response = await self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=part_number, Body=body
            )
        return PartInfo(part_number=part_number, etag=strip_etag(response["ETag"]), size=len(body))

    async def list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        validate_key(key)
        parts: builtins.list[PartInfo] = []
        paginator = self.client.get_paginator("list_parts")
        with _errors(key):
            async for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                parts.extend(
                    PartInfo(
                        part_number=int(item["PartNumber"]),
                        etag=strip_etag(item["ETag"]),
                        size=int(item["Size"]),
                    )
                    for item in page.get("Parts", [])
                )
        return sorted(parts, key=lambda part: part.part_number)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> ObjectInfo:
        validate_key(key)
        validate_part_list(parts)
        listed = [{"PartNumber": part.part_number, "ETag": f'"{strip_etag(part.etag)}"'} for part in parts]
        with _errors(key):
            response = await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
            )
        info = await self.head(key)
        if info is None:  # deleted again in between; describe what was completed
            return ObjectInfo(
                key=key, size=sum(part.size for part in parts), etag=strip_etag(response["ETag"])
            )
        return info

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_key(key)
        try:
            with _errors(key):
                await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except UploadNotFound:
            return

    async def list_multipart_uploads(self, prefix: str = "") -> builtins.list[MultipartUpload]:
        validate_prefix(prefix)
        uploads: builtins.list[MultipartUpload] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with _errors(None):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                uploads.extend(
                    MultipartUpload(item["Key"], item["UploadId"], item["Initiated"].astimezone(UTC))
                    for item in page.get("Uploads", [])
                )
        return sorted(uploads, key=lambda upload: (upload.key, upload.initiated_at))


async def _blocks(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Regroup a stream into blocks of exactly ``size`` bytes, the last one possibly shorter."""
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


def _code(exc: boto.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _errors(key: str | None) -> Iterator[None]:
    """Turn botocore and transport errors into the storage error hierarchy."""
    try:
        yield
    except (TimeoutError, boto.BotoCoreError, boto.ClientError, aiohttp.ClientError) as exc:
        raise _translate(exc, key) from exc


def _translate(exc: Exception, key: str | None) -> StorageError:
    if not isinstance(exc, boto.ClientError):
        if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
            return StorageError(f"S3 credentials are missing: {exc}", key=key)
        return StorageUnavailable(f"S3 could not be reached: {exc}", key=key)
    code = _code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = exc.response.get("Error", {}).get("Message") or str(exc)
    what = f" ({key!r})" if key else ""
    if code in _NOT_FOUND_CODES:
        return ObjectNotFound(f"no object under {key!r}", key=key)
    if code == "NoSuchUpload":
        return UploadNotFound(f"no such multipart upload for {key!r}: {message}", key=key)
    if code == "EntityTooSmall":
        return PartTooSmall(
            f"a part other than the last is smaller than {MIN_PART_SIZE} bytes{what}: {message}", key=key
        )
    if code in ("InvalidPart", "InvalidPartOrder"):
        return InvalidPart(f"{code}{what}: {message}", key=key)
    if code == "InvalidRange" or status == 416:
        return InvalidRange(f"range not satisfiable{what}: {message}", key=key)
    if code == "NoSuchBucket":
        return StorageError(f"the bucket does not exist (call ensure_bucket): {message}", key=key)
    if code in _TRANSIENT_CODES or status >= 500:
        return StorageUnavailable(f"S3 failed{what}: {code} {message}", key=key)
    return StorageError(f"S3 refused the request{what}: {code} {message}", key=key)
