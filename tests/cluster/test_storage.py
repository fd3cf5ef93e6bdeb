"""The storage interface, the same tests against a local directory and the real S3 server."""

from __future__ import annotations

import os

import pytest

from kubetune.storage import LocalStorage, Storage, StorageError, open_storage
from kubetune.storage.s3 import S3Config


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    config = S3Config(
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        addressing_style="path",
    )
    return open_storage(f"s3://{bucket}/experiments", s3=config)


def test_bytes_files_and_listing(storage, tmp_path):
    storage.put_bytes("exp/trial_a/result.json", b'{"x": 1}\n')
    storage.put_bytes("exp/trial_b/checkpoint_000000/model.bin", b"\x00" * 10)
    storage.put_bytes("exp/experiment_state.json", b"{}")
    assert storage.get_bytes("exp/trial_a/result.json") == b'{"x": 1}\n'
    assert storage.exists("exp/experiment_state.json")
    assert not storage.exists("exp/missing.json")
    with pytest.raises(FileNotFoundError):
        storage.get_bytes("exp/missing.json")
    assert storage.list_children("exp") == ["experiment_state.json", "trial_a", "trial_b"]
    assert storage.list_keys("exp/trial_b") == ["exp/trial_b/checkpoint_000000/model.bin"]
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(4096))
    storage.put_file(str(src), "exp/trial_a/blob.bin")
    storage.get_file("exp/trial_a/blob.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_reading_from_an_offset_and_sizes_in_one_listing(storage):
    storage.put_bytes("exp/t1/result.json", b"0123456789")
    storage.put_bytes("exp/t2/result.json", b"ab")
    storage.put_bytes("expx/other", b"not under exp/")
    assert storage.get_bytes_from("exp/t1/result.json", 0) == b"0123456789"
    assert storage.get_bytes_from("exp/t1/result.json", 4) == b"456789"
    assert storage.get_bytes_from("exp/t1/result.json", 10) == b""  # nothing past the end
    assert storage.get_bytes_from("exp/t1/result.json", 99) == b""
    assert storage.get_bytes_from("exp/missing.json", 3) == b""
    assert storage.sizes("exp") == {"exp/t1/result.json": 10, "exp/t2/result.json": 2}
    assert storage.sizes("nothing") == {}


def test_directories_round_trip_and_delete(storage, tmp_path):
    src = tmp_path / "ckpt"
    (src / "nested").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "nested" / "b.txt").write_text("b")
    storage.put_directory(str(src), "exp/t/checkpoint_000001")
    out = tmp_path / "out"
    storage.get_directory("exp/t/checkpoint_000001", str(out))
    assert (out / "a.txt").read_text() == "a" and (out / "nested" / "b.txt").read_text() == "b"
    storage.delete_prefix("exp/t/checkpoint_000001")
    assert storage.list_keys("exp/t") == []
    with pytest.raises(FileNotFoundError):
        storage.get_directory("exp/t/checkpoint_000001", str(tmp_path / "none"))


def test_uri_names_the_location(storage):
    uri = storage.uri("exp/t")
    assert uri.endswith("exp/t")
    assert uri.startswith("s3://") or os.path.isabs(uri)


def test_local_storage_refuses_escapes_and_unwritable(tmp_path):
    local = LocalStorage(str(tmp_path / "r"))
    with pytest.raises(StorageError, match="escapes the storage root"):
        local.put_bytes("../outside", b"x")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create storage directory"):
        LocalStorage(str(blocker / "sub"))


def test_unknown_scheme_is_refused():
    with pytest.raises(StorageError, match="scheme 'gs' is not supported"):
        open_storage("gs://bucket/prefix")


@pytest.mark.s3
def test_wrong_credentials_fail_clearly(s3_server, s3_bucket):
    config = S3Config(
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        access_key_id=s3_server.access_key,
        secret_access_key="wrong-secret",
        addressing_style="path",
    )
    bad = open_storage(f"s3://{s3_bucket}/x", s3=config)
    with pytest.raises(StorageError, match=f"s3://{s3_bucket}/x/k"):
        bad.put_bytes("k", b"v")


def test_copy_objects_within_the_store_and_from_another(storage, tmp_path):
    storage.put_bytes("old/t/result.json", b"r\n")
    storage.put_bytes("old/t/checkpoint_000000/m.bin", b"\x01" * 100)
    pairs = [(k, "new" + k[len("old") :]) for k in storage.list_keys("old")]
    storage.copy_objects(storage, pairs)  # S3: server-side copies
    assert storage.get_bytes("new/t/result.json") == b"r\n"
    assert storage.get_bytes("new/t/checkpoint_000000/m.bin") == b"\x01" * 100
    assert storage.get_bytes("old/t/result.json") == b"r\n"
    other = LocalStorage(str(tmp_path / "other"))
    other.put_bytes("a/b", b"z")
    storage.copy_objects(other, [("a/b", "from-local/b")])  # through a temporary file
    assert storage.get_bytes("from-local/b") == b"z"
    with pytest.raises(FileNotFoundError):
        storage.copy_objects(storage, [("old/missing", "new/missing")])


@pytest.mark.s3
def test_copy_objects_between_buckets_and_error_codes(s3_server, s3_bucket):
    import secrets

    config = S3Config(
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
        addressing_style="path",
    )
    client = s3_server.client()
    other = f"kubetune-test-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=other)
    try:
        source = open_storage(f"s3://{other}/runs/exp", s3=config)
        source.put_bytes("t/result.json", b"r\n")
        target = open_storage(f"s3://{s3_bucket}/exp2", s3=config)
        target.copy_objects(source, [("t/result.json", "t2/result.json")])
        assert target.get_bytes("t2/result.json") == b"r\n"
        missing = open_storage(f"s3://{other}-missing/x", s3=config)
        with pytest.raises(StorageError) as err:
            missing.get_bytes("experiment_state.json")
        assert err.value.code == "NoSuchBucket"
    finally:
        for obj in client.list_objects_v2(Bucket=other).get("Contents", []):
            client.delete_object(Bucket=other, Key=obj["Key"])
        client.delete_bucket(Bucket=other)
