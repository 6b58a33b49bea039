"""Sandbox profiles by name: shipped (package data), next to a config, or inline."""

from __future__ import annotations

import copy
import importlib.resources
import os
import pickle
import stat
import time
import tomllib
from collections.abc import Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import msgspec

from agentrt.config.decode import _convert
from agentrt.config.specs import SandboxProfile
from agentrt.config.units import NAME_RE
from agentrt.errors import ConfigError

__all__ = ["SHIPPED_SANDBOXES", "load_sandbox", "sandbox_names"]


#: the profiles shipped with agentrt (``default``, ``strict``, ``untrusted``): package
#: data in ``agentrt/sandbox/profiles/`` (the checkout's ``sandboxes/`` links to it),
#: found through :mod:`importlib.resources` so that an installed wheel has them too
SHIPPED_SANDBOXES: Final[Traversable] = importlib.resources.files("agentrt").joinpath(
    "sandbox", "profiles"
)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _sandbox_sources(inline: dict[str, Any] | None, dirs: list[Path]) -> list[tuple[str, Any]]:
    """Where profiles are looked up, first match wins: inline tables, files, shipped.

    Each source is a table of profiles (a ``dict``) or a directory of
    ``<name>.toml`` files (a :class:`Traversable`: a ``Path``, or the shipped
    package data).
    """
    sources: list[tuple[str, Any]] = []
    if inline:
        sources.append(("", inline))
    for d in dirs:
        sources.append((str(d), Path(d)))
    sources.append((str(SHIPPED_SANDBOXES), SHIPPED_SANDBOXES))
    return sources


#: profile files parsed, by path: the file's (device, inode, size, mtime,
#: ctime) when read, its table
_parsed: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {}
_PARSED_MAX = 256
#: a file is cached once it was last changed this long ago (ns)
_SETTLED_NS = 2_000_000_000


def _read_toml(path: Traversable | str) -> dict[str, Any] | None:
    """The table in profile file ``path``; None when there is no such file.

    Every agent's start resolves its profile: a file read before and not
    changed since (same device, inode, size, modification and change times)
    is not read and parsed again.  The table returned is shared: read it,
    never change it.
    """
    if not isinstance(path, str | Path):  # (package data not on a file system)
        return tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    key = str(path)
    hit = _parsed.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    with open(path, encoding="utf-8") as f:
        raw = tomllib.loads(f.read())
    # (a file changed in the last seconds could change again within the
    # clock's tick, its signature the same: kept only once it has settled)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[key] = (sig, raw)
    return raw


def _find_raw(
    name: str, sources: list[tuple[str, Any]], start: int, where: str
) -> tuple[dict[str, Any], int, str]:
    for i in range(start, len(sources)):
        _label, src = sources[i]
        if isinstance(src, dict):
            if name in src:
                raw = src[name]
                if not isinstance(raw, dict):
                    raise ConfigError(f"sandboxes.{name}", "expected a table")
                return raw, i, ""
            continue
        # (a directory's path as a string: pathlib's parsing was most of the time here)
        path = (
            os.path.join(_label, f"{name}.toml")
            if isinstance(src, Path)
            else src.joinpath(f"{name}.toml")
        )
        try:
            found = _read_toml(path)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"sandboxes.{name}", f"cannot load {path}: {exc}") from None
        if found is not None:
            return found, i, str(path)
    known = sorted(sandbox_names([s for _, s in sources if isinstance(s, dict)][:1], []))
    raise ConfigError(
        where, f"no sandbox profile named {name!r} (known: {', '.join(known) or 'none'})"
    )


def sandbox_names(inline: list[dict[str, Any]], dirs: list[Path]) -> set[str]:
    """Names of the profiles found in ``inline`` tables, ``dirs`` and the shipped set."""
    names: set[str] = set()
    for t in inline:
        names |= set(t)
    found: list[Traversable] = [Path(d) for d in dirs]
    for d in [*found, SHIPPED_SANDBOXES]:
        if d.is_dir():
            names |= {
                f.name.removesuffix(".toml")
                for f in d.iterdir()
                if f.name.endswith(".toml") and f.is_file()
            }
    return names


def load_sandbox(
    name: str,
    *,
    inline: dict[str, Any] | None = None,
    dirs: Sequence[str | Path] = (),
    where: str = "sandbox",
) -> tuple[SandboxProfile, bool]:
    """Resolve profile ``name`` (following ``extends``); ``(profile, shipped)``.

    Looked up in ``inline`` (a config's ``[sandboxes]`` table), then
    ``<dir>/<name>.toml`` for each of ``dirs``, then the shipped profiles.
    A profile that extends its own name continues the search below itself
    (a config's ``strict.toml`` may extend the shipped ``strict``).
    ``shipped`` is true when the profile itself came from the shipped set.
    Errors are :class:`ConfigError` with the key path (``sandboxes.mine.network``).
    """
    if not NAME_RE.match(name):
        raise ConfigError(where, f"{name!r} is not a valid sandbox profile name")
    sources = _sandbox_sources(inline, [Path(d) for d in dirs])
    chain: list[tuple[dict[str, Any], str, str]] = []
    seen: set[tuple[str, int]] = set()
    cur, start, first_index = name, 0, -1
    while True:
        raw, index, path = _find_raw(
            cur, sources, start, where if not chain else f"sandboxes.{chain[-1][1]}.extends"
        )
        if first_index < 0:
            first_index = index
        if (cur, index) in seen:
            raise ConfigError(f"sandboxes.{cur}.extends", f"extends cycle through {cur!r}")
        seen.add((cur, index))
        if "name" in raw:
            raise ConfigError(
                f"sandboxes.{cur}.name", "unknown key (the profile's name is its table's or file's)"
            )
        chain.append((raw, cur, path))
        parent = raw.get("extends")
        if parent is None:
            break
        if not isinstance(parent, str) or not NAME_RE.match(parent):
            raise ConfigError(f"sandboxes.{cur}.extends", "expected a profile name")
        start = index + 1 if parent == cur else 0
        cur = parent
    shipped = sources[first_index][1] == SHIPPED_SANDBOXES
    key = _key((name, shipped, [raw for raw, _pname, _path in chain]))
    hit = _resolved.get(key) if key else None
    if hit is not None:
        return _own(hit[0]), hit[1]
    merged: dict[str, Any] = {}
    for raw, pname, path in reversed(chain):
        try:
            # each link is validated on its own, so an error names its profile
            _profile(raw, f"sandboxes.{pname}")
        except ConfigError as exc:
            if path:
                raise ConfigError(exc.path, f"{exc.message} (in {path})") from None
            raise
        merged = _merge(merged, raw)
    merged["name"] = name
    merged["extends"] = chain[0][0].get("extends")
    profile = _profile(merged, f"sandboxes.{name}")
    if key:
        if len(_resolved) >= _PARSED_MAX:
            _resolved.clear()
        _resolved[key] = (profile, shipped)
    return _own(profile), shipped


#: profiles made from tables before, by the table (and where it was found);
#: shared, never handed out as they are (see :func:`_own`)
_profiles: dict[bytes, SandboxProfile] = {}
#: profiles resolved before, by name and their chain's tables: (profile, shipped)
_resolved: dict[bytes, tuple[SandboxProfile, bool]] = {}


def _key(value: Any) -> bytes:
    """A cache key for config values (b"": none, not to be cached).  Pickled:
    it keeps the values' types apart (a TOML date is not its string)."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # (not a config's plain values)
        return b""


def _profile(table: dict[str, Any], where: str) -> SandboxProfile:
    """The profile ``table`` describes (a ConfigError at ``where`` if none),
    shared with later callers: not to be changed.  A table decoded before is
    not validated again."""
    key = _key((where, table))
    hit = _profiles.get(key) if key else None
    if hit is not None:
        return hit
    profile: SandboxProfile = _convert(dict(table), SandboxProfile, where)
    if key:
        if len(_profiles) >= _PARSED_MAX:
            _profiles.clear()
        _profiles[key] = profile
    return profile


_Copied = msgspec.Struct | list[Any] | dict[Any, Any]


def _own(value: _Copied) -> Any:
    """A copy of a profile that its caller may change: its structs, lists and
    dicts copied, all the way down (its scalars are immutable).  A third of
    ``copy.deepcopy``'s time (21 against 62 us for the shipped untrusted)."""
    if isinstance(value, msgspec.Struct):
        new = copy.copy(value)
        for f in value.__struct_fields__:
            v = getattr(value, f)
            if isinstance(v, msgspec.Struct | list | dict):
                setattr(new, f, _own(v))
        return new
    if isinstance(value, list):
        return [_own(v) if isinstance(v, msgspec.Struct | list | dict) else v for v in value]
    return {
        k: _own(v) if isinstance(v, msgspec.Struct | list | dict) else v for k, v in value.items()
    }
