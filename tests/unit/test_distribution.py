"""What the distribution declares and what its optional parts say when absent (no processes).

The wheel itself is built, installed and run in ``tests/integration/test_packaging.py``.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from agentrt import cli
from agentrt.config import SHIPPED_SANDBOXES

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_checkout_sandboxes_is_a_link_to_the_shipped_package_data() -> None:
    link = ROOT / "sandboxes"
    assert link.is_symlink()  # one source of truth: agentrt/sandbox/profiles
    assert link.resolve() == Path(str(SHIPPED_SANDBOXES)).resolve()
    assert {"default.toml", "strict.toml", "untrusted.toml"} <= {
        p.name for p in SHIPPED_SANDBOXES.iterdir()
    }


def test_matplotlib_is_the_png_extra_and_not_a_dependency() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert not any(d.startswith("matplotlib") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["png"])
    assert "agentrt[png]" in extras["dev"] and "agentrt[png]" in extras["bench"]
    # the model clients' httpx: the llm extra, which the tests install
    assert extras["llm"] == ["httpx>=0.27"] and "agentrt[llm]" in extras["dev"]
    assert not any(d.startswith("httpx") for d in project["dependencies"])


def test_license_is_an_spdx_expression_and_linux_is_the_only_platform() -> None:
    doc = _pyproject()
    project = doc["project"]
    assert isinstance(project, dict)
    assert project["license"] == "Apache-2.0"
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])
    assert "setuptools>=77" in doc["build-system"]["requires"]


def test_trace_png_without_matplotlib_names_the_extra_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails, find_spec is None
    trace = tmp_path / "trace.json"
    trace.write_text('{"traceEvents": []}')
    png = tmp_path / "trace.png"
    assert cli.main(["trace", str(trace), "--png", str(png)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "pip install 'agentrt[png]'" in err
    assert not png.exists()


def test_bench_json_naming_a_file_is_an_error_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "results.json"
    target.write_text("{}")
    assert cli.main(["bench", "--json", str(target)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"--json: {target} is a file: give a directory" in err
    assert target.read_text() == "{}"


def test_bench_json_below_a_file_is_an_error_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["bench", "--json", str(blocker / "out")]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"--json: cannot create the directory {blocker / 'out'}" in err
