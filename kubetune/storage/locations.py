"""``open_storage``: a location (a local directory, ``s3://bucket/prefix``) to its backend.

Apart from ``kubetune.storage.base`` so that the interface never imports its backends (each
backend imports the interface)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubetune.storage.base import Storage, StorageError

if TYPE_CHECKING:
    from kubetune.storage.s3 import S3Config


def open_storage(location: str, s3: S3Config | None = None, **s3_options: Any) -> Storage:
    """``s3://bucket/prefix`` opens S3 (boto3, imported only then); anything else is a local
    directory (``~`` expanded, created if missing)."""
    if location.startswith("s3://"):
        from kubetune.storage.s3 import S3Config, S3Storage

        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise StorageError(f"storage path {location!r} names no bucket")
        config = s3 or S3Config.from_env(**s3_options)
        return S3Storage(bucket, prefix, config)
    if "://" in location and not location.startswith("file://"):
        scheme = location.split("://", 1)[0]
        raise StorageError(
            f"storage path {location!r}: scheme {scheme!r} is not supported (use a local"
            " directory or s3://bucket/prefix)"
        )
    from kubetune.storage.local import LocalStorage

    return LocalStorage(location.removeprefix("file://"))
