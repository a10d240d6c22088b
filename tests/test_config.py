"""SystemConfig and presets: every shipped preset validates (without loading weights), YAML round-trips."""

from __future__ import annotations

import pytest

from core.config import SystemConfig, list_presets, load_config
from core.errors import ConfigError
from core.registry import Registry, UnknownKindError
from generators import GENERATORS, OUTPUT_PROJECTORS
from modalities import ENCODERS, PROJECTORS
from orchestrator.fusion import BLOCKS, FUSIONS


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates_and_names_registered_kinds(name):
    config = load_config(name)
    assert config.name == name
    for m in config.modalities.values():
        assert m.encoder in ENCODERS and m.projector.kind in PROJECTORS
    for g in config.generators.values():
        assert g.kind in GENERATORS and g.projector.kind in OUTPUT_PROJECTORS
    assert config.fusion.kind in FUSIONS and config.fusion.block in BLOCKS
    assert SystemConfig.model_validate(config.model_dump()) == config


def test_yaml_round_trip(tmp_path):
    config = load_config("tiny-random")
    config.save(tmp_path / "system.yaml")
    assert load_config(tmp_path / "system.yaml") == config


def test_signal_tokens_and_placeholders_are_derived():
    config = load_config("nextgpt-style")
    assert config.signal_tokens("image") == ["[IMG0]", "[IMG1]", "[IMG2]", "[IMG3]"]
    assert len(config.signal_tokens("video")) == 24 and config.signal_tokens("audio")[0] == "[AUD0]"
    assert config.placeholder("audio") == "<audio>"


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm: {model: x}\nmodalities: {image: {encoder: clip_vision, model: m, colour: red}}\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config(bad)
    data = load_config("tiny-random").model_dump()
    data["modalities"]["audio"]["placeholder"] = "<image>"
    with pytest.raises(ValueError, match="placeholder '<image>' is used by both"):
        SystemConfig.model_validate(data)


def test_registry_lookup_and_plugins():
    reg: Registry = Registry("widget")
    reg.register("a", "json:dumps")
    import json

    assert reg.get("a") is json.dumps
    with pytest.raises(UnknownKindError, match="unknown widget kind 'b'; known kinds: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "json:loads")

    @reg.register("c")
    def c():
        return 1

    assert reg.get("c") is c and reg.kinds() == ["a", "c"]
