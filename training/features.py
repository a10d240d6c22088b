"""Everything frozen a run reads, computed once: the caches of encoder features, alignment targets and latents.

Before the first step the samples' input files are hashed and encoded by the frozen encoders, their output
captions by the generators' text encoders (the alignment targets), and, for the latent-diffusion loss only, their
output target files by the generators' VAEs. Each lands in a content-addressed :class:`~training.cache.FeatureCache`
under the cache root, so later epochs, runs and stages compute nothing again; training itself never calls an
encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.errors import ConfigError, MediaError
from core.hub import default_home
from training.cache import FeatureCache, content_hash, file_hash
from training.data import DataError, Sample


def cache_root(cache_dir: str | None) -> Path:
    """The folder of the feature caches: ``cache_dir``, or ``$MMGRAPH_HOME/cache/features``."""
    if cache_dir:
        return Path(cache_dir)
    return default_home() / "cache" / "features"


@dataclass
class Caches:
    """The filled caches of one data set (what :func:`~training.batches.collate` reads)."""

    #: modality -> encoder features, by the content hash of the input file
    features: dict[str, FeatureCache] = field(default_factory=dict)
    #: generator -> conditioning spec -> text-encoder features, by the content hash of the caption
    targets: dict[str, dict[str, FeatureCache]] = field(default_factory=dict)
    #: input file -> its content hash
    hashes: dict[Path, str] = field(default_factory=dict)
    #: generator -> clean VAE latents of the output target files (latent-diffusion loss only, else None)
    latents: dict[str, FeatureCache] | None = None
    #: output target file -> its content hash (latent-diffusion loss only)
    target_hashes: dict[Path, str] = field(default_factory=dict)


def fill_caches(system, samples: list[Sample], root: Path, *, batch_size: int, progress: bool, latents: bool) -> Caches:
    """Hash every input file and output caption of ``samples`` and compute what the caches under ``root`` miss
    (``batch_size`` items per encoder call); ``latents``: also the output targets' latents."""
    hashes: dict[Path, str] = {}
    for sample in samples:
        for paths in sample.media.values():
            for p in paths:
                if p not in hashes:
                    hashes[p] = file_hash(p)
    features: dict[str, FeatureCache] = {}
    for modality in system.modality_names:
        wanted = {hashes[p]: p for s in samples for p in s.media.get(modality, [])}
        if not wanted:
            continue
        cache = features[modality] = FeatureCache(root, system.encoder_key(modality))
        cache.fill(
            wanted,
            lambda paths, m=modality: encode_files(system, m, paths),
            batch_size=batch_size,
            desc=f"caching {modality} features",
            progress=progress,
        )
    targets: dict[str, dict[str, FeatureCache]] = {}
    for name in system.generator_names:
        captions = {content_hash(o.caption): o.caption for s in samples for o in s.outputs() if o.modality == name}
        if not captions:
            continue
        tool = system.generator(name)
        caches = targets[name] = {
            spec.name: FeatureCache(root, f"{tool.cache_key()}-{spec.name}") for spec in tool.conditioning_specs()
        }
        todo = sorted({d for c in caches.values() for d in c.missing(captions)})
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            encoded = tool.encode_text([captions[d] for d in chunk])  # {name: (n, L, D)}
            for spec_name, cache in caches.items():
                cache.put(dict(zip(chunk, encoded[spec_name].float().cpu().unbind(0))))
    result = Caches(features, targets, hashes)
    if latents:
        result.latents, result.target_hashes = fill_latents(
            system, samples, root, batch_size=batch_size, progress=progress
        )
    return result


def fill_latents(
    system, samples: list[Sample], root: Path, *, batch_size: int, progress: bool
) -> tuple[dict[str, FeatureCache], dict[Path, str]]:
    """Clean VAE latents of every output target file, for the latent-diffusion loss."""
    limits = system.config.limits
    files: dict[str, dict[str, Path]] = {}
    hashes: dict[Path, str] = {}
    for sample in samples:
        for out in sample.outputs():
            if out.target is not None:
                hashes.setdefault(out.target, file_hash(out.target))
                files.setdefault(out.modality, {})[hashes[out.target]] = out.target
    if not files:
        raise ConfigError(
            "the latent-diffusion loss needs output targets: give 'output_media' (or 'target' in "
            "a caption/generate pair) in the data, or set diffusion_weight to 0"
        )
    unsupported = [g for g in files if not system.generator(g).supports_diffusion_loss]
    if unsupported:
        raise ConfigError(
            f"the latent-diffusion loss is not available for generator(s) {unsupported} "
            f"(kinds: {[system.config.generators[g].kind for g in unsupported]})"
        )
    caches: dict[str, FeatureCache] = {}
    for name, wanted in files.items():
        tool = system.generator(name)
        cache = caches[name] = FeatureCache(root, tool.latents_cache_key())
        cache.fill(
            wanted,
            lambda paths, t=tool: t.target_latents([Path(p).read_bytes() for p in paths], limits),
            batch_size=batch_size,
            desc=f"caching {name} target latents",
            progress=progress,
        )
    return caches, hashes


def encode_files(system, modality: str, paths: list[Path]) -> torch.Tensor:
    """The frozen encoder's features of ``paths``: ``(n, G, T, D_enc)`` float32 on the CPU; a file that is not a
    usable medium is a :class:`~training.data.DataError` naming it."""
    items = []
    for path in paths:
        try:
            items.append(system.decode(modality, Path(path).read_bytes()))
        except MediaError as exc:
            raise DataError([f"{path}: cannot use this {modality}: {exc}"]) from exc
    return system.encode(modality, items).float().cpu()  # (n, G, T, D_enc)


__all__ = ["Caches", "cache_root", "fill_caches", "fill_latents", "encode_files"]
