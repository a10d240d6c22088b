"""The LLM backbone: tokenizer extension, prompt building, embedding splice, and signal-aware generation.

Any ``AutoModelForCausalLM`` works. On top of it this module adds, as DESIGN §4 describes:

- one placeholder token per input modality (``<image>``) and ``k`` signal tokens per generator
  (``[IMG0]..[IMG{k-1}]``) as special tokens, their new embedding rows initialised from the existing
  rows; only the signal rows are trainable (a gradient mask), the rest of the LLM stays frozen;
- a prompt builder that tokenises trusted template text normally and *user* text with special tokens split, so
  typing ``[IMG0]`` or ``<image>`` can never produce a special token, and that expands each placeholder into as
  many slots as its projector emits;
- :meth:`Backbone.embed`, which writes projected features into those slots with ``masked_scatter`` and checks
  the counts (as Hugging Face LLaVA does);
- :meth:`Backbone.generate`, a KV-cached decoding loop that forces the rest of a signal group once its first
  token appears, captures the last-layer hidden states (and input embeddings) at the signal positions, streams
  text, honours requested / disabled output generators, and stops cooperatively on a cancel flag.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from core.config import CacheKind, LLMConfig, PromptFormat
from core.errors import PromptError
from core.hub import resolve_model
from orchestrator import decoding

# ---------------------------------------------------------------------------------------------------------------
# Prompt segments: what a conversation turn is made of, before tokenisation.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Text typed by a user (untrusted: special tokens are split) or produced by the assistant."""

    text: str


@dataclass(frozen=True)
class Media:
    """An input item of ``modality`` occupying ``slots`` placeholder positions."""

    modality: str
    slots: int


@dataclass(frozen=True)
class Signal:
    """A signal group of ``generator`` in an assistant turn (all its tokens)."""

    generator: str


Segment = Text | Media | Signal


@dataclass
class PromptTurn:
    """One turn as the LLM reads it: a role and its segments (placeholders already counted in slots). The
    conversation's own turns (:class:`core.turns.Turn`) become these in one place, :meth:`MMSystem.prompt`."""

    role: Literal["user", "assistant"]
    segments: list[Segment]


@dataclass
class Prompt:
    """Token ids of a whole conversation plus the mask of tokens an assistant produced (training labels)."""

    input_ids: list[int]
    assistant_mask: list[bool]


#: stands in for a text while a chat template is rendered, so the text itself is never read by the template
_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def _sentinel(index: int) -> str:
    return f"\ue000{index}\ue001"


# ---------------------------------------------------------------------------------------------------------------
# Generation results
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TextSpan:
    text: str
    token_ids: list[int] = field(default_factory=list)


@dataclass
class SignalGroup:
    """One emitted signal group: the tool call to a generator, with what the output projector needs."""

    generator: str
    token_ids: list[int]
    hidden: torch.Tensor  # (k, D) last-layer hidden states at the signal positions
    input_embeds: torch.Tensor  # (k, D) the signal tokens' input embeddings


@dataclass
class GenerationResult:
    segments: list[TextSpan | SignalGroup]
    finish_reason: Literal["stop", "length", "cancelled"]
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments if isinstance(s, TextSpan))

    @property
    def signals(self) -> list[SignalGroup]:
        return [s for s in self.segments if isinstance(s, SignalGroup)]


class SequenceDecoder:
    """One reply being decoded, token by token: the decoding rules of :meth:`Backbone.generate`, apart from the LLM.

    The caller runs the LLM; the decoder decides. :meth:`propose` reads the logits of the last forward and returns the
    next token (or ``None``: the reply is over, :attr:`finish` says why) -- sampling or greedy over the allowed rows,
    forcing the rest of a signal group once its first token is out, forcing required generators before the budget
    runs out. :meth:`wants_forward` says whether the LLM must read that token (a next token is due, or it is a signal
    token whose hidden state the output projector needs); :meth:`record` takes the token back with its input embedding
    and, if the LLM read it, the last layer's hidden state there. So one reply can be decoded alone
    (:meth:`Backbone.generate`) or as one row of a batch (:mod:`orchestrator.engine`) with the same tokens.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        max_new_tokens: int = 128,
        min_new_tokens: int = 0,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        require: Sequence[str] = (),
        allow: Sequence[str] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        unknown = [g for g in list(require) + list(allow or []) if g not in backbone.signal_ids]
        if unknown:
            raise PromptError(f"unknown generators {unknown}; this backbone has {sorted(backbone.signal_ids)}")
        self.backbone = backbone
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens
        self.temperature, self.top_p = temperature, top_p
        self.on_text, self.cancel = on_text, cancel
        allowed = set(backbone.signal_ids if allow is None else allow) | set(require)
        self.pending = list(dict.fromkeys(require))
        self.eos = backbone.tokenizer.eos_token_id
        self.rng: torch.Generator | None = None
        if temperature > 0:
            self.rng = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
        self.banned = backbone.banned_rows(allowed)
        self.segments: list[TextSpan | SignalGroup] = []
        self.text_ids: list[int] = []
        self.text_so_far = ""
        self.emitted_upto = 0  # text_ids[:emitted_upto] are covered by text_so_far
        self.forced: deque[int] = deque()
        self.group: dict[str, Any] | None = None  # the signal group being emitted: generator, ids, hidden, embeds
        self.produced = 0
        self.finish: Literal["stop", "length", "cancelled"] | None = None

    @property
    def done(self) -> bool:
        return self.finish is not None

    # -- one step ---------------------------------------------------------------------------------------------------
    def propose(self, logits: torch.Tensor | None) -> int | None:
        """The next token given the last forward's next-token ``logits`` (V,), or ``None`` when the reply ends here
        (``logits`` may be None only then: after a token the LLM did not read)."""
        if self.cancel is not None and self.cancel.is_set():
            self._end("cancelled")
            return None
        if self.forced:
            next_id = self.forced.popleft()
        else:
            if self.produced >= self.max_new_tokens and not self.pending:
                self._end("length")
                return None
            assert logits is not None, "a token is due, but the LLM did not read the last one"
            next_id = self.backbone.choose(
                logits,
                self.banned,
                self.pending,
                self.max_new_tokens - self.produced,
                self.eos,
                self.temperature,
                self.top_p,
                self.rng,
                allow_eos=self.produced >= self.min_new_tokens,
            )
            if next_id == self.eos:
                self._end("stop")
                return None
        self.produced += 1
        if next_id in self.backbone.signal_start and self.group is None:
            generator = self.backbone.signal_start[next_id]
            self._flush_text()
            self.group = {"generator": generator, "ids": [], "hidden": [], "embeds": []}
            self.forced.extend(self.backbone.signal_ids[generator][1:])
            if generator in self.pending:
                self.pending.remove(generator)
        return next_id

    def wants_forward(self) -> bool:
        """Whether the LLM must read the token just proposed: something needs its logits (a next token) or its hidden
        state (a signal token). The last token of a reply that ends at the budget costs no forward."""
        return self.group is not None or self.produced < self.max_new_tokens or bool(self.pending)

    def record(self, token: int, embed: torch.Tensor, hidden: torch.Tensor | None) -> None:
        """Keep the proposed ``token`` with its input embedding (D,) and, if the LLM read it, the hidden state (D,)."""
        group = self.group
        if group is not None:
            group["ids"].append(token)
            group["hidden"].append(hidden)
            group["embeds"].append(embed)
            if not self.forced:
                self.segments.append(
                    SignalGroup(
                        group["generator"],
                        group["ids"],
                        torch.stack(group["hidden"]).float().cpu(),  # (k, D)
                        torch.stack(group["embeds"]).float().cpu(),  # (k, D)
                    )
                )
                self.group = None
            return
        self.text_ids.append(token)
        if self.on_text is not None:
            text = self.backbone.decode_text(self.text_ids)
            if not text.endswith("\ufffd") and len(text) > len(self.text_so_far):
                delta = self._delta_text(text)
                self.on_text(delta)
                self.text_so_far += delta
                self.emitted_upto = len(self.text_ids)

    def result(self, prompt_tokens: int) -> GenerationResult:
        """The reply so far as a :class:`GenerationResult` (call once it is :attr:`done`)."""
        return GenerationResult(self.segments, self.finish or "length", prompt_tokens, self.produced)

    # -- text ---------------------------------------------------------------------------------------------------------
    def _end(self, finish: Literal["stop", "length", "cancelled"]) -> None:
        self.finish = finish
        self._flush_text()  # a group cut off by cancellation is dropped: it never reaches ``segments``

    def _delta_text(self, text: str) -> str:
        """What to add to ``text_so_far``: the new suffix of the full decode, or -- where decoding is not prefix-stable
        (invalid UTF-8 from byte-fallback tokens) -- the new tokens decoded on their own, so the streamed pieces always
        concatenate to the span's text."""
        if text.startswith(self.text_so_far):
            return text[len(self.text_so_far) :]
        return self.backbone.decode_text(self.text_ids[self.emitted_upto :])

    def _flush_text(self) -> None:
        if self.text_ids:
            if self.emitted_upto < len(self.text_ids):  # tokens held back as incomplete, or not streamed at all
                delta = self._delta_text(self.backbone.decode_text(self.text_ids))
                if self.on_text is not None and delta:
                    self.on_text(delta)
                self.text_so_far += delta
            self.segments.append(TextSpan(self.text_so_far, self.text_ids))
        self.text_ids, self.text_so_far, self.emitted_upto = [], "", 0


# ---------------------------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------------------------


def _weight(layer: nn.Module) -> nn.Parameter:
    """The weight matrix of an embedding layer or LM head (an ``nn.Module`` attribute types as ``Tensor | Module``)."""
    return cast(nn.Parameter, layer.weight)


class Backbone(nn.Module):
    """A causal LM extended with placeholder and signal tokens."""

    signal_row_mask: torch.Tensor  # (V, 1) buffer: 1 on the signal rows, whose gradients pass

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        placeholders: dict[str, str],
        signals: dict[str, list[str]],
        prompt_format: PromptFormat | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format or PromptFormat()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._add_tokens(placeholders, signals)
        self.model.requires_grad_(False)
        self.model.eval()
        self._install_signal_row_gradients()
        self.lora_settings: dict[str, Any] | None = None
        self._template_cache: dict[str, list[int]] = {}
        self._static_steps: dict[tuple[str, int, str, str], decoding.StaticSteps] = {}
        self._static_lock = threading.Lock()

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        cfg: LLMConfig,
        *,
        placeholders: dict[str, str],
        signals: dict[str, list[str]],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> Backbone:
        """Load any causal LM + tokenizer by Hugging Face id or local path (``@tiny/`` names are built first)."""
        path = resolve_model(cfg.model, seed)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        backbone = cls(model, tokenizer, placeholders=placeholders, signals=signals, prompt_format=cfg.prompt)
        return backbone.to(device)

    def _add_tokens(self, placeholders: dict[str, str], signals: dict[str, list[str]]) -> None:
        tok = self.tokenizer
        new_tokens = list(placeholders.values()) + [t for group in signals.values() for t in group]
        head = self.model.get_output_embeddings()
        old_in = _weight(self.model.get_input_embeddings()).shape[0]
        old_out = _weight(head).shape[0] if head is not None else old_in
        before = len(tok)
        tok.add_special_tokens({"additional_special_tokens": new_tokens}, replace_extra_special_tokens=False)
        added = list(range(before, len(tok)))  # the ids of tokens the tokenizer did not have
        size = max(len(tok), old_in)
        # The LM head may be shorter than the embedding (Llama 3.2 Vision embeds ids it never predicts): it grows
        # when a new token must be predicted, and the rows it gains for the others are never sampled.
        grow_head = bool(added) and old_out <= max(added)
        if size != old_in or grow_head:
            self.model.resize_token_embeddings(size, mean_resizing=False)
        if added:
            self._init_new_rows(added, old_in, old_out, size)
        self.unpredicted = set(range(old_out, size)) - set(added) if grow_head else set()

        def token_id(token: str) -> int:
            return cast(int, tok.convert_tokens_to_ids(token))  # one token, one id

        self.placeholder_ids = {m: token_id(t) for m, t in placeholders.items()}
        self.signal_ids = {g: [token_id(t) for t in group] for g, group in signals.items()}
        self.signal_start = {ids[0]: g for g, ids in self.signal_ids.items()}
        self.signal_token_set = {i for ids in self.signal_ids.values() for i in ids}
        self.special_new_ids = set(self.placeholder_ids.values()) | self.signal_token_set

    @torch.no_grad()
    def _init_new_rows(self, added: list[int], old_in: int, old_out: int, size: int) -> None:
        """Initialise the rows of the added tokens (``added``: their ids, which may fall inside an embedding padded
        beyond the tokenizer), and any LM-head rows that did not exist (``old_out`` up to ``size``).

        Output rows (``lm_head``) start at the mean of the existing rows (NExT-GPT, MiniGPT-5), so no new token is
        favoured before training. Input rows are drawn from the existing rows' per-dimension mean and standard
        deviation with a fixed seed: identical rows would give the ``k`` signal tokens of a group identical
        queries, and the output projector then waits for training to break that symmetry (in the tiny world,
        alignment sat on a plateau for 1000-3000 PT steps; distinct rows leave it within a few hundred).
        """
        noise = torch.Generator().manual_seed(size)
        inputs, outputs = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        tied = outputs is not None and outputs.weight is inputs.weight
        for emb in {id(e.weight): e for e in (inputs, outputs) if e is not None}.values():
            weight = _weight(emb)
            known = old_in if emb is inputs else old_out
            rows = sorted(set(added) | set(range(known, size))) if emb is outputs and not tied else added
            if not rows:
                continue
            old = weight[: min([known, *added])].float()  # the rows before any new one: their statistics seed them
            mean = old.mean(dim=0, keepdim=True)  # (1, D)
            values = mean.expand(len(rows), -1)  # (new, D)
            if emb is inputs and not tied:  # a tied matrix keeps the mean
                std = old.std(dim=0, keepdim=True)  # (1, D)
                values = values + std * torch.randn(values.shape, generator=noise)
            weight[rows] = values.to(weight.dtype)
            bias = getattr(emb, "bias", None)
            if bias is not None:
                bias[rows] = bias[: old.shape[0]].mean()

    def _install_signal_row_gradients(self) -> None:
        """Make the input/output embedding matrices trainable, with a gradient mask that keeps all rows but the
        signal rows fixed (GILL's ``param.grad *= mask``)."""
        self._signal_row_params: dict[str, nn.Parameter] = {}
        vocab = _weight(self.model.get_input_embeddings()).shape[0]
        mask = torch.zeros(vocab, 1)
        for i in self.signal_token_set:
            mask[i] = 1.0
        self.register_buffer("signal_row_mask", mask, persistent=False)
        if not self.signal_token_set:  # no generators: the embeddings stay frozen (no full-matrix gradient)
            return
        for name, module in (
            ("embed_tokens", self.model.get_input_embeddings()),
            ("lm_head", self.model.get_output_embeddings()),
        ):
            if module is None:
                continue
            weight = _weight(module)
            if any(weight is p for p in self._signal_row_params.values()):
                continue
            weight.requires_grad_(True)
            weight.register_hook(lambda grad: grad * self.signal_row_mask.to(grad.dtype))
            self._signal_row_params[name] = weight

    def signal_row_parameters(self) -> dict[str, nn.Parameter]:
        """The (masked) embedding matrices whose signal rows train: name -> parameter."""
        return dict(self._signal_row_params)

    def signal_rows_state(self) -> dict[str, torch.Tensor]:
        """Only the trainable rows, for saving (``embed_tokens`` / ``lm_head`` rows of the signal tokens)."""
        ids = torch.tensor(sorted(self.signal_token_set), dtype=torch.long)
        out = {"signal_token_ids": ids}
        for name, param in self._signal_row_params.items():
            out[name] = param.detach()[ids.to(param.device)].cpu().clone()
        return out

    @torch.no_grad()
    def load_signal_rows(self, state: dict[str, torch.Tensor]) -> None:
        ids = sorted(self.signal_token_set)
        saved = state["signal_token_ids"].tolist()
        if saved != ids:
            raise PromptError(f"saved signal token ids {saved} do not match this backbone's {ids}")
        for name, param in self._signal_row_params.items():
            if name in state:
                param[torch.tensor(ids, device=param.device)] = state[name].to(param.device, param.dtype)

    # -- LoRA adapters (MM IT) --------------------------------------------------------------------------------
    def add_lora(
        self,
        *,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.0,
        targets: str | list[str] = "all-linear",
        seed: int = 0,
    ) -> dict[str, Any]:
        """Inject LoRA adapters (peft) into the LLM's linear layers; only the adapters (and the signal rows) train.

        Returns the settings, which :meth:`lora_settings` reports and weight files record so the adapters can be
        re-created before their tensors are loaded.
        """
        from peft import LoraConfig, inject_adapter_in_model  # noqa: PLC0415 - peft (1.7 s to import) only for LoRA

        if self.lora_settings is not None:
            raise PromptError(f"this backbone already has LoRA adapters ({self.lora_settings})")
        settings = {"r": int(r), "alpha": int(alpha), "dropout": float(dropout), "targets": targets}
        self._static_steps.clear()  # captured steps would run the layers without their adapters
        torch.manual_seed(seed)  # lora_A is drawn from the global generator
        inject_adapter_in_model(
            LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none"), self.model
        )
        for param in self._signal_row_params.values():  # peft marks everything but the adapters frozen
            param.requires_grad_(True)
        if not self.lora_parameters():
            raise PromptError(f"LoRA targets {targets!r} matched no layer of {type(self.model).__name__}")
        self.lora_settings = settings
        return settings

    def lora_parameters(self) -> dict[str, nn.Parameter]:
        """The LoRA adapter parameters: name -> parameter (empty without adapters)."""
        return {name: p for name, p in self.model.named_parameters() if "lora_" in name}

    def lora_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self.lora_parameters().items()}

    @torch.no_grad()
    def load_lora(self, state: dict[str, torch.Tensor]) -> None:
        params = self.lora_parameters()
        if set(state) != set(params):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise PromptError(f"LoRA tensors do not fit this backbone: missing {missing[:3]}, unexpected {extra[:3]}")
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))

    # -- properties ----------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return _weight(self.model.get_input_embeddings()).shape[1]

    @property
    def device(self) -> torch.device:
        return _weight(self.model.get_input_embeddings()).device

    @property
    def dtype(self) -> torch.dtype:
        return _weight(self.model.get_input_embeddings()).dtype

    # -- tokenisation ---------------------------------------------------------------------------------------------
    def tokenize_user_text(self, text: str) -> list[int]:
        """Untrusted text -> ids. Special tokens are split, so no added token can appear."""
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids
        # Defence in depth: a tokenizer that ignored split_special_tokens must not smuggle in a special id.
        if self.special_new_ids.intersection(ids):
            raise PromptError("user text produced a reserved token id; this tokenizer does not split special tokens")
        return ids

    def _template(self, text: str) -> list[int]:
        if text not in self._template_cache:
            self._template_cache[text] = self.tokenizer(text, add_special_tokens=False).input_ids
        return self._template_cache[text]

    def build_prompt(self, turns: Sequence[PromptTurn], *, add_generation_prompt: bool = True) -> Prompt:
        """Lay out a conversation: by the config's chat template when it has one (:meth:`_build_from_template`),
        else ``[bos] system sep (USER: ... sep ASSISTANT: ... eos sep)* ASSISTANT:``."""
        if self.prompt_format.chat_template:
            return self._build_from_template(turns, add_generation_prompt)
        fmt = self.prompt_format
        ids: list[int] = []
        mask: list[bool] = []

        def put(tokens: list[int], assistant: bool = False) -> None:
            ids.extend(tokens)
            mask.extend([assistant] * len(tokens))

        if self.tokenizer.bos_token_id is not None and self.tokenizer.bos_token_id != self.tokenizer.eos_token_id:
            put([self.tokenizer.bos_token_id])
        if fmt.system:
            put(self._template(fmt.system + fmt.turn_separator))
        for turn in turns:
            is_assistant = turn.role == "assistant"
            put(self._template(fmt.assistant_prefix if is_assistant else fmt.user_prefix))
            for seg in turn.segments:
                if isinstance(seg, Text):
                    put(self.tokenize_user_text(seg.text), is_assistant)
                elif isinstance(seg, Media):
                    if seg.modality not in self.placeholder_ids:
                        raise PromptError(f"no placeholder token for input modality {seg.modality!r}")
                    put([self.placeholder_ids[seg.modality]] * seg.slots)
                elif isinstance(seg, Signal):
                    put(self.signal_ids[seg.generator], is_assistant)
            if is_assistant:
                put([self.tokenizer.eos_token_id], True)
            put(self._template(fmt.turn_separator))
        if add_generation_prompt:
            # exactly the prefix training put before each assistant turn, so the first reply token is in context
            put(self._template(fmt.assistant_prefix))
        return Prompt(ids, mask)

    def chat_template(self) -> str:
        """The Jinja template of ``prompt.chat_template`` (``tokenizer``: the tokenizer's own)."""
        template = self.prompt_format.chat_template or ""
        if template == "tokenizer":
            template = self.tokenizer.chat_template or ""
            if not template:
                raise PromptError("prompt.chat_template is 'tokenizer', but this tokenizer has no chat template")
        return template

    def _build_from_template(self, turns: Sequence[PromptTurn], add_generation_prompt: bool) -> Prompt:
        """Lay out a conversation with a Jinja chat template, token for token as its model's own processor does.

        The template renders OpenAI-style messages (``{type: text}`` parts and one ``{type: <modality>}`` part per
        medium, which it writes as its placeholder token) with each text replaced by a sentinel; the texts are put
        back and the whole string is tokenised at once, as a Hugging Face processor tokenises its prompt. The
        offsets then prove that no text a user or client supplied produced an added token (placeholder, signal,
        special): if one did, that text is tokenised again with special tokens split -- it can never smuggle one
        in. Each placeholder is expanded to its medium's slots; assistant text and the special tokens that close
        an assistant turn are marked as the assistant's.
        """
        template = self.chat_template()
        media_first = self.prompt_format.media_first
        texts: list[tuple[str, str, bool]] = []  # (text, role, trusted): signal groups are ours, texts are not
        media: list[Media] = []
        messages: list[dict[str, Any]] = []
        if self.prompt_format.system:
            texts.append((self.prompt_format.system, "system", True))
            messages.append({"role": "system", "content": [{"type": "text", "text": _sentinel(0)}]})
        for turn in turns:
            content: list[dict[str, Any]] = []
            for seg in turn.segments:
                if isinstance(seg, Media):
                    if not media_first:  # else its slots are put before the prompt, below
                        content.append({"type": seg.modality})
                    media.append(seg)
                    continue
                if isinstance(seg, Signal):  # our own tokens: trusted
                    text, trusted = "".join(self.tokenizer.convert_ids_to_tokens(self.signal_ids[seg.generator])), True
                else:
                    text, trusted = seg.text, False
                content.append({"type": "text", "text": _sentinel(len(texts))})
                texts.append((text, turn.role, trusted))
            messages.append({"role": turn.role, "content": content})
        rendered = cast(
            str,
            self.tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
            ),
        )
        # put the texts back, remembering where each one is
        spans: list[tuple[int, int, int]] = []  # (start, end, index into texts)
        pieces, at = [], 0
        for i, piece in enumerate(_SENTINEL.split(rendered)):
            if i % 2 == 0:
                pieces.append(piece)
                at += len(piece)
            else:
                text = texts[int(piece)][0]
                spans.append((at, at + len(text), int(piece)))
                pieces.append(text)
                at += len(text)
        full = "".join(pieces)
        add_specials = "bos_token" not in template  # a template that writes the BOS itself is tokenised as is
        encoded = self.tokenizer(full, add_special_tokens=add_specials, return_offsets_mapping=True)
        ids, offsets = list(encoded.input_ids), [tuple(o) for o in encoded.offset_mapping]
        untrusted = [(s0, s1) for s0, s1, i in spans if not texts[i][2]]
        if self._smuggled(ids, offsets, untrusted):
            ids, offsets = self._tokenize_pieces(full, spans, texts, add_specials)
            if self._smuggled(ids, offsets, untrusted):
                raise PromptError(
                    "user text produced a reserved token id; this tokenizer does not split special tokens"
                )
        if media_first:  # each medium's placeholder before the prompt, as the processor prepends them
            ids = [self.placeholder_ids[seg.modality] for seg in media] + ids
            offsets = [(0, 0)] * len(media) + offsets
        return self._expand_media(ids, offsets, spans, texts, media)

    def _smuggled(self, ids: list[int], offsets: list[tuple[int, int]], untrusted: list[tuple[int, int]]) -> bool:
        """Whether a token made from untrusted text is an added or special token."""
        reserved = set(self.tokenizer.all_special_ids) | self.special_new_ids
        return any(
            token in reserved and any(a < s1 and b > s0 for s0, s1 in untrusted)
            for token, (a, b) in zip(ids, offsets, strict=True)
        )

    def _tokenize_pieces(
        self, full: str, spans: list[tuple[int, int, int]], texts: list[tuple[str, str, bool]], add_specials: bool
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """A prompt whose untrusted text holds an added token's string: template pieces and trusted texts are
        tokenised normally, untrusted texts with special tokens split (offsets are those of the pieces)."""
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        if add_specials:  # what the tokenizer puts before a text of its own accord (a BOS, usually)
            prefix = self.tokenizer("", add_special_tokens=True).input_ids
            ids += prefix
            offsets += [(0, 0)] * len(prefix)
        cuts = [0]
        for start, end, _ in spans:
            cuts += [start, end]
        cuts.append(len(full))
        untrusted = {(s0, s1) for s0, s1, i in spans if not texts[i][2]}
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if a == b:
                continue
            part = self.tokenizer(
                full[a:b],
                add_special_tokens=False,
                split_special_tokens=(a, b) in untrusted,
                return_offsets_mapping=True,
            )
            ids += part.input_ids
            offsets += [(a + x, a + y) for x, y in part.offset_mapping]
        return ids, offsets

    def _expand_media(
        self,
        ids: list[int],
        offsets: list[tuple[int, int]],
        spans: list[tuple[int, int, int]],
        texts: list[tuple[str, str, bool]],
        media: list[Media],
    ) -> Prompt:
        """Expand the template's placeholder tokens to their slots and mark the assistant's tokens."""
        by_id = {token_id: m for m, token_id in self.placeholder_ids.items()}
        rendered = [by_id[i] for i in ids if i in by_id]
        wanted = [seg.modality for seg in media]
        if rendered != wanted:
            raise PromptError(
                f"the chat template wrote placeholders for {rendered or 'no media'}; the conversation has "
                f"{wanted or 'none'}"
            )
        assistant_spans = [(s0, s1) for s0, s1, i in spans if texts[i][1] == "assistant"]
        specials = set(self.tokenizer.all_special_ids)
        out: list[int] = []
        mask: list[bool] = []
        queue = iter(media)
        closing = False  # inside the special tokens that directly follow an assistant text
        for token, (a, b) in zip(ids, offsets, strict=True):
            if token in by_id:
                slots = next(queue).slots
                out += [token] * slots
                mask += [False] * slots
                closing = False
                continue
            inside = any(s0 <= a < s1 or (a == b == s0) for s0, s1 in assistant_spans) and b > a
            if inside:
                closing = True
            elif closing and token not in specials:
                closing = False
            out.append(token)
            mask.append(inside or (closing and token in specials))
        return Prompt(out, mask)

    # -- embedding splice -----------------------------------------------------------------------------------------
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D) token embeddings, placeholders included as their own rows."""
        return cast(torch.Tensor, self.model.get_input_embeddings()(input_ids))

    def embed(self, input_ids: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings with projected features written into the placeholder slots.

        Args:
            input_ids: (B, L) ids with each placeholder expanded to its slot count.
            features: modality -> (N, D) projected features, N = number of that modality's slots in the batch,
                in order of appearance.
        Returns:
            (B, L, D) input embeddings.
        """
        embeds = self.embed_tokens(input_ids)  # (B, L, D)
        features = features or {}
        for modality, token_id in self.placeholder_ids.items():
            slots = input_ids == token_id  # (B, L)
            n_slots = int(slots.sum())
            feats = features.get(modality)
            n_feats = 0 if feats is None else feats.shape[0]
            if n_slots != n_feats:
                raise PromptError(
                    f"{modality} features and placeholder tokens do not match: tokens: {n_slots}, features: {n_feats}"
                )
            if n_slots and feats is not None:  # equal counts: features are there
                mask = slots.unsqueeze(-1).expand_as(embeds)  # (B, L, D)
                embeds = embeds.masked_scatter(mask, feats.to(embeds.device, embeds.dtype))
        unknown = set(features) - set(self.placeholder_ids)
        if unknown:
            raise PromptError(f"features given for modalities without a placeholder: {sorted(unknown)}")
        return embeds

    def forward(self, input_ids: torch.Tensor, features: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> Any:
        """Training/scoring forward: splice features and run the LM (kwargs go to the HF model)."""
        return self.model(inputs_embeds=self.embed(input_ids, features), **kwargs)

    # -- generation -----------------------------------------------------------------------------------------------
    def _static_steps_for(self, kind: str, length: int) -> decoding.StaticSteps:
        """The static runner (``kind`` ``static``, ``graph`` or ``compiled``) for a prompt plus reply of up to
        ``length`` positions; kept per length bucket and reused, its cache and CUDA graph with it."""
        size = decoding.bucket(length)
        key = (kind, size, str(self.device), str(self.dtype))
        if key not in self._static_steps:
            self._static_steps[key] = decoding.static_steps(kind, self.model, size)
        return self._static_steps[key]

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor,
        *,
        max_new_tokens: int = 128,
        min_new_tokens: int = 0,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        require: Sequence[str] = (),
        allow: Sequence[str] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        cache: CacheKind = "auto",
    ) -> GenerationResult:
        """Decode one reply for a single prompt (batch 1).

        Args:
            inputs_embeds: (1, L, D) prompt embeddings from :meth:`embed`.
            min_new_tokens: EOS is suppressed until this many tokens are out (as ``generate(min_new_tokens=)``).
            require: generators whose signal group the reply must contain (each once, in this order if the model
                does not produce them itself); EOS is suppressed until they are satisfied and they are forced when
                the token budget would otherwise run out.
            allow: generators that may be emitted at all (``None``: all). Required ones are always allowed.
            on_text: called with each new piece of decoded text.
            cancel: a flag checked before every step; when set, decoding stops with ``finish_reason="cancelled"``.
            cache: how the LLM steps (:mod:`orchestrator.decoding`): ``dynamic`` (a growing cache), ``static`` (a
                fixed one), ``graph`` (static, each step a replayed CUDA graph) or ``compiled`` (``graph`` with
                the step compiled by ``torch.compile`` first: fastest, after a one-off compilation); ``auto``:
                ``graph`` on CUDA, ``dynamic`` elsewhere. All give the same tokens.
        """

        def run(steps: decoding.DynamicSteps | decoding.StaticSteps) -> GenerationResult:
            return self._generate(
                inputs_embeds,
                steps,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                require=require,
                allow=allow,
                on_text=on_text,
                cancel=cancel,
            )

        kind = decoding.resolve(cache, self.device)
        if kind == "dynamic":
            return run(decoding.DynamicSteps(self.model))
        longest = max((len(ids) for ids in self.signal_ids.values()), default=0)
        with self._static_lock:  # a static runner's cache serves one request at a time
            return run(self._static_steps_for(kind, inputs_embeds.shape[1] + max_new_tokens + longest + 1))

    def _generate(
        self,
        inputs_embeds: torch.Tensor,
        steps: decoding.DynamicSteps | decoding.StaticSteps,
        **options: Any,
    ) -> GenerationResult:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1:
            raise ValueError(f"generate() takes one prompt of shape (1, L, D), got {tuple(inputs_embeds.shape)}")
        decoder = SequenceDecoder(self, **options)
        embed_tokens = self.model.get_input_embeddings()
        logits: torch.Tensor | None
        logits, _ = steps.prefill(inputs_embeds)
        while (token := decoder.propose(logits)) is not None:
            embed = embed_tokens(torch.tensor([[token]], device=self.device))  # (1, 1, D)
            hidden = None
            if decoder.wants_forward():
                logits, hidden = steps.step(embed)
            else:
                logits = None
            decoder.record(token, embed[0, 0], hidden)
        return decoder.result(inputs_embeds.shape[1])

    def banned_rows(self, allowed: set[str]) -> torch.Tensor:
        """(V,) the rows of the LM head that may never be sampled: placeholders, non-first signal tokens, generators
        not in ``allowed``, rows the head gained for tokens it never predicts. The LM head may have fewer rows than
        the embedding (Llama 3.2 Vision embeds its image token, it never predicts it)."""
        head = self.model.get_output_embeddings()
        vocab = _weight(head if head is not None else self.model.get_input_embeddings()).shape[0]
        banned = torch.zeros(vocab, dtype=torch.bool)
        never = set(self.placeholder_ids.values()) | self.unpredicted
        for g, ids in self.signal_ids.items():
            never.update(ids[1:])
            if g not in allowed:
                never.add(ids[0])
        banned[[i for i in never if i < vocab]] = True
        return banned

    def decode_text(self, ids: list[int]) -> str:
        """Ids -> text without the special tokens (``decode`` of a list of ids is one string)."""
        return cast(str, self.tokenizer.decode(ids, skip_special_tokens=True))

    def choose(
        self,
        logits: torch.Tensor,
        banned: torch.Tensor,
        pending: list[str],
        budget: int,
        eos: int | None,
        temperature: float,
        top_p: float,
        rng: torch.Generator | None,
        allow_eos: bool = True,
    ) -> int:
        logits = logits.cpu().masked_fill(banned, float("-inf"))
        if pending:
            need = sum(len(self.signal_ids[g]) for g in pending)
            if budget <= need:  # force the next required group now, or it will not fit
                return self.signal_ids[pending[0]][0]
        if eos is not None and (pending or not allow_eos):
            logits[eos] = float("-inf")
        if temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=rng))
