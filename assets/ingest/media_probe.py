"""Cheap checks that a media file exists, is readable and is the container its name says.

The check reads the first 16 bytes only: enough to tell an mp4 from an HTML error page
or random bytes, at a cost that scales to millions of clips. A file that passes can
still fail to decode (a truncated download); the cache stages record those.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass


class DirectoryListing:
    """Which files each directory holds, listed once per directory (os.listdir), so the manifest
    can tell a missing file by a set lookup. A directory that does not exist holds nothing; one
    that cannot be listed says nothing (`absent` is False and the file gets a full probe)."""

    def __init__(self):
        self._names: dict[str, frozenset[str] | None] = {}

    def absent(self, path: str) -> bool:
        directory, name = os.path.split(path)
        if directory not in self._names:
            try:
                self._names[directory] = frozenset(os.listdir(directory))
            except (FileNotFoundError, NotADirectoryError):
                self._names[directory] = frozenset()
            except OSError:
                self._names[directory] = None
        names = self._names[directory]
        return names is not None and name not in names


@dataclass(frozen=True)
class Probe:
    status: str  # ok | missing | unreadable
    reason: str = ""
    size_bytes: int = 0
    mtime_ns: int = 0


def _container_of(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


# Which containers each file extension may hold (webm is Matroska; m4a/mov are ISO-BMFF).
EXPECTED = {
    ".mp4": {"mp4"}, ".m4a": {"mp4"}, ".mov": {"mp4"}, ".mkv": {"matroska"}, ".webm": {"matroska"},
    ".wav": {"wav"}, ".flac": {"flac"}, ".ogg": {"ogg"}, ".mp3": {"mp3"},
    ".jpg": {"jpeg"}, ".jpeg": {"jpeg"}, ".png": {"png"},
}


def probe_file(path: str) -> Probe:
    """Existence, size, mtime and container magic of one file; never raises for I/O errors."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Probe("missing", f"{path}: no such file")
    except OSError as err:
        return Probe("unreadable", f"{path}: {err.strerror}")
    if not os.path.isfile(path):
        return Probe("unreadable", f"{path}: not a regular file", st.st_size, st.st_mtime_ns)
    if st.st_size == 0:
        return Probe("unreadable", f"{path}: empty file", 0, st.st_mtime_ns)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        return Probe("unreadable", f"{path}: {err.strerror}", st.st_size, st.st_mtime_ns)
    found = _container_of(head)
    expected = EXPECTED.get(posixpath.splitext(path)[1].lower())
    if expected is not None and found not in expected:
        what = found or f"unrecognised bytes {head[:8].hex()}"
        return Probe("unreadable", f"{path}: expected {'/'.join(sorted(expected))} data, found {what}",
                     st.st_size, st.st_mtime_ns)
    return Probe("ok", "", st.st_size, st.st_mtime_ns)
