"""JSON Schemas of tools and subagents, from their signatures, in each model API's shape.

A tool's parameters are its function's parameters (``ctx`` and ``*args``
left out), typed by their annotations: str, int, float, bool, lists, dicts,
tuples, ``X | None``, ``Literal[...]``, enums, msgspec Structs, dataclasses,
TypedDicts and ``Annotated[T, msgspec.Meta(...)]`` (constraints and
descriptions).  msgspec builds both the schema and the validator from the same
type, so what the model is told and what is checked cannot drift apart.  The
description is the docstring's text; a Google-style ``Args:`` section or
Sphinx ``:param x:`` lines describe the parameters.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = ["ArgumentsError", "ToolDef", "Toolbox", "describe", "tool_def"]

Kind = Literal["tool", "agent", "plan"]

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ARGS_HEADERS: Final = ("args:", "arguments:", "parameters:", "params:")
_SECTION_RE: Final = re.compile(r"^(returns?|raises?|yields?|examples?|notes?|see also):\s*$", re.I)
_SPHINX_RE: Final = re.compile(r"^:param\s+(?:\S+\s+)?(\w+):\s*(.*)$")
_ARG_LINE_RE: Final = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class ArgumentsError(ValueError):
    """A model's arguments for a tool are not valid JSON or do not fit its schema."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"arguments of {tool!r}: {message}")
        self.tool = tool


def describe(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The docstring's description and each parameter's, from ``Args:`` or ``:param:``."""
    doc = inspect.getdoc(fn) or ""
    text: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    section = "text"
    arg_indent: int | None = None
    for raw in doc.splitlines():
        line = raw.strip()
        m = _SPHINX_RE.match(line)
        if m:
            current, section = m.group(1), "params"
            params[current] = m.group(2).strip()
            continue
        if line.lower() in _ARGS_HEADERS:
            section, current, arg_indent = "args", None, None
            continue
        if _SECTION_RE.match(line) or line.startswith((":return", ":raise", ":rtype")):
            section, current = "other", None
            continue
        if section == "text":
            text.append(raw)
        elif section in ("args", "params") and line:
            indent = len(raw) - len(raw.lstrip())
            arg = _ARG_LINE_RE.match(line) if section == "args" else None
            if arg and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = arg.group(1).lstrip("*")
                params[current] = arg.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {line}".strip()
    return "\n".join(text).strip(), params


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"tool name {name!r}: a model API takes 1-64 letters, digits, '_' or '-'")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to what is there
        return {
            k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)
        }


class ToolDef:
    """One tool (or subagent) offered to a model: its name, description and parameter schema.

    ``kind`` is ``"tool"`` (run with ``ctx.tool``), ``"agent"`` (a subagent,
    run with ``ctx.spawn``; ``method`` for a class agent's method) or
    ``"plan"`` (:func:`agentrt.llm.plan_tool`: runs the plan it is given).
    :meth:`validate` checks a model's arguments against the same type the
    schema was made from.
    """

    __slots__ = ("_type", "description", "kind", "method", "name", "parameters", "runner")

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        args_type: type[msgspec.Struct],
        *,
        kind: Kind = "tool",
        method: str = "",
        runner: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        _check_name(name)
        self.name = name
        self.description = description
        self.parameters = parameters
        self.kind: Kind = kind
        self.method = method
        #: what runs a ``"plan"`` call, in the agent: ``await runner(ctx, args, toolbox)``
        self.runner = runner
        self._type = args_type

    def __repr__(self) -> str:
        return f"ToolDef({self.name!r}, kind={self.kind!r})"

    def openai(self) -> dict[str, Any]:
        """The OpenAI chat-completions ``tools`` entry."""
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}

    def responses(self) -> dict[str, Any]:
        """The OpenAI Responses API function tool."""
        out: dict[str, Any] = {"type": "function", "name": self.name, "parameters": self.parameters}
        if self.description:
            out["description"] = self.description
        return out

    def anthropic(self) -> dict[str, Any]:
        """The Anthropic Messages ``tools`` entry."""
        out: dict[str, Any] = {"name": self.name, "input_schema": self.parameters}
        if self.description:
            out["description"] = self.description
        return out

    def validate(self, arguments: str | bytes | Mapping[str, Any] | None) -> dict[str, Any]:
        """The call's arguments checked and converted (defaults filled in), as keyword arguments.

        ``arguments`` is the model's JSON text (OpenAI) or an object
        (Anthropic).  Raises :class:`ArgumentsError` naming what is wrong and
        where (``$.field``).
        """
        try:
            if arguments is None or arguments == "" or arguments == b"":
                value = msgspec.convert({}, self._type)
            elif isinstance(arguments, str | bytes):
                value = msgspec.json.decode(arguments, type=self._type)
            elif isinstance(arguments, Mapping):
                value = msgspec.convert(dict(arguments), self._type)
            else:
                raise ArgumentsError(
                    self.name, f"expected a JSON object, got {type(arguments).__name__}"
                )
        except msgspec.ValidationError as exc:
            raise ArgumentsError(self.name, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise ArgumentsError(self.name, f"not valid JSON ({exc})") from None
        return {f: getattr(value, f) for f in value.__struct_fields__}


def tool_def(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    kind: Kind = "tool",
    method: str = "",
) -> ToolDef:
    """The :class:`ToolDef` of ``fn``: a tool function, or an agent function or method.

    For an agent, ``ctx`` (the first parameter) and ``self`` are left out;
    ``*args`` are never offered; ``**kwargs`` lets the model pass other
    fields too.
    """
    target = getattr(fn, method) if method else fn
    tool_name: str = name or (method if method else str(getattr(fn, "__name__", "")))
    _check_name(tool_name)
    sig = inspect.signature(target)
    hints = _hints(target)
    text, docs = describe(target)
    fields: list[Any] = []
    open_ended = False
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 and p.name in ("ctx", "self", "cls"):
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            open_ended = True
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise ValueError(
                f"tool {tool_name!r}: parameter {p.name!r} is positional-only; "
                "a model passes arguments by name"
            )
        tp: Any = hints.get(p.name, Any)
        if docs.get(p.name):
            tp = Annotated[tp, msgspec.Meta(description=docs[p.name])]
        if p.default is p.empty:
            fields.append((p.name, tp))
        else:
            fields.append((p.name, tp, p.default))
    args_type = msgspec.defstruct(
        f"{tool_name}_args", fields, kw_only=True, forbid_unknown_fields=not open_ended
    )
    try:
        (_, components) = msgspec.json.schema_components([args_type], ref_template="#/$defs/{name}")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tool {tool_name!r}: no JSON Schema for its parameters: {exc}") from None
    params = dict(components.pop(f"{tool_name}_args"))
    params.pop("title", None)
    params.setdefault("properties", {})
    params.setdefault("required", [])
    if components:
        params["$defs"] = components
    return ToolDef(
        tool_name,
        text if description is None else description,
        params,
        args_type,
        kind=kind,
        method=method,
    )


class Toolbox(Mapping[str, ToolDef]):
    """The tools (and subagents) offered to a model, by name.

    Build one from functions (``Toolbox([search, fetch], agents={"researcher":
    research})``) or from what an agent may call (:meth:`Context.toolbox`);
    export it with :meth:`openai`, :meth:`responses` or :meth:`anthropic`.
    """

    def __init__(
        self,
        tools: Iterable[Callable[..., Any] | ToolDef] = (),
        *,
        agents: Mapping[str, Callable[..., Any] | ToolDef] | None = None,
    ) -> None:
        self._defs: dict[str, ToolDef] = {}
        for t in tools:
            self.add(t if isinstance(t, ToolDef) else tool_def(t))
        for name, a in (agents or {}).items():
            self.add(a if isinstance(a, ToolDef) else tool_def(a, name=name, kind="agent"))

    def add(self, d: ToolDef) -> ToolDef:
        """Offer ``d`` too (replacing one of the same name)."""
        self._defs[d.name] = d
        return d

    def __getitem__(self, name: str) -> ToolDef:
        return self._defs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._defs)

    def __len__(self) -> int:
        return len(self._defs)

    def __repr__(self) -> str:
        return f"Toolbox({list(self._defs)})"

    def only(self, names: Iterable[str]) -> Toolbox:
        """A toolbox of these names only (an unknown name is a KeyError naming it)."""
        box = Toolbox()
        for n in names:
            if n not in self._defs:
                raise KeyError(f"no tool {n!r} (known: {sorted(self._defs)})")
            box.add(self._defs[n])
        return box

    def openai(self) -> list[dict[str, Any]]:
        """The chat-completions ``tools`` list."""
        return [d.openai() for d in self._defs.values()]

    def responses(self) -> list[dict[str, Any]]:
        """The Responses API ``tools`` list."""
        return [d.responses() for d in self._defs.values()]

    def anthropic(self) -> list[dict[str, Any]]:
        """The Anthropic Messages ``tools`` list."""
        return [d.anthropic() for d in self._defs.values()]

    def for_shape(self, shape: str) -> list[dict[str, Any]]:
        """The tools list for ``shape``: ``"openai"``, ``"responses"`` or ``"anthropic"``."""
        if shape == "openai":
            return self.openai()
        if shape == "responses":
            return self.responses()
        if shape == "anthropic":
            return self.anthropic()
        raise ValueError(f"unknown shape {shape!r}: expected openai, responses or anthropic")
