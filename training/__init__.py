"""MM PT and MM IT training of the projectors (and optional LoRA adapters), from Python or ``mmgraph train``.

    from training import train
    train("tiny-random", "pairs.jsonl", "runs/pt", stage="pt", epochs=3)
    train("tiny-random", "chats.jsonl", "runs/it", stage="it", init="runs/pt", lora=True)
    Assistant.from_config("tiny-random", weights="runs/it")

Modules: :mod:`~training.config` (the run's knobs, :class:`TrainConfig`, and its :class:`TrainResult`; no torch),
:mod:`~training.data` (reading and validating LLaVA / NExT-GPT style data), :mod:`~training.cache`
(content-addressed feature caches), :mod:`~training.features` (filling them: encoder features, alignment targets,
latents), :mod:`~training.batches` (samples -> tokens, labels, features, targets), :mod:`~training.objective`
(the loss of one batch), :mod:`~training.audit` (the freeze audit), :mod:`~training.optim` (AdamW, fused where
torch can), :mod:`~training.distributed` (the accelerate glue), :mod:`~training.checkpoint` (safetensors + JSON
training state), :mod:`~training.report` (status lines, progress bars, ``log.jsonl`` and ``loss.png``),
:mod:`~training.meter` (seconds per step of every training loop) and :mod:`~training.trainer` (the loop:
:class:`Trainer` and :func:`train`).
"""

from core.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "train": "training.trainer",
        "Trainer": "training.trainer",
        "TrainConfig": "training.config",
        "TrainResult": "training.config",
        "DEFAULT_LR": "training.config",
        "ProjectorObjective": "training.objective",
        "plot_losses": "training.report",
        "load_samples": "training.data",
        "DataError": "training.data",
        "FeatureCache": "training.cache",
        "freeze_audit": "training.audit",
        "FreezeError": "training.audit",
    },
)
