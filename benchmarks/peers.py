"""Imported checkpoints: mmgraph decoding the imported system against Hugging Face ``generate`` on the same folder.

Both sides load one checkpoint folder -- ``@tiny/llava`` and ``@tiny/mllama`` by default, any LLaVA / LLaVA-NeXT /
BLIP-2 / InstructBLIP / Llama 3.2 Vision folder with ``--peer`` -- and answer the same image and question, batch 1,
greedy, exactly ``tokens`` new tokens (``min_new_tokens`` on both sides, so an early EOS of random weights cannot
shorten one). Ours is the whole turn after decoding: encoder, projector, fusion (splice, or the cross-attention
blocks of Llama 3.2 Vision), the signal-aware loop; theirs is the processor's tensors through ``generate``.

* time to first token -- a run with one new token;
* decode tokens/s -- ``(tokens - 1) / (t(tokens) - t(1))``: the steady per-token rate after the prefill.

The greedy tokens of both sides are compared before timing (they must be equal).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor

from benchmarks.common import Row, race_decoding
from core.artifacts import ArtifactRef
from core.hub import resolve_model
from core.turns import MediaPart, TextPart, Turn
from orchestrator.peers import PEERS, architecture
from orchestrator.system import MMSystem, resolve_config

#: what ``mmgraph bench peers`` runs without ``--peer``
DEFAULT_PEERS = ("@tiny/llava", "@tiny/mllama")
QUESTION = "Describe the picture in detail."
#: how each model card calls its processor on a chat-templated prompt (Llama 3.2 Vision's template writes the BOS)
CARD_KWARGS = {"MllamaForConditionalGeneration": {"add_special_tokens": False}}


def sample_picture(size: tuple[int, int] = (336, 224)) -> Image.Image:
    image = Image.new("RGB", size, (120, 130, 140))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, size[0] // 2, size[1] - 20), fill=(220, 40, 30))
    draw.rectangle((size[0] // 2 + 10, 30, size[0] - 20, 70), fill=(30, 60, 210))
    return image


class PeerPair:
    """One checkpoint folder loaded by Hugging Face and imported by mmgraph, on one device and dtype."""

    def __init__(self, spec: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.spec = spec
        folder = resolve_model(spec)
        self.arch = str(architecture(folder))
        self.device = torch.device(device)
        self.hf = PEERS.get(self.arch).model_class.from_pretrained(folder, dtype=dtype).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(folder)
        config = resolve_config(spec)
        llm = config.llm.model_copy(update={"dtype": str(dtype).replace("torch.", "")})
        self.system = MMSystem.from_config(config.model_copy(update={"llm": llm}), device=device)

    def hf_inputs(self, image: Image.Image, text: str) -> dict[str, Any]:
        prompt = text
        if self.processor.chat_template:
            content = [{"type": "image"}, {"type": "text", "text": text}]
            prompt = self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True
            )
        inputs = self.processor(images=image, text=prompt, return_tensors="pt", **CARD_KWARGS.get(self.arch, {}))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    def hf_generate(self, inputs: dict[str, Any], tokens: int) -> list[int]:
        out = self.hf.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return out[0, inputs["input_ids"].shape[1] :].tolist()

    def our_generate(self, image: Image.Image, text: str, tokens: int) -> list[int]:
        ref = ArtifactRef(id="0" * 64, modality="image", mime="image/png", size=1)
        conversation = [Turn(role="user", parts=(MediaPart(artifact=ref), TextPart(text=text)))]
        features = {"image": self.system.encode("image", [image])}  # (1, G, T, D_enc): timed, as theirs is
        result = self.system.respond(conversation, features, max_new_tokens=tokens, min_new_tokens=tokens)
        return [i for segment in result.segments for i in segment.token_ids]


def bench_peers(
    peers: tuple[str, ...] = DEFAULT_PEERS,
    *,
    tokens: int = 32,
    repeats: int = 3,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[Row]:
    rows = []
    image = sample_picture()
    for spec in peers:
        pair = PeerPair(spec, device=device, dtype=dtype)
        inputs = pair.hf_inputs(image, QUESTION)
        with torch.no_grad():
            same = pair.hf_generate(inputs, tokens) == pair.our_generate(image, QUESTION, tokens)
        sides = (
            ("hf", lambda n, pair=pair, inputs=inputs: pair.hf_generate(inputs, n)),
            ("ours", lambda n, pair=pair: pair.our_generate(image, QUESTION, n)),
        )
        results = race_decoding(sides, tokens, pair.device, repeats=repeats)
        notes = {"peer": spec, "class": pair.arch, "tokens": tokens, "same_tokens": same, "device": device}
        which = f"{pair.arch.removesuffix('ForConditionalGeneration')} {spec}"
        rows += [
            Row(f"decode, batch 1 ({which})", "tokens/s", results["ours"]["rate"], results["hf"]["rate"], notes=notes),
            Row(
                f"time to first token ({which})",
                "ms",
                1e3 * results["ours"]["ttft"],
                1e3 * results["hf"]["ttft"],
                higher_is_better=False,
                notes=notes,
            ),
        ]
    return rows
