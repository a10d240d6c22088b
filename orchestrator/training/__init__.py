"""MM PT and MM IT training of the projectors (and optional LoRA adapters), from Python or ``mmgraph train``.

    from orchestrator.training import train
    train("tiny-random", "pairs.jsonl", "runs/pt", stage="pt", epochs=3)
    train("tiny-random", "chats.jsonl", "runs/it", stage="it", init="runs/pt", lora=True)
    Assistant.from_config("tiny-random", weights="runs/it")

Modules: :mod:`~orchestrator.training.data` (reading and validating LLaVA / NExT-GPT style data),
:mod:`~orchestrator.training.cache` (content-addressed feature caches), :mod:`~orchestrator.training.batches`
(samples -> tokens, labels, features, targets), :mod:`~orchestrator.training.audit` (the freeze audit),
:mod:`~orchestrator.training.optim` (AdamW, fused where torch can), :mod:`~orchestrator.training.meter`
(seconds per step of every training loop) and :mod:`~orchestrator.training.trainer` (the
accelerate loop, checkpoints, logs and plots).
"""

from orchestrator.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "train": "orchestrator.training.trainer",
    "Trainer": "orchestrator.training.trainer",
    "TrainConfig": "orchestrator.training.trainer",
    "TrainResult": "orchestrator.training.trainer",
    "plot_losses": "orchestrator.training.trainer",
    "load_samples": "orchestrator.training.data",
    "DataError": "orchestrator.training.data",
    "FeatureCache": "orchestrator.training.cache",
    "freeze_audit": "orchestrator.training.audit",
    "FreezeError": "orchestrator.training.audit",
})
