"""Choosing a backend: what a user sees when the ray backend cannot be used."""

from __future__ import annotations

import sys

import pytest

from agentrt import Supervisor


async def test_the_ray_backend_without_ray_installed_names_the_extra(monkeypatch, fixtures_dir):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    sup = Supervisor(base_dir=fixtures_dir, backend="ray")
    with pytest.raises(RuntimeError) as ei:
        await sup.open()
    assert "pip install 'agentrt[ray]'" in str(ei.value)
    assert 'backend = "ray"' in str(ei.value)
    await sup.close()
