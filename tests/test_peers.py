"""Published MM-LLMs in their Hugging Face layout load as mmgraph systems and give the Hugging Face model's own
outputs: for each peer class, a tiny random instance built from its config and saved with ``save_pretrained``
(``@tiny/<peer>``), the same image and prompt, the logits of both forwards (fp32, max abs diff <= 1e-4) and the
greedy tokens of mmgraph's decoding against Hugging Face's ``generate``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor

from core.artifacts import ArtifactRef
from core.errors import ConfigError
from core.hub import resolve_model
from core.turns import MediaPart, TextPart, Turn
from orchestrator.peers import PEERS, architecture, import_config
from orchestrator.system import MMSystem

QUESTION = "Question: what is in the picture? Answer:"
#: how each model card calls its processor on a chat-templated prompt (Llama 3.2 Vision's template writes the BOS)
CARD_KWARGS = {"MllamaForConditionalGeneration": {"add_special_tokens": False}}


def picture(width: int = 52, height: int = 40) -> Image.Image:
    """A non-square RGB picture: a red disc and a blue bar on grey, so resizing and cropping matter."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, width // 2, height - 6), fill=(220, 30, 30))
    draw.rectangle((width // 2 + 4, 6, width - 4, 14), fill=(30, 40, 210))
    return image


def _image_part() -> MediaPart:
    ref = ArtifactRef(id="0" * 64, modality="image", mime="image/png", size=1)
    return MediaPart(artifact=ref)


def prompt_ids(system: MMSystem, conversation: list[Turn], features: dict[str, torch.Tensor]) -> torch.Tensor:
    """mmgraph's prompt; each image's slot count from its projected tokens (LLaVA-NeXT's depends on the image)."""
    media = system.media(features, system.instructions(conversation))
    return torch.tensor([system.prompt(conversation, media).input_ids])


class Pair:
    """One peer checkpoint, loaded by Hugging Face and by mmgraph."""

    def __init__(self, name: str) -> None:
        self.folder = resolve_model(f"@tiny/{name}")
        self.arch = architecture(self.folder)
        self.hf = PEERS.get(self.arch).model_class.from_pretrained(self.folder).eval()
        self.processor = AutoProcessor.from_pretrained(self.folder)
        self.system = MMSystem.from_pretrained(f"@tiny/{name}", device="cpu")

    def hf_inputs(self, image: Image.Image, text: str) -> dict:  # as each model card shows
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = text  # BLIP-2 and InstructBLIP take the text as it is
        if self.processor.chat_template:
            prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return dict(self.processor(images=image, text=prompt, return_tensors="pt", **CARD_KWARGS.get(self.arch, {})))

    def ours(self, image: Image.Image, text: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[Turn]]:
        conversation = [Turn(role="user", parts=(_image_part(), TextPart(text=text)))]
        features = {"image": self.system.encode("image", [image])}
        return prompt_ids(self.system, conversation, features), features, conversation

    def forward(self, conversation: list[Turn], ids: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """mmgraph's composite forward (InstructBLIP's Q-Former reads the turn's text)."""
        with torch.no_grad():
            out, _ = self.system(ids, features, instructions=self.system.instructions(conversation))
        return out.logits


_PAIRS: dict[str, Pair] = {}


def loaded(name: str) -> Pair:
    """The pair of ``@tiny/<name>``, loaded once per test session."""
    if name not in _PAIRS:
        _PAIRS[name] = Pair(name)
    return _PAIRS[name]


@pytest.fixture(params=["llava", "llava-next", "mllama", "blip2", "instructblip"])
def pair(request):
    return loaded(request.param)


def test_the_prompt_is_token_for_token_the_processors(pair):
    image = picture()
    ids, _, _ = pair.ours(image, QUESTION)
    assert ids[0].tolist() == pair.hf_inputs(image, QUESTION)["input_ids"][0].tolist()


def test_logits_match_the_hugging_face_forward(pair):
    image = picture()
    ids, features, conversation = pair.ours(image, QUESTION)
    with torch.no_grad():
        theirs = pair.hf(**pair.hf_inputs(image, QUESTION)).logits
    ours = pair.forward(conversation, ids, features)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1e-4
    assert theirs.std() > 0.1  # random but not flat: a wrong image or prompt would show


def test_greedy_tokens_match_hugging_face_generate(pair):
    image = picture()
    inputs = pair.hf_inputs(image, QUESTION)
    with torch.no_grad():
        theirs = pair.hf.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    _, features, conversation = pair.ours(image, QUESTION)
    result = pair.system.respond(conversation, features, max_new_tokens=16)
    ours = [i for segment in result.segments for i in segment.token_ids]
    eos = pair.system.backbone.tokenizer.eos_token_id
    theirs = theirs.tolist()
    if eos in theirs:  # Hugging Face keeps the EOS it stopped at; mmgraph reports it as the finish reason
        theirs = theirs[: theirs.index(eos)]
        assert result.finish_reason == "stop"
    assert not set(theirs) & set(pair.system.backbone.placeholder_ids.values())  # mmgraph never samples those
    assert ours == theirs and len(ours) >= 4


def test_an_unsupported_checkpoint_names_its_class_and_the_supported_ones(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=8, n_layer=1, n_head=2, vocab_size=16)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="GPT2LMHeadModel checkpoint.*supported: .*LlavaForConditionalGeneration"):
        import_config(str(tmp_path))


#: the peers whose processors take several images in one prompt (BLIP's put one image's queries before the text)
MULTI_IMAGE = ("llava", "llava-next", "mllama")

#: other key layouts of the same checkpoint: how llava-hf's Hub checkpoints store the CLIP tower (under its own
#: ``vision_model.`` prefix), and the ``model.*`` layout transformers 5 loads into
LAYOUTS = {
    "llava": [
        [("vision_tower.", "vision_tower.vision_model.")],
        [
            ("language_model.model.", "model.language_model."),
            ("language_model.lm_head.", "lm_head."),
            ("vision_tower.", "model.vision_tower."),
            ("multi_modal_projector.", "model.multi_modal_projector."),
        ],
    ],
    "llava-next": [
        [("vision_tower.", "vision_tower.vision_model."), ("image_newline", "model.image_newline")],
    ],
    "mllama": [
        [
            ("language_model.model.", "model.language_model."),
            ("language_model.lm_head.", "lm_head."),
            ("vision_model.", "model.vision_model."),
            ("multi_modal_projector.", "model.multi_modal_projector."),
        ],
    ],
}


@pytest.mark.parametrize("name", list(LAYOUTS))  # BLIP-2's and InstructBLIP's checkpoints have one layout
def test_other_key_layouts_of_the_checkpoint_load_to_the_same_logits(name, tmp_path):
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    pair = loaded(name)
    image = picture()
    inputs = pair.hf_inputs(image, QUESTION)
    with torch.no_grad():
        reference = pair.hf(**inputs).logits
    for n, renames in enumerate(LAYOUTS[name]):
        folder = tmp_path / f"layout{n}"
        shutil.copytree(pair.folder, folder)
        state = load_file(Path(pair.folder) / "model.safetensors")
        renamed = {}
        for key, value in state.items():
            for old, new in renames:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            renamed[key] = value
        assert renamed.keys() != state.keys()
        save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
        system = MMSystem.from_pretrained(str(folder), device="cpu")
        conversation = [Turn(role="user", parts=(_image_part(), TextPart(text=QUESTION)))]
        features = {"image": system.encode("image", [image])}
        with torch.no_grad():
            ours, _ = system(prompt_ids(system, conversation, features), features)
        assert (ours.logits - reference).abs().max() <= 1e-4, renames


@pytest.mark.parametrize("between", ["and", None])
@pytest.mark.parametrize("name", MULTI_IMAGE)
def test_two_images_read_as_the_hugging_face_model_reads_them(name, between):
    """Several media in one turn: LLaVA splices each in place; in Llama 3.2 Vision a text token reads the image
    before it, or all the images shown together (adjacent placeholders) before it."""
    pair = loaded(name)
    images = [picture(), picture(36, 60)]
    middle = [{"type": "text", "text": between}] if between else []
    parts = [{"type": "image"}, *middle, {"type": "image"}, {"type": "text", "text": QUESTION}]
    prompt = pair.processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True)
    inputs = dict(pair.processor(images=[images], text=prompt, return_tensors="pt", **CARD_KWARGS.get(pair.arch, {})))
    ours_middle = (TextPart(text=between),) if between else ()
    conversation = [Turn(role="user", parts=(_image_part(), *ours_middle, _image_part(), TextPart(text=QUESTION)))]
    features = {"image": torch.cat([pair.system.encode("image", [i]) for i in images])}
    ids = prompt_ids(pair.system, conversation, features)
    assert ids[0].tolist() == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        theirs = pair.hf(**inputs).logits
        ours, _ = pair.system(ids, features)
    assert (ours.logits - theirs).abs().max() <= 1e-4


def test_instructblip_queries_read_the_instruction():
    """The instruction-aware Q-Former: what an image becomes depends on the question, exactly as in Hugging Face."""
    pair = loaded("instructblip")
    image = picture()
    features = pair.system.encode("image", [image])
    outputs = []
    for question in ("what colour is the disc?", "how many bars are there?"):
        inputs = pair.processor(images=image, text=question, return_tensors="pt")
        with torch.no_grad():
            theirs = pair.hf.get_image_features(
                pixel_values=inputs["pixel_values"],
                qformer_input_ids=inputs["qformer_input_ids"],
                qformer_attention_mask=inputs["qformer_attention_mask"],
            ).pooler_output
            ours = pair.system.project("image", features, [question])
        assert (ours - theirs).abs().max() <= 1e-4
        outputs.append(ours)
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="needs the instruction of each of its 1 images"):
        pair.system.project("image", features)


@pytest.mark.parametrize("size", [(52, 40), (100, 30), (30, 100), (33, 33), (200, 64)])
def test_llava_next_tiles_images_of_every_shape_as_hugging_face_does(size):
    """Any-resolution tiling: each image shape picks its own grid, its tokens are unpadded and closed by newline
    tokens row by row; the slot counts and logits follow Hugging Face for every shape."""
    pair = loaded("llava-next")
    image = picture(*size)
    inputs = pair.hf_inputs(image, QUESTION)
    ids, features, conversation = pair.ours(image, QUESTION)
    assert ids[0].tolist() == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        theirs = pair.hf(**inputs).logits
    assert (pair.forward(conversation, ids, features) - theirs).abs().max() <= 1e-4
    assert int(features["image"][0, :, 0, -3].sum()) >= 3  # the whole image and a grid of 2 to 4 tiles


@pytest.mark.parametrize("name", ["llava", "llava-next", "mllama", "blip2", "instructblip"])
def test_the_assistant_replies_with_the_hugging_face_models_greedy_tokens(name, tmp_path):
    """End to end through the graph (ingest -> encode -> reason -> merge): Assistant.from_pretrained on the
    checkpoint folder decodes the tokens Hugging Face's generate gives, and replies with their text."""
    import io

    from orchestrator.assistant import Assistant

    pair = loaded(name)
    buffer = io.BytesIO()
    picture().save(buffer, format="PNG")
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    inputs = pair.hf_inputs(image, QUESTION)
    with torch.no_grad():
        out = pair.hf.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    expected = [i for i in out.tolist() if i != pair.system.backbone.tokenizer.eos_token_id]
    with Assistant.from_pretrained(f"@tiny/{name}", db=tmp_path / "t.sqlite", artifacts=tmp_path / "a") as bot:
        results = []
        generate = bot.system.backbone.generate
        bot.system.backbone.generate = lambda *a, **k: results.append(generate(*a, **k)) or results[-1]  # a spy
        reply = bot.chat(QUESTION, images=[buffer.getvalue()], max_new_tokens=12)
    (result,) = results
    assert [i for segment in result.segments for i in segment.token_ids] == expected and len(expected) >= 4
    assert reply.text == result.text
