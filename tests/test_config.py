from pathlib import Path

import pytest

from assistant.config import PIPELINES_DIR, Config, config_from_dict, load_config
from assistant.errors import ConfigError


def test_every_shipped_pipeline_loads() -> None:
    names = sorted(p.stem for p in PIPELINES_DIR.glob("*.toml"))
    assert "default" in names
    for name in names:
        assert isinstance(load_config(name), Config)


def test_defaults_match_default_pipeline() -> None:
    assert load_config("default").vad == Config().vad


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"vad": {"aggressiveness": 5}}, "vad.aggressiveness = 5 is not allowed: choose one of [0, 1, 2, 3]"),
        ({"vad": {"frame_ms": 25}}, "vad.frame_ms = 25 is not allowed: choose one of [10, 20, 30]"),
        ({"vad": {"end_silence_ms": 50}}, "vad.end_silence_ms = 50 is out of range: allowed 100 to 5000"),
        ({"vad": {"loudness": 1}}, "unknown key vad.loudness: allowed keys in [vad] are"),
        ({"speed": 1}, "unknown key speed: allowed keys at top level are"),
        ({"llm": {"temperature": "hot"}}, "llm.temperature = 'hot' has the wrong type: expected float"),
        ({"llm": {"max_tokens": True}}, "llm.max_tokens = True has the wrong type: expected int"),
        ({"asr": {"compute_type": "fp4"}}, "asr.compute_type = 'fp4' is not allowed"),
        ({"llm": {"kv_cache": "q5_1"}}, "llm.kv_cache = 'q5_1' is not allowed: choose one of ['q8_0'"),
        ({"llm": {"system_prompt": "  "}}, "llm.system_prompt is empty"),
        ({"vad": 3}, "[vad] must be a table"),
    ],
)
def test_validation_names_key_and_allowed_values(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        config_from_dict(data)
    assert needle in info.value.message
    assert info.value.code == "config_invalid"


def test_int_accepted_for_float_and_optional() -> None:
    config = config_from_dict({"llm": {"temperature": 1}, "tts": {"speaker_id": 3}})
    assert config.llm.temperature == 1.0
    assert config.tts.speaker_id == 3


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vad]\naggressiveness = 9\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    assert str(bad) in info.value.message and "vad.aggressiveness" in info.value.message
    broken = tmp_path / "broken.toml"
    broken.write_text("[vad\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(broken))
    with pytest.raises(ConfigError, match="unknown pipeline; choose one of"):
        load_config("no-such-pipeline")
