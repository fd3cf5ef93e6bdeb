"""The S3 server the tests use is a real one: SigV4-signed put/get/list with the configured
identity, and refusals for a wrong secret, an unknown key and anonymous requests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.testenv.s3 import S3Server


def test_put_get_list_with_the_configured_key(s3_server: S3Server, s3_bucket: str) -> None:
    s3: Any = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="exp/trial_0/result.json", Body=b'{"loss": 1}\n')
    s3.put_object(Bucket=s3_bucket, Key="exp/trial_1/result.json", Body=b'{"loss": 2}\n')
    s3.put_object(Bucket=s3_bucket, Key="other/x", Body=b"x")

    got = s3.get_object(Bucket=s3_bucket, Key="exp/trial_0/result.json")["Body"].read()
    assert got == b'{"loss": 1}\n'
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="exp/")
    assert [o["Key"] for o in listed["Contents"]] == [
        "exp/trial_0/result.json",
        "exp/trial_1/result.json",
    ]
    common = s3.list_objects_v2(Bucket=s3_bucket, Prefix="exp/", Delimiter="/")
    assert [p["Prefix"] for p in common["CommonPrefixes"]] == ["exp/trial_0/", "exp/trial_1/"]


def test_multipart_upload_through_the_transfer_manager(
    s3_server: S3Server, s3_bucket: str, tmp_path: Any
) -> None:
    from boto3.s3.transfer import TransferConfig

    payload = bytes(range(256)) * (24 * 4096)  # 24 MiB: several 8 MiB parts
    source = tmp_path / "checkpoint.bin"
    source.write_bytes(payload)
    s3: Any = s3_server.client()
    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    s3.upload_file(str(source), s3_bucket, "ckpt/checkpoint.bin", Config=config)
    head = s3.head_object(Bucket=s3_bucket, Key="ckpt/checkpoint.bin")
    assert head["ContentLength"] == len(payload)
    assert "-" in head["ETag"]  # a multipart ETag
    target = tmp_path / "back.bin"
    s3.download_file(s3_bucket, "ckpt/checkpoint.bin", str(target), Config=config)
    assert target.read_bytes() == payload


@pytest.mark.parametrize(
    ("access_key", "secret_key", "code"),
    [
        (None, "definitely-not-the-secret", "SignatureDoesNotMatch"),
        ("AKIAUNKNOWNKEY000000", None, "InvalidAccessKeyId"),
    ],
)
def test_wrong_credentials_are_rejected(
    s3_server: S3Server,
    s3_bucket: str,
    access_key: str | None,
    secret_key: str | None,
    code: str,
) -> None:
    from botocore.exceptions import ClientError

    bad: Any = s3_server.client(
        access_key=access_key, secret_key=secret_key, retries={"max_attempts": 1}
    )
    for call in (
        lambda: bad.list_objects_v2(Bucket=s3_bucket),
        lambda: bad.put_object(Bucket=s3_bucket, Key="intruder", Body=b"x"),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.response["Error"]["Code"] == code
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_anonymous_requests_are_denied(s3_server: S3Server, s3_bucket: str) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    anonymous: Any = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=s3_server.region,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as raised:
        anonymous.list_objects_v2(Bucket=s3_bucket)
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
