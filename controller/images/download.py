"""Base images fetched by URL into a local cache: resumable, verified by sha256, published atomically.

Cache layout, all in one directory:

    sha256-<hex><suffix>        a verified image (suffix from the URL: .qcow2, .raw…; else .img)
    sha256-<hex><suffix>.part   a transfer in progress or broken off; resumed by the next call

The final name is only ever made by renaming a verified part, so its existence is the proof of
verification: a cache hit costs one stat and no hashing of a multi-GB file.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit
from urllib.request import Request, url2pathname, urlopen

from controller.images.errors import (
    ImageCacheError,
    ImageChecksumError,
    ImageDownloadError,
    ImageError,
    ImageSourceError,
)

__all__ = [
    "ImageCacheError",
    "ImageChecksumError",
    "ImageDownloadError",
    "ImageError",
    "ImageSourceError",
    "Progress",
    "fetch_image",
    "image_path",
    "parse_sha256",
]

Progress = Callable[[int, int | None], None]  # (bytes in the part so far, image size if known)

DEFAULT_SUFFIX = ".img"
USER_AGENT = "virtsync"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,12}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-\d+/(\d+|\*)")
# Statuses where the same request may well succeed later; every other 4xx is the URL's fault
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_NetworkError = (OSError, http.client.HTTPException)


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to a resume: the part already holds the whole image, or is longer than it."""


def parse_sha256(value: str) -> str:
    """The lowercase hex digest of "<64 hex>" or "sha256:<64 hex>"; ImageSourceError otherwise."""
    hexdigest = value[7:] if value[:7].lower() == "sha256:" else value
    if not _HEX64.fullmatch(hexdigest.lower()):
        raise ImageSourceError(f"{value!r} is not a sha256 digest (64 hex digits, optionally prefixed 'sha256:')")
    return hexdigest.lower()


def _local_path(url: str) -> Path | None:
    """The file a file:// URL or absolute path names; None for http(s); ImageSourceError for the rest."""
    if url.startswith("/"):
        return Path(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and parts.hostname:
        return None
    if scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return Path(url2pathname(parts.path))
    raise ImageSourceError(f"{url!r} is not an http(s):// or file:/// URL, nor an absolute path")


def _suffix(url: str) -> str:
    path = url if url.startswith("/") else unquote(urlsplit(url).path)
    suffix = PurePosixPath(path).suffix
    return suffix if _SUFFIX.fullmatch(suffix) else DEFAULT_SUFFIX


def image_path(url: str, sha256: str, cache_dir: Path) -> Path:
    """Where fetch_image keeps (or will keep) this image; it is complete and verified iff it exists."""
    return cache_dir / f"sha256-{parse_sha256(sha256)}{_suffix(url)}"


def fetch_image(
    url: str,
    sha256: str,
    cache_dir: Path,
    *,
    timeout: float = 30,
    chunk: int = 1 << 20,
    progress: Progress | None = None,
) -> Path:
    """The verified image in cache_dir, downloaded (or resumed) only when it is not there yet.

    url: http(s)://, file:/// or an absolute path. A broken transfer keeps its .part for the
    next call to resume; a wrong digest deletes it. Raises ImageSourceError, ImageDownloadError,
    ImageChecksumError or ImageCacheError (all ImageError).
    """
    expected = parse_sha256(sha256)
    source = _local_path(url)
    final = image_path(url, expected, cache_dir)
    if final.exists():
        return final
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageCacheError(f"cannot create image cache {cache_dir}: {e.strerror}") from e
    part = final.with_name(final.name + ".part")
    with _claimed(part) as f:
        if final.exists():  # another worker finished it while we waited for the lock
            part.unlink(missing_ok=True)
            return final
        try:
            if source is None:
                actual = _download(url, f, expected, timeout, chunk, progress)
            else:
                actual = _copy_local(url, source, f, chunk, progress)
        except ImageError:
            if f.seek(0, os.SEEK_END) == 0:  # nothing to resume (404, refused…): leave no litter
                part.unlink(missing_ok=True)
            raise
        _publish(f, part, final, url, expected, actual)
    return final


@contextmanager
def _claimed(part: Path) -> Iterator[IO[bytes]]:
    """The part file, opened and exclusively locked: one writer per image, across threads and processes."""
    while True:
        try:
            f = open(part, "r+b", opener=_create)  # noqa: SIM115 (closed by the caller's with)
        except OSError as e:
            raise ImageCacheError(f"cannot open {part}: {e.strerror}") from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # blocks while another worker transfers the same image
            if _is_current(f, part):
                break
        except BaseException:
            f.close()
            raise
        f.close()  # the previous holder renamed or deleted the part we waited on: claim afresh
    with f:
        yield f


def _create(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CREAT, 0o644)  # "r+b" that creates, without truncating like "w+b"


def _is_current(f: IO[bytes], path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _download(url: str, f: IO[bytes], expected: str, timeout: float, chunk: int, progress: Progress | None) -> str:
    """Fill the part from the URL, resuming from what it holds; the sha256 hex of the whole part."""
    for attempt in range(2):
        offset = f.seek(0, os.SEEK_END)
        try:
            response = _open(url, offset, timeout)
        except _RangeNotSatisfiable:
            actual = _hash_part(f, chunk).hexdigest()
            if actual == expected or attempt:
                return actual
            _truncate(f)  # longer than the image, or wrong bytes: start again from zero
            continue
        with response:
            span = _body_span(response, offset)
            if span is None:
                _truncate(f)  # the server resumed elsewhere than asked: start again from zero
                continue
            start, total = span
            if start < offset:
                _truncate(f)  # 200 to a Range request: the body is the whole image
            digest = _hash_part(f, chunk)
            try:
                # read1: whatever has arrived, up to chunk; read() would wait for a full chunk
                done = _pump(response.read1, f, digest, start, total, chunk, progress)
            except _NetworkError as e:
                raise ImageDownloadError(f"{url}: transfer broken off: {_reason(e)}") from e
        if total is not None and done != total:
            raise ImageDownloadError(f"{url}: connection closed after {done} of {total} bytes")
        return digest.hexdigest()
    raise ImageDownloadError(f"{url}: the server did not resume at byte {offset} as asked")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}  # the digest is of the raw bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response: http.client.HTTPResponse = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            raise _RangeNotSatisfiable from None
        raise _http_error(url, e) from e
    except _NetworkError as e:
        raise ImageDownloadError(f"{url}: {_reason(e)}", retryable=_transient(e)) from e
    return response


def _body_span(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None] | None:
    """(offset of the body's first byte in the image, image size if known); None for a 206 elsewhere."""
    length = response.headers.get("Content-Length", "")
    if response.status != 206:
        return 0, int(length) if length.isdigit() else None
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or int(match[1]) != offset:
        return None
    if match[2] != "*":
        return offset, int(match[2])
    return offset, offset + int(length) if length.isdigit() else None


def _http_error(url: str, e: HTTPError) -> ImageDownloadError:
    retryable = e.code >= 500 or e.code in _RETRYABLE_STATUS
    retry_after = (e.headers.get("Retry-After") or "") if e.headers else ""
    delay = float(retry_after) if retry_after.isdigit() else None
    return ImageDownloadError(f"{url}: HTTP {e.code} {e.reason}", retryable=retryable, delay=delay)


def _transient(e: BaseException) -> bool:
    # A certificate that does not verify will not verify on the next try either
    reason = e.reason if isinstance(e, URLError) else e
    return not isinstance(reason, ssl.SSLCertVerificationError)


def _reason(e: BaseException) -> str:
    reason = e.reason if isinstance(e, URLError) else e
    return str(reason) or type(reason).__name__


def _copy_local(url: str, source: Path, f: IO[bytes], chunk: int, progress: Progress | None) -> str:
    """Copy a local image into the part (from scratch: a local read is cheap); its sha256 hex."""
    _truncate(f)
    digest = hashlib.sha256()
    try:
        with source.open("rb") as src:
            total = os.fstat(src.fileno()).st_size
            _pump(src.read, f, digest, 0, total, chunk, progress)
    except OSError as e:
        # A missing or forbidden file stays so until someone fixes the spec or the host
        permanent = isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError)
        raise ImageDownloadError(f"{url}: {e.strerror or e}", retryable=not permanent) from e
    return digest.hexdigest()


def _pump(
    read: Callable[[int], bytes],
    f: IO[bytes],
    digest: hashlib._Hash,
    done: int,
    total: int | None,
    chunk: int,
    progress: Progress | None,
) -> int:
    """Append read()'s blocks to the part until EOF; the part's size then. Read errors propagate.

    read() may return short blocks (it should, so that a stall loses no received bytes);
    progress is reported about once per chunk, and at the end.
    """
    reported = done
    while block := read(chunk):
        try:
            f.write(block)
        except OSError as e:
            raise ImageCacheError(f"cannot write {f.name}: {e.strerror}") from e
        digest.update(block)
        done += len(block)
        if progress is not None and done - reported >= chunk:
            progress(done, total)
            reported = done
    if progress is not None and done != reported:
        progress(done, total)
    return done


def _hash_part(f: IO[bytes], chunk: int) -> hashlib._Hash:
    """sha256 of what the part holds, leaving the file positioned at its end to append."""
    digest = hashlib.sha256()
    f.seek(0)
    while block := f.read(chunk):
        digest.update(block)
    return digest


def _truncate(f: IO[bytes]) -> None:
    f.seek(0)
    f.truncate()


def _publish(f: IO[bytes], part: Path, final: Path, url: str, expected: str, actual: str) -> None:
    """Rename the verified part to its final name (durably), or delete it if its digest is wrong."""
    if actual != expected:
        part.unlink(missing_ok=True)
        raise ImageChecksumError(f"{url}: sha256 mismatch: expected sha256:{expected}, got sha256:{actual}")
    try:
        f.flush()
        os.fsync(f.fileno())
        os.replace(part, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise ImageCacheError(f"cannot store {final}: {e.strerror}") from e
