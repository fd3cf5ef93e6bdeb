"""S3 (and S3-compatible: GCS's interoperability API, MinIO, Ceph, SeaweedFS) as storage.

boto3 is imported here only, so ``import kubetune`` never pays for it. Large files go through
boto3's transfer manager (multipart, parallel parts).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetune.storage.base import Storage, StorageError, join_key

MiB = 1024 * 1024


@dataclass
class S3Config:
    """How to reach the bucket. Credentials left empty fall back to boto3's own chain
    (environment, IRSA / workload identity web-identity tokens, instance profiles)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: str = "auto"  # "path" for MinIO, Ceph, SeaweedFS
    verify: bool | str = True  # False, or a CA bundle path
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 64 * MiB
    max_concurrency: int = 8
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ValueError(
                "S3 addressingStyle must be 'auto', 'path' or 'virtual',"
                f" got {self.addressing_style!r}"
            )

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Config:
        """Read ``KUBETUNE_S3_*`` (and boto3's usual ``AWS_*``) variables."""
        env = os.environ
        verify: bool | str = True
        raw_verify = env.get("KUBETUNE_S3_VERIFY")
        if raw_verify is not None:
            lowered = raw_verify.lower()
            if lowered in ("0", "false", "no"):
                verify = False
            elif lowered not in ("1", "true", "yes"):
                verify = raw_verify  # a CA bundle
        values: dict[str, Any] = {
            "endpoint_url": env.get("KUBETUNE_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL"),
            "region": env.get("KUBETUNE_S3_REGION") or env.get("AWS_DEFAULT_REGION"),
            "access_key_id": env.get("AWS_ACCESS_KEY_ID"),
            "secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
            "session_token": env.get("AWS_SESSION_TOKEN"),
            "addressing_style": env.get("KUBETUNE_S3_ADDRESSING_STYLE", "auto"),
            "verify": verify,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str, config: S3Config) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.config = config
        session = boto3.session.Session(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            aws_session_token=config.session_token,
            region_name=config.region,
        )
        self.client = session.client(
            "s3",
            endpoint_url=config.endpoint_url,
            verify=config.verify,
            config=Config(
                s3={"addressing_style": config.addressing_style},
                retries={"max_attempts": config.max_attempts, "mode": "standard"},
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                max_pool_connections=max(10, config.max_concurrency * 2),
                # The S3 stores we target do not all accept the newer default checksums.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self.transfer_config = TransferConfig(
            multipart_threshold=config.multipart_threshold,
            multipart_chunksize=config.multipart_chunksize,
            max_concurrency=config.max_concurrency,
            use_threads=True,
        )

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _rel(self, full_key: str) -> str:
        if self.prefix and full_key.startswith(self.prefix + "/"):
            return full_key[len(self.prefix) + 1 :]
        return full_key

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _wrap(self, exc: Exception, key: str) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return FileNotFoundError(f"no object at {self.uri(key)}")
            return StorageError(f"S3 {code or 'error'} for {self.uri(key)}: {exc}", code)
        return StorageError(f"S3 request for {self.uri(key)} failed: {exc}")

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._wrap(exc, key) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(response["Body"].read())
        except Exception as exc:
            raise self._wrap(exc, key) from exc

    def get_bytes_from(self, key: str, start: int) -> bytes:
        if start <= 0:
            try:
                return self.get_bytes(key)
            except FileNotFoundError:
                return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-"
            )
            return bytes(response["Body"].read())
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("InvalidRange", "416", "NoSuchKey", "404", "NotFound"):
                return b""  # nothing past start (or no object)
            raise self._wrap(exc, key) from exc

    def sizes(self, prefix: str = "") -> dict[str, int]:
        full = self._key(prefix)
        out: dict[str, int] = {}
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    if not full or k == full or k.startswith(full + "/") or not prefix:
                        out[self._rel(k)] = int(obj["Size"])
        except Exception as exc:
            raise self._wrap(exc, prefix) from exc
        return out

    def put_file(self, local_path: str, key: str) -> None:
        try:
            self.client.upload_file(
                local_path, self.bucket, self._key(key), Config=self.transfer_config
            )
        except Exception as exc:
            raise self._wrap(exc, key) from exc

    def put_files(
        self,
        pairs: list[tuple[str, str]],
        on_done: Callable[[str, str], None] | None = None,
    ) -> None:
        """Many files at once through one transfer manager: small files in parallel, large
        ones in parallel parts; ``on_done`` runs as each file is stored."""
        if not pairs:
            return
        from boto3.s3.transfer import create_transfer_manager

        manager = create_transfer_manager(self.client, self.transfer_config)
        try:
            futures = [
                (path, key, manager.upload(path, self.bucket, self._key(key)))
                for path, key in pairs
            ]
            first_error: Exception | None = None
            for path, key, future in futures:
                try:
                    future.result()
                except Exception as exc:
                    if first_error is None:
                        first_error = self._wrap(exc, key)
                    continue
                if on_done is not None:
                    on_done(path, key)
            if first_error is not None:
                raise first_error
        finally:
            manager.shutdown()

    def copy_objects(self, source: Storage, pairs: list[tuple[str, str]]) -> None:
        """Server-side copies (multipart for large objects, in parallel) when ``source`` is a
        bucket on the same endpoint: this client's credentials must be able to read it."""
        if not (
            isinstance(source, S3Storage) and source.config.endpoint_url == self.config.endpoint_url
        ):
            super().copy_objects(source, pairs)
            return
        if not pairs:
            return
        from boto3.s3.transfer import create_transfer_manager

        manager = create_transfer_manager(self.client, self.transfer_config)
        try:
            futures = [
                (
                    key,
                    manager.copy(
                        {"Bucket": source.bucket, "Key": source._key(src_key)},
                        self.bucket,
                        self._key(key),
                    ),
                )
                for src_key, key in pairs
            ]
            first_error: Exception | None = None
            for key, future in futures:
                try:
                    future.result()
                except Exception as exc:
                    if first_error is None:
                        first_error = self._wrap(exc, key)
            if first_error is not None:
                raise first_error
        finally:
            manager.shutdown()

    def get_file(self, key: str, local_path: str) -> None:
        try:
            self.client.download_file(
                self.bucket, self._key(key), local_path, Config=self.transfer_config
            )
        except Exception as exc:
            raise self._wrap(exc, key) from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(self.sizes(prefix))

    def list_children(self, prefix: str = "") -> list[str]:
        full = self._key(prefix)
        start = f"{full}/" if full else ""
        names: set[str] = set()
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(start) :].rstrip("/"))
                for obj in page.get("Contents", []):
                    names.add(obj["Key"][len(start) :])
        except Exception as exc:
            raise self._wrap(exc, prefix) from exc
        return sorted(n for n in names if n)

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._key(k) for k in self.list_keys(prefix)]
        try:
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        except Exception as exc:
            raise self._wrap(exc, prefix) from exc
