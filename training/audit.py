"""The freeze audit: which parameters of a system train, per component, and a refusal when anything else would.

What may train is fixed by the method (DESIGN §1): the input projectors, the cross-attention blocks (in a
cross-attention system), the output projectors, the signal-token rows of the LLM's embedding matrices (whole
matrices require grad, a gradient mask keeps every other row fixed), and -- in MM IT with ``--lora`` -- the LoRA
adapters. Encoders, the LLM's own weights and the generators stay frozen, and so do projectors and blocks imported
from a peer's checkpoint; the audit checks every one of their parameters before a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from core.errors import ConfigError


class FreezeError(ConfigError):
    """A parameter outside the trainable set requires gradients."""


@dataclass
class AuditRow:
    component: str
    trainable: int
    total: int


def _unique(params) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def freeze_audit(system, *, train_lora: bool = False) -> list[AuditRow]:
    """Count trainable / total parameters per component and raise :class:`FreezeError` if anything outside the
    allowed set requires gradients. ``train_lora`` allows the LoRA adapters (otherwise they must be frozen)."""
    backbone = system.backbone
    rows: list[AuditRow] = []
    violations: list[str] = []

    def frozen(component: str, named) -> None:
        named = list(named)
        total = sum(p.numel() for _, p in named)
        bad = [name for name, p in named if p.requires_grad]
        violations.extend(f"{component}: {name}" for name in bad)
        rows.append(AuditRow(component, sum(p.numel() for _, p in named if p.requires_grad), total))

    seen_encoders: set[int] = set()
    for name in system.modality_names:
        encoder = system.encoder(name)
        if id(encoder) in seen_encoders:
            continue
        seen_encoders.add(id(encoder))
        frozen(f"encoder {name}", encoder.named_parameters())

    signal_params = backbone.signal_row_parameters()
    signal_ids = {id(p) for p in signal_params.values()}
    lora = backbone.lora_parameters()
    lora_ids = {id(p) for p in lora.values()}
    frozen("llm", ((n, p) for n, p in backbone.model.named_parameters() if id(p) not in signal_ids | lora_ids))

    # Signal rows: the matrices require grad, the mask lets only the signal rows move.
    n_rows = len(backbone.signal_token_set)
    mask_rows = int(backbone.signal_row_mask.sum())
    if mask_rows != n_rows:
        violations.append(f"signal rows: the gradient mask opens {mask_rows} rows, expected {n_rows}")
    dims = sum(p.shape[1] for p in _unique(signal_params.values()))
    rows.append(AuditRow("signal rows", n_rows * dims, sum(p.numel() for p in _unique(signal_params.values()))))

    if lora:
        if train_lora:
            rows.append(
                AuditRow(
                    "llm lora",
                    sum(p.numel() for p in lora.values() if p.requires_grad),
                    sum(p.numel() for p in lora.values()),
                )
            )
        else:
            frozen("llm lora", lora.items())

    trained = system.trainable_modules()
    parts = {f"input_projectors.{m}": p for m, p in system.input_projectors.items()}
    parts["fusion"] = system.fusion
    parts.update({f"output_projectors.{g}": p for g, p in system.output_projectors.items()})
    for group, module in parts.items():
        if not any(True for _ in module.parameters()):  # a splice fusion has no weights
            continue
        kind, _, name = group.partition(".")
        label = f"{_LABELS[kind]} {name}".strip()
        if group not in trained:  # imported frozen from a peer's checkpoint
            frozen(f"{label} (imported)", module.named_parameters())
        else:
            rows.append(
                AuditRow(
                    label,
                    sum(p.numel() for p in module.parameters() if p.requires_grad),
                    sum(p.numel() for p in module.parameters()),
                )
            )
    for name in system.generator_names:
        frozen(f"generator {name}", ((f"{i}", p) for i, p in enumerate(system.generator(name).parameters())))

    if violations:
        shown = "\n  ".join(violations[:10])
        more = f"\n  ... and {len(violations) - 10} more" if len(violations) > 10 else ""
        raise FreezeError(
            f"refusing to train: {len(violations)} parameters outside the trainable set require "
            f"gradients:\n  {shown}{more}"
        )
    return rows


_LABELS = {
    "input_projectors": "input projector",
    "fusion": "cross-attention blocks",
    "output_projectors": "output projector",
}


def format_audit(rows: list[AuditRow]) -> str:
    """A fixed-width table of the audit, with a total line."""
    width = max(len(r.component) for r in rows + [AuditRow("component", 0, 0)])
    lines = [f"{'component':<{width}}  {'trainable':>12}  {'total':>12}"]
    for r in rows:
        lines.append(f"{r.component:<{width}}  {r.trainable:>12,}  {r.total:>12,}")
    trainable, total = sum(r.trainable for r in rows), sum(r.total for r in rows)
    lines.append(f"{'all':<{width}}  {trainable:>12,}  {total:>12,}  ({100 * trainable / max(total, 1):.2f}% trains)")
    return "\n".join(lines)
