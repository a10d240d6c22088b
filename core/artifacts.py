"""Content-addressed artifact store: every input and output medium is a file named by its sha256.

Graph state and checkpoints only ever hold :class:`~core.turns.ArtifactRef` objects (id, modality, mime, size),
never bytes.
The same bytes stored twice are one file. Ids are validated before any path is built from them, so an id from
a request can never address a file outside the store.

Several processes may share one store (replicas on a shared folder): every file is written to a temporary name and
renamed into place, the data before its sidecar, so a reader sees an artifact whole or not at all.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from core.turns import ARTIFACT_ID, ArtifactRef

__all__ = ["ArtifactRef", "ArtifactStore", "EXTENSIONS"]

EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/flac": ".flac",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}


class ArtifactStore:
    """Files under ``root/<id[:2]>/<id><ext>`` with a small JSON sidecar of metadata."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, *, modality: str, mime: str) -> ArtifactRef:
        digest = hashlib.sha256(data).hexdigest()
        ref = ArtifactRef(id=digest, modality=modality, mime=mime, size=len(data))
        path, meta = self._path(digest, mime), self._meta_path(digest)
        if not (path.exists() and meta.exists()):  # no sidecar: a writer may have died between the two renames
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, data)
            _write_atomic(meta, ref.model_dump_json().encode())  # last: it marks the artifact complete
        return ref

    def ref(self, artifact_id: str) -> ArtifactRef:
        meta = self._meta_path(self._check(artifact_id))
        if not meta.exists():
            raise KeyError(f"no artifact {artifact_id}")
        return ArtifactRef.model_validate_json(meta.read_text())

    def path(self, artifact_id: str) -> Path:
        ref = self.ref(artifact_id)
        return self._path(ref.id, ref.mime)

    def get(self, artifact_id: str) -> bytes:
        return self.path(artifact_id).read_bytes()

    def __contains__(self, artifact_id: str) -> bool:
        return bool(ARTIFACT_ID.match(artifact_id)) and self._meta_path(artifact_id).exists()

    @staticmethod
    def _check(artifact_id: str) -> str:
        if not ARTIFACT_ID.match(artifact_id or ""):
            raise KeyError(f"malformed artifact id {artifact_id!r}")
        return artifact_id

    def _path(self, digest: str, mime: str) -> Path:
        return self.root / digest[:2] / f"{digest}{EXTENSIONS.get(mime, '.bin')}"

    def _meta_path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.json"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk and rename it into place, so another
    process (a replica sharing the folder) sees the whole file or none. A killed writer leaves a ``.tmp-*`` file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes it 0600; replicas may run as other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
