"""A sweep dir on object storage (`output_dir: s3://bucket/prefix/{name}`, `gs://...`, any URI pyarrow opens).

Every process works on a local mirror of the sweep dir and moves files between it and the store:
writers write locally first (atomically, as on a local sweep dir), then `push`; readers `pull` what
changed. The driver's and the commands' mirror is a read-through cache under the cache dir, so a second
`analyze` downloads only what changed; a trial's mirror is a temp dir of its own, so trials share no path
with each other or with the driver (cloud VMs and KubeRay pods share none).

Why by hand: pyarrow gives the filesystems (S3, GCS, HDFS, and fsspec's through `PyFileSystem`), and
Ray Tune uses them for its own experiment state, but nothing there keeps a local working copy in step
with a prefix, in an order that never lets a reader take a partial upload for a complete one. That order
is the rule of the local layout too: JSON files (which vouch for the weights beside them) go up after
every other file, the deepest first, so a trial's result, at the top of its folder, goes up last. Downloads are checked where
they are used: a checkpoint's weights are loaded only if they match the sha256 in its `checkpoint.json`
(`orchestrator.checkpoints.load`).

Credentials come only from the environment or the standard credential files (for S3: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, an instance role; AWS_ENDPOINT_URL for an
S3-compatible server such as MinIO); nothing about them is read from, or written to, a config or a result.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

from orchestrator.config import ConfigError, OBJECT_STORE_SCHEMES, uri_scheme

# how long a push or pull keeps retrying a store that does not answer (a restarting server, a network
# blip) before the trial fails: long enough for an object store's restart, short of hiding an outage
RETRY_S = 600.0
PUSHED, PULLED = ".pushed.json", ".pulled.json"  # the mirror's own bookkeeping, never uploaded
T = TypeVar("T")


def is_remote(output_dir: str | Path) -> bool:
    """Whether an output_dir names object storage rather than a local path."""
    return uri_scheme(str(output_dir)) in OBJECT_STORE_SCHEMES


def mirror_for(uri: str) -> Path:
    """The driver's (and every command's) local mirror of a remote sweep dir, under the cache dir."""
    from evals.sources import cache_dir

    digest = hashlib.sha1(uri.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "sweeps" / digest


def _endpoint() -> dict[str, Any]:
    """An S3-compatible server named by the standard AWS variable (pyarrow's S3FileSystem does not read
    it itself); plain http for a server on loopback."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return {}
    parsed = urlparse(url)
    return {"endpoint_override": parsed.netloc or parsed.path, "scheme": parsed.scheme or "https"}


def _s3_credentials_found() -> bool:
    """The standard AWS chain (environment, credential and config files, SSO, container or instance role),
    resolved by boto3 exactly as the AWS CLI does."""
    import boto3

    return boto3.Session().get_credentials() is not None


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) of a URI, or a one-line config error."""
    import pyarrow.fs as pafs

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"output_dir = {uri!r}: no bucket; allowed: s3://BUCKET/PREFIX")
        if not _s3_credentials_found():
            raise ConfigError(f"output_dir = {uri!r}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / ~/.aws/credentials) in the environment")
        fs = pafs.S3FileSystem(connect_timeout=5, request_timeout=30, **_endpoint(),
                               retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
        return fs, f"{parsed.netloc}{parsed.path}".rstrip("/")
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pafs.ArrowInvalid, OSError, ValueError) as err:  # ArrowInvalid: unknown scheme
        raise ConfigError(f"output_dir = {uri!r}: {str(err).splitlines()[0]}; allowed: a local path, "
                          "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or another URI pyarrow opens") from None


@functools.lru_cache(maxsize=None)
def open_store(uri: str) -> "Store":
    """The store of a URI through this machine's mirror (one per process and URI)."""
    return Store(uri, mirror_for(uri))


class Store:
    """A remote sweep dir (`uri`) and one local mirror of it."""

    def __init__(self, uri: str, mirror: Path) -> None:
        self.uri = uri.rstrip("/")
        self.mirror = Path(mirror)
        self.fs, self.base = filesystem(self.uri)

    def elsewhere(self, mirror: Path) -> "Store":
        """The same store seen through another mirror (a trial's own temp dir)."""
        return Store(self.uri, mirror)

    def remote(self, local: Path) -> str:
        return f"{self.base}/{self.relative(local)}"

    def relative(self, local: Path) -> str:
        return Path(local).relative_to(self.mirror).as_posix()

    def check(self) -> None:
        """The bucket (or the prefix's first folder) exists and answers: a one-line config error if not,
        raised before a sweep writes anything."""
        import pyarrow.fs as pafs

        bucket = self.base.split("/", 1)[0]
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as err:
            raise ConfigError(f"output_dir = {self.uri!r}: the store does not answer "
                              f"({_first_line(err)})") from None
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"output_dir = {self.uri!r}: bucket {bucket!r} does not exist; "
                              "allowed: an existing bucket you can write to")

    def delete_all(self) -> None:
        """Everything under the prefix (a demo's fresh start)."""
        self._retry("delete", lambda: self.fs.delete_dir_contents(self.base, missing_dir_ok=True))
        for ledger in (PUSHED, PULLED):
            (self.mirror / ledger).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ push

    def push(self, local: Path | None = None) -> int:
        """Upload what changed under `local` (a file or folder of the mirror; all of it by default) since
        the last push; returns how many files went up. Retries for RETRY_S when the store is down."""
        local = Path(local or self.mirror)
        pushed = self._ledger(PUSHED)
        present = _files(local)
        changed = {path for path in present if pushed.get(self.relative(path)) != _stamp(path)}
        for path in [p for p in _in_upload_order(present) if p in changed]:
            self._retry(f"upload {self.relative(path)}", lambda: self._upload(path))
            pushed[self.relative(path)] = _stamp(path)
            self._save_ledger(PUSHED, pushed)
        return len(changed)

    def _upload(self, path: Path) -> None:
        target = self.remote(path)
        if self.fs.type_name not in ("s3", "gcs"):  # object stores have no folders to make first
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with open(path, "rb") as source, self.fs.open_output_stream(target) as sink:
            while block := source.read(1 << 22):
                sink.write(block)

    def copy_tree(self, local: Path, destination: str) -> int:
        """Copy the store's files under a mirror folder to `destination` (same store kind) object by object,
        server-side; returns how many were copied."""
        import pyarrow.fs as pafs

        source = self.remote(local)
        target = destination.split("://", 1)[1].rstrip("/")
        selector = pafs.FileSelector(source, recursive=True, allow_not_found=True)
        files = [i.path for i in self._retry(f"list {self.relative(local)}", lambda: self.fs.get_file_info(selector))
                 if i.type == pafs.FileType.File]
        for path in map(str, _in_upload_order([Path(f) for f in files])):
            copied = f"{target}/{path[len(source) + 1:]}"
            self._retry(f"copy {path}", lambda: self.fs.copy_file(path, copied))
        return len(files)

    # ------------------------------------------------------------------------------------------ pull

    def pull(self, rel: str = "", only: Callable[[str], bool] | None = None) -> int:
        """Download what changed remotely under `rel` (a folder of the sweep dir; all of it by default),
        optionally only the relative paths `only` accepts; returns how many files came down."""
        import pyarrow.fs as pafs

        root = f"{self.base}/{rel}".rstrip("/")
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        infos = self._retry(f"list {rel or '/'}", lambda: self.fs.get_file_info(selector))
        pulled, fetched = self._ledger(PULLED), []
        for info in infos:
            name = info.path[len(self.base) + 1:]
            if info.type != pafs.FileType.File or (only and not only(name)):
                continue
            stamp = [info.size, info.mtime_ns]
            local = self.mirror / name
            if _unchanged(name, stamp, pulled, local):
                continue
            self._retry(f"download {name}", lambda: self._download(info.path, local))
            pulled[name] = stamp
            fetched.append(name)
        if fetched:
            self._save_ledgers(pulled, fetched)
        return len(fetched)

    def pull_file(self, local: Path) -> bool:
        """Download one file if it exists remotely (and changed); whether it exists there."""
        import pyarrow.fs as pafs

        info = self._retry(f"stat {self.relative(local)}", lambda: self.fs.get_file_info(self.remote(local)))
        if info.type != pafs.FileType.File:
            return False
        pulled, name = self._ledger(PULLED), self.relative(local)
        if not _unchanged(name, [info.size, info.mtime_ns], pulled, local):
            self._retry(f"download {name}", lambda: self._download(info.path, local))
            pulled[name] = [info.size, info.mtime_ns]
            self._save_ledgers(pulled, [name])
        return True

    def _download(self, remote: str, local: Path) -> None:
        """To a temp file beside the target, then one rename: a reader never sees half a download."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.download")
        try:
            with self.fs.open_input_stream(remote) as source, open(tmp, "wb") as sink:
                while block := source.read(1 << 22):
                    sink.write(block)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------ bookkeeping

    def _ledger(self, name: str) -> dict[str, list[int]]:
        try:
            return json.loads((self.mirror / name).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def _save_ledger(self, name: str, ledger: dict[str, list[int]]) -> None:
        from orchestrator.files import atomic_write_json

        atomic_write_json(self.mirror / name, ledger)

    def _save_ledgers(self, pulled: dict[str, list[int]], fetched: list[str]) -> None:
        """After a pull: what came down is also what the store holds, so a push does not send it back."""
        self._save_ledger(PULLED, pulled)
        pushed = self._ledger(PUSHED)
        pushed.update({name: _stamp(self.mirror / name) for name in fetched})
        self._save_ledger(PUSHED, pushed)

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """`action`, retried with exponential backoff (1 s doubling to 30 s) while the store fails, for at
        most RETRY_S; then the last error, naming the store and what was being done."""
        began, delay, warned = time.monotonic(), 1.0, False
        while True:
            try:
                return action()
            except OSError as err:
                if time.monotonic() - began + delay > RETRY_S:
                    raise OSError(f"{self.uri}: {what} still failing after {time.monotonic() - began:.0f} s of "
                                  f"retries: {_first_line(err)}") from err
                if not warned:
                    warnings.warn(f"{self.uri}: {what} failed ({_first_line(err)}); retrying for up to "
                                  f"{RETRY_S:.0f} s", RuntimeWarning, stacklevel=2)
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 30.0)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def _files(local: Path) -> list[Path]:
    """Files under `local` that belong to the sweep dir: not the mirror's bookkeeping, not a temp file of
    an atomic write or a download in flight (names starting with a dot)."""
    if local.is_file():
        return [local]
    return [p for p in local.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                     p.relative_to(local).parts)]


def _unchanged(name: str, stamp: list[int], pulled: dict[str, list[int]], local: Path) -> bool:
    """Whether a remote file is the one pulled before. JSON files are small and rewritten in place
    (a result.json many times a trial), and an object's modification time has one-second resolution,
    so they are always fetched again; weights are written once per name."""
    return not name.endswith(".json") and pulled.get(name) == stamp and local.is_file()


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _in_upload_order(paths: list[Path]) -> list[Path]:
    """Weights before the JSON that vouches for them; a JSON that vouches for one file (named after it:
    `resume.json` for `resume.safetensors`) before the one that vouches for its whole folder
    (`checkpoint.json`); deeper JSON before shallower, so a checkpoint's JSON goes up before the trial's
    result at the top of its folder. A reader that sees a JSON can trust that what it names is already
    there, and a checkpoint that verifies in the store has its resume state beside it, as on a local disk."""
    vouched = {(p.parent, p.stem) for p in paths if p.suffix != ".json"}
    return sorted(paths, key=lambda p: (p.suffix == ".json", -len(p.parts), (p.parent, p.stem) not in vouched,
                                        p.as_posix()))
