"""Feature caches: frozen encoder outputs and generator text-encoder targets, computed once and reused.

A cache lives in ``root/<component key>/`` and holds safetensors shards; inside a shard every tensor is named by
the sha256 of the *content* it was computed from (a media file's bytes, a caption's UTF-8 text). The component key
(:meth:`modalities.base.ModalityEncoder.cache_key`, :meth:`generators.base.GeneratorTool.cache_key`) hashes
everything else the tensor depends on -- model, dtype, feature layer, frames, pooling... -- so two runs that
share an encoder share its features, and changing any knob starts a fresh folder instead of reading stale data.

Shards are written whole (to a temporary name, then renamed), so an interrupted run never leaves a torn file;
deleting a folder (or the whole root) simply makes the next run rebuild it. Tensors are read back lazily through
memory-mapped ``safe_open`` handles; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm


def content_hash(data: bytes | str) -> str:
    """sha256 hex digest of bytes, or of a string's UTF-8 encoding."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class FeatureCache:
    """Content-addressed tensors of one component: ``root/<key>/*.safetensors``.

    Args:
        root: the cache root shared by all components (e.g. ``~/.mmgraph/cache/features``).
        key: the component key; one folder per key.
        shard_size: most tensors per shard file.
    """

    def __init__(self, root: str | Path, key: str, *, shard_size: int = 256) -> None:
        self.folder = Path(root) / key
        self.key = key
        self.shard_size = shard_size
        self._where: dict[str, Path] = {}
        self._handles: dict[Path, object] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the shard index from disk (another process may have written shards)."""
        self._where.clear()
        self._handles.clear()
        if not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                for name in handle.keys():
                    self._where[name] = shard

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, digest: str) -> bool:
        return digest in self._where

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests not in the cache, de-duplicated, in first-seen order."""
        return [d for d in dict.fromkeys(digests) if d not in self._where]

    def get(self, digest: str) -> torch.Tensor:
        shard = self._where.get(digest)
        if shard is None:
            raise KeyError(f"{digest[:12]}... is not in the {self.key} feature cache ({self.folder})")
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = safe_open(str(shard), framework="pt")
        return handle.get_tensor(digest)

    def stack(self, digests: Sequence[str]) -> torch.Tensor:
        """``(N, *shape)``: the cached tensors of ``digests`` stacked in order."""
        return torch.stack([self.get(d) for d in digests])

    def put(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``{digest: tensor}`` as one or more new shards."""
        self.folder.mkdir(parents=True, exist_ok=True)
        items = list(tensors.items())
        for start in range(0, len(items), self.shard_size):
            # clone: rows of one batch share storage, which safetensors refuses to write
            chunk = {d: t.detach().cpu().clone() for d, t in items[start : start + self.shard_size]}
            name = f"shard-{uuid.uuid4().hex[:12]}.safetensors"
            tmp = self.folder / f".{name}.tmp"
            save_file(chunk, str(tmp))
            os.replace(tmp, self.folder / name)
            for digest in chunk:
                self._where[digest] = self.folder / name

    def fill(
        self,
        sources: dict[str, object],
        compute: Callable[[list[object]], torch.Tensor],
        *,
        batch_size: int = 16,
        desc: str | None = None,
        progress: bool = True,
    ) -> int:
        """Compute and store every digest of ``sources`` (``{digest: source}``) that is missing.

        ``compute(list_of_sources) -> (N, ...)`` runs on batches of at most ``batch_size`` misses; results are
        written shard by shard, so an interrupted fill keeps what it finished. Returns how many were computed.
        """
        todo = self.missing(sources)
        if not todo:
            return 0
        pending: dict[str, torch.Tensor] = {}
        with tqdm(
            total=len(todo), desc=desc or f"caching {self.key}", unit="item", disable=not progress, leave=False
        ) as bar:
            for start in range(0, len(todo), batch_size):
                digests = todo[start : start + batch_size]
                out = compute([sources[d] for d in digests])
                if out.shape[0] != len(digests):
                    raise RuntimeError(f"{self.key}: computed {out.shape[0]} tensors for {len(digests)} items")
                pending.update(zip(digests, out.unbind(0)))
                if len(pending) >= self.shard_size:
                    self.put(pending)
                    pending = {}
                bar.update(len(digests))
        if pending:
            self.put(pending)
        return len(todo)
