"""``[models.X]``: a declared model reaches the agents, key from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrt import ConfigError, RemoteError, parse_config
from agentrt.llm import ScriptedModel


async def test_agents_get_the_declared_models_clients(make_supervisor, agent_spec, monkeypatch):
    monkeypatch.setenv("TEST_MODEL_KEY", "sk-test")
    with ScriptedModel(["from openai", "from anthropic", "only one"]) as server:
        models = {
            "fast": {
                "base_url": server.openai_base_url,
                "model": "small",
                "api_key_env": "TEST_MODEL_KEY",
                "max_retries": 0,
            },
            "careful": {
                "kind": "anthropic",
                "base_url": server.anthropic_base_url,
                "model": "big",
                "api_key_env": "TEST_MODEL_KEY",
            },
        }
        async with make_supervisor(models=models) as sup:
            await sup.start(agent_spec("declared", "llm_agents:declared"))
            one = await sup.call("declared", {"prompt": "a", "name": "fast"})
            two = await sup.call("declared", {"prompt": "b", "name": "careful"})
            with pytest.raises(RemoteError, match=r"no model named 'nope'.*careful, fast"):
                await sup.call("declared", {"prompt": "c", "name": "nope"})
            with pytest.raises(RemoteError, match="several models are declared"):
                await sup.call("declared", {"prompt": "c"})
        requests = list(server.requests)
    assert one == {"text": "from openai", "shape": "openai", "model": "small"}
    assert two == {"text": "from anthropic", "shape": "anthropic", "model": "big"}
    assert requests[0].headers["authorization"] == "Bearer sk-test"
    assert requests[1].headers["x-api-key"] == "sk-test"
    assert [r.model for r in requests] == ["small", "big"]


def test_a_models_table_is_checked_key_by_key(tmp_path: Path) -> None:
    doc = {
        "models": {
            "m": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:1/v1",
                "timeout": "30s",
                "api_key_env": "K",
            }
        }
    }
    cfg = parse_config(doc, tmp_path)
    assert cfg.models["m"].client_config() == {
        "kind": "openai",
        "timeout": 30.0,
        "max_retries": 3,
        "base_url": "http://127.0.0.1:1/v1",
        "api_key_env": "K",
    }
    bad = {
        "kind": ("openia", "models.m.kind"),
        "base_url": ("file:///etc/passwd", "models.m.base_url"),
        "api_key_env": ("$(rm)", "models.m.api_key_env"),
        "timeout": (0, "models.m.timeout"),
        "max_retries": (1000, "models.m.max_retries"),
        "api_key": ("sk-inline", "models.m.api_key"),
    }
    for key, (value, path) in bad.items():
        with pytest.raises(ConfigError) as info:
            parse_config({"models": {"m": {key: value}}}, tmp_path)
        assert info.value.path == path, key
    with pytest.raises(ConfigError, match="the table's name is the model's"):
        parse_config({"models": {"m": {"name": "x"}}}, tmp_path)
