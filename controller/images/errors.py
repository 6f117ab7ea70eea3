"""Errors of image handling; all are VirtsyncErrors so the service's backoff can read them."""

from __future__ import annotations

from controller.errors import VirtsyncError


class ImageError(VirtsyncError):
    """Base of the image errors; permanent unless a subclass says otherwise."""


class ImageSourceError(ImageError):
    """The image reference itself is wrong (digest format, URL scheme): fix the spec, not the network."""


class ImageDownloadError(ImageError):
    """The transfer failed. Retryable by default (5xx, timeouts, resets); 404/403 are not."""

    retryable = True
    delay = 5.0


class ImageChecksumError(ImageError):
    """The bytes arrived but are not the declared image: retrying fetches the same wrong bytes."""


class ImageCacheError(ImageError):
    """The local cache could not be written (disk full, permissions)."""

    retryable = True
    delay = 60.0


class SeedImageError(ImageError):
    """A seed ISO could not be read back (not ISO 9660, or a file is not UTF-8)."""
