"""The worked example end to end: pre-train the point encoder, write PT / IT data, train, score.

``python -m mmgraph_pointcloud.recipe --out runs/points`` runs every step (under a minute on two CPU cores):

1. :func:`pretrain_encoder` -- the frozen encoder is trained first, as ULIP-2's PointBERT is, here by telling six
   solids apart (cube, sphere, cone, cylinder, pyramid, torus), and saved with ``save_pretrained``;
2. :func:`write_data` -- ``pt.jsonl`` (a cloud and its caption, "a cube") and ``it.jsonl`` (a question about a
   cloud and its answer, "It is a cube."), the clouds as ``.npy`` and ``.ply`` files;
3. :func:`system_config` -- the tiny-world LLM with one input modality, ``point_cloud``, named by the plugin's
   kinds; no generators;
4. mmgraph's own :class:`~training.Trainer` -- MM PT of the ``set_pool`` projector, then MM IT of
   the projector and LoRA adapters on the LLM, the encoder and the LLM's weights frozen (nothing point-cloud
   specific in mmgraph's code). The tiny-world LLM has never seen the words "cube", "sphere" or "cone": trained
   through the projector alone it answers with the shapes it knows ("It is a circle."), so IT adds LoRA, as the
   tiny-world recipe's own IT does;
5. :func:`score` -- ask the trained :class:`~orchestrator.Assistant` about held-out clouds of fresh poses.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from core.config import load_config
from mmgraph import Assistant
from mmgraph_pointcloud.decoder import encode_npy, encode_ply
from mmgraph_pointcloud.encoder import PointEncoderConfig, PointEncoderModel
from mmgraph_pointcloud.shapes import ALL_SHAPES, SHAPES, sample_cloud
from training import TrainConfig, Trainer

QUESTIONS = ("What shape is it?", "What shape is this point cloud?", "Which solid is this?", "What is this?")
ANSWER = "It is a {shape}."
#: seeds of held-out clouds start here; training data never uses them
HELD_OUT_SEED = 1_000_000


def pretrain_encoder(
    out: str | Path,
    *,
    steps: int = 300,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 1e-3,
    config: PointEncoderConfig | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train :class:`PointEncoderModel` to classify :data:`ALL_SHAPES` (a linear head on [CLS], discarded), save
    it into ``out``; returns ``{"loss_first", "loss_last", "accuracy"}`` (accuracy on 240 held-out clouds)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = config or PointEncoderConfig()
    model = PointEncoderModel(config)
    head = torch.nn.Linear(config.hidden_size, len(ALL_SHAPES))
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=lr)

    def batch(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rng.integers(0, len(ALL_SHAPES), n)
        clouds = [sample_cloud(ALL_SHAPES[y], rng, config.num_points) for y in labels]
        return torch.from_numpy(np.stack(clouds)), torch.from_numpy(labels)

    losses = []
    for _ in tqdm(range(steps), desc="point encoder", disable=not progress):
        points, labels = batch(batch_size, rng)
        loss = torch.nn.functional.cross_entropy(head(model(points).last_hidden_state[:, 0]), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        points, labels = batch(240, np.random.default_rng(HELD_OUT_SEED + seed))
        accuracy = (head(model(points).last_hidden_state[:, 0]).argmax(-1) == labels).float().mean().item()
    model.save_pretrained(out)
    tail = max(len(losses) // 10, 1)
    return {
        "loss_first": float(np.mean(losses[:tail])),
        "loss_last": float(np.mean(losses[-tail:])),
        "accuracy": accuracy,
    }


def _write_cloud(folder: Path, name: str, points: np.ndarray, fmt: str) -> str:
    data = encode_npy(points) if fmt == "npy" else encode_ply(points, binary=fmt == "ply")
    path = folder / f"{name}.{'npy' if fmt == 'npy' else 'ply'}"
    path.write_bytes(data)
    return str(path.relative_to(folder.parent))


def write_data(folder: str | Path, *, pt: int = 300, it: int = 300, seed: int = 0) -> dict[str, Path]:
    """Write ``pt.jsonl`` (``{"point_cloud": path, "caption": "a cone"}``) and ``it.jsonl`` (LLaVA-style
    conversations) with their clouds into ``folder``; the shapes cycle through :data:`SHAPES`."""
    folder = Path(folder)
    clouds = folder / "clouds"
    clouds.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    formats = ("npy", "ply", "ascii-ply")
    rows: dict[str, list[dict[str, Any]]] = {"pt": [], "it": []}
    for stage, count in (("pt", pt), ("it", it)):
        for i in range(count):
            shape = SHAPES[i % len(SHAPES)]
            path = _write_cloud(clouds, f"{stage}-{i:05d}", sample_cloud(shape, rng), formats[i % len(formats)])
            if stage == "pt":
                rows[stage].append({"id": f"pt-{i}", "point_cloud": path, "caption": f"a {shape}"})
            else:
                rows[stage].append(
                    {
                        "id": f"it-{i}",
                        "point_cloud": path,
                        "conversations": [
                            {"from": "human", "value": f"<point_cloud>\n{pick.choice(QUESTIONS)}"},
                            {"from": "gpt", "value": ANSWER.format(shape=shape)},
                        ],
                    }
                )
    paths = {}
    for stage, stage_rows in rows.items():
        paths[stage] = folder / f"{stage}.jsonl"
        paths[stage].write_text("".join(json.dumps(row) + "\n" for row in stage_rows))
    return paths


def system_config(encoder: str | Path, *, llm: str = "@tinyworld/llm") -> dict[str, Any]:
    """The example's SystemConfig (plain data): the tiny-world LLM and a ``point_cloud`` input modality."""
    world = load_config("tiny-world")
    return {
        "name": "pointcloud-example",
        "llm": {**world.llm.model_dump(), "model": llm, "max_new_tokens": 12},
        "modalities": {
            "point_cloud": {
                "encoder": "point_patches",  # plugin kind (entry point mmgraph.modalities)
                "model": str(encoder),
                "projector": {"kind": "set_pool", "num_queries": 4, "depth": 2},  # plugin kind (mmgraph.projectors)
            },
        },
        "generators": {},
    }


def score(assistant, *, n: int = 30, seed: int = 0) -> dict[str, Any]:
    """Ask ``assistant`` "What shape is it?" about ``n`` held-out clouds; ``{"accuracy", "answers": [...]}``.
    An answer is right when the only one of :data:`SHAPES` it names is the cloud's."""
    rng = np.random.default_rng(HELD_OUT_SEED + 7919 * seed)
    right, answers = 0, []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        cloud = encode_ply(sample_cloud(shape, rng)) if i % 2 else encode_npy(sample_cloud(shape, rng))
        reply = assistant.chat(QUESTIONS[0], media={"point_cloud": [cloud]}, seed=0)
        named = {s for s in SHAPES if s in reply.text.lower()}
        right += named == {shape}
        answers.append({"shape": shape, "reply": reply.text})
    return {"accuracy": right / n, "answers": answers}


def run(
    out: str | Path,
    *,
    encoder_steps: int = 600,
    pt_steps: int = 150,
    it_steps: int = 300,
    batch_size: int = 16,
    lr: float = 2e-3,
    lora: bool = True,
    lora_lr: float = 1e-3,
    n_eval: int = 30,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Every step of the example into ``out``; returns (and writes to ``out/result.json``) the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "encoder": pretrain_encoder(out / "encoder", steps=encoder_steps, seed=seed, progress=progress)
    }
    data = write_data(out / "data", seed=seed)
    config = system_config(out / "encoder")
    for stage, steps in (("pt", pt_steps), ("it", it_steps)):
        train = TrainConfig(
            stage=stage,
            max_steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            lora=lora and stage == "it",
            lora_lr=lora_lr,
            cache_dir=str(out / "cache"),
            device="cpu",
            progress=progress,
        )
        trained = Trainer(
            config, data[stage], out / stage, train=train, init=out / "pt" if stage == "it" else None, overwrite=True
        ).run()
        history = trained.history
        result[stage] = {
            "steps": trained.steps,
            "lm_loss_first": history[0]["lm_loss"],
            "lm_loss_last": float(np.mean([h["lm_loss"] for h in history[-10:]])),
        }
    with tempfile.TemporaryDirectory() as tmp:
        bot = Assistant(config, weights=out / "it", db=Path(tmp) / "threads.sqlite", artifacts=Path(tmp) / "a")
        try:
            result["held_out"] = score(bot, n=n_eval, seed=seed)
        finally:
            bot.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mmgraph point-cloud example: encoder, data, PT + IT, score")
    parser.add_argument("--out", required=True)
    parser.add_argument("--encoder-steps", type=int, default=600)
    parser.add_argument("--pt-steps", type=int, default=150)
    parser.add_argument("--it-steps", type=int, default=300)
    parser.add_argument("--no-lora", action="store_true", help="IT trains the projector only (no LoRA adapters)")
    parser.add_argument("--eval", type=int, default=30, help="held-out clouds to ask about")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(
        args.out,
        encoder_steps=args.encoder_steps,
        pt_steps=args.pt_steps,
        it_steps=args.it_steps,
        lora=not args.no_lora,
        n_eval=args.eval,
        seed=args.seed,
    )
    print(
        f"encoder: {result['encoder']['accuracy']:.0%} on held-out solids; "
        f"PT lm_loss {result['pt']['lm_loss_first']:.2f} -> {result['pt']['lm_loss_last']:.2f}; "
        f"IT lm_loss {result['it']['lm_loss_first']:.2f} -> {result['it']['lm_loss_last']:.2f}"
    )
    for answer in result["held_out"]["answers"][:6]:
        print(f"  {answer['shape']:>6}: {answer['reply']}")
    print(
        f"held-out accuracy: {result['held_out']['accuracy']:.0%} of {args.eval} (chance: {1 / len(SHAPES):.0%}); "
        f"{result['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
