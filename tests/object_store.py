"""A real S3-compatible server for the storage tests: moto's stand-alone server (`moto[server]`) on
127.0.0.1, behind a TCP relay the test can cut and restore, which is how a store that goes away mid-sweep
looks to its clients (connections refused) while what it already holds survives (moto keeps its objects
in memory, so stopping the server itself would empty the bucket)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

from orchestrator.process import free_port
from tests.helpers import wait_until

BUCKET = "test-bucket"


class Relay:
    """Forwards 127.0.0.1:port to the server; `cut()` closes the listener and every open connection (new
    ones are refused), `restore()` listens again on the same port."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        """Listen again (a no-op while listening, so restoring twice is fine)."""
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            for conn in [c for c in (listener, *self._open) if c is not None]:  # cutting twice is fine
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class S3Server:
    """moto_server on loopback with one bucket, shared by a session's tests; `env` is what a client needs
    (`credentials`, moto's fake ones, which a cluster's nodes bring themselves, and the endpoint);
    `objects()` lists what the bucket holds under a prefix; `reset()` gives the next test an empty bucket
    behind a listening relay."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        program = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        self.proc = subprocess.Popen([program, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self._wait()
        self.relay = Relay(self.port)
        self.endpoint = f"http://127.0.0.1:{self.relay.port}"
        self.credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_EC2_METADATA_DISABLED": "true"}
        self.env = {**self.credentials, "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
        self.client().create_bucket(Bucket=BUCKET)

    def _wait(self) -> None:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(listening, f"moto_server listening on 127.0.0.1:{self.port}", alive=self.proc, poll=0.2)

    def reset(self) -> None:
        """What the previous test left goes: the relay listens again and the bucket is emptied."""
        self.relay.restore()
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=item["Key"])

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}", aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        client, found = self.client(), {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        return found

    def stop(self) -> None:
        self.relay.cut()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def serve(log: Path) -> Iterator[S3Server]:
    server = S3Server(log)
    try:
        yield server
    finally:
        server.stop()

