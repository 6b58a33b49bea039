"""Task graphs: ``${...}`` references, validation, the ready set, fan-out and the critical path.

Pure data structures, no I/O, no asyncio, no processes: a scheduler elsewhere
drives them.

**References.**  A string argument may name another task's result:
``${search}``, ``${search.hits[0].title}``; inside a ``for_each`` task,
``${item}`` and ``${item.x}`` name the current element.  The grammar is strict:
``id = [A-Za-z_][A-Za-z0-9_-]*`` followed by ``.name`` or ``[int]`` segments.
A string that is exactly one reference resolves to the value itself, keeping
its type; a reference embedded in a longer string is interpolated with
``str()`` (a dict or list as JSON).  ``$${`` is a literal ``${``.  Only string
values inside dicts, lists and tuples are scanned, never dict keys.

**Graph.**  :class:`Graph` collects :class:`Node` objects; ``validate()``
rejects dangling dependencies (with a did-you-mean), ``${item}`` outside a
``for_each`` task and cycles (naming the cycle), and returns a topological
order.  Nodes added after validation are checked at once, alone.

**State.**  :class:`GraphState` tracks which nodes are ready (all
dependencies succeeded, no barrier between "levels"), skips the dependents of
a failure (``on_error="continue"``) or everything not yet started
(``"fail_fast"``), and expands ``for_each`` nodes into children
``"<id>[<i>]"`` that complete their parent, with an optional quorum
(``min_success``).

Errors are :class:`GraphError`, a :class:`~agentrt.errors.ConfigError` whose
``path`` is ``tasks.<id>.<field>``; failed lookups at resolution time are
:class:`GraphRefError`.  Misuse of :class:`GraphState` (finishing a task that
was never started...) raises :class:`ValueError`; an unknown id, :class:`KeyError`.
"""

from __future__ import annotations

import copy
import difflib
import heapq
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from agentrt.errors import ConfigError

__all__ = [
    "ITEM",
    "FanoutProgress",
    "Graph",
    "GraphError",
    "GraphRefError",
    "GraphState",
    "Node",
    "OnError",
    "Status",
    "child_id",
    "critical_path",
    "find_refs",
    "resolve",
]

OnError = Literal["fail_fast", "continue"]
Missing = Literal["drop", "null"]
Status = Literal["pending", "running", "ok", "failed", "skipped"]

#: the reference root naming the current element of a fan-out
ITEM: Final = "item"

_ON_ERROR: Final = ("fail_fast", "continue")
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_ID_RE: Final = re.compile(_NAME)
_BODY_RE: Final = re.compile(rf"({_NAME})((?:\.{_NAME}|\[[0-9]+\])*)")
_SEG_RE: Final = re.compile(rf"\.({_NAME})|\[([0-9]+)\]")
_FORMS: Final = "expected ${id}, ${id.field} or ${id[0]}"


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no item>"


_MISSING: Final = _Missing()


# --- errors ----------------------------------------------------------------


class GraphError(ConfigError):
    """The task graph is invalid; ``path`` is ``tasks.<id>.<field>``."""


class GraphRefError(GraphError):
    """A reference could not be resolved; ``ref`` is its text, the message says what was missing."""

    def __init__(self, path: str, message: str, *, ref: str = "") -> None:
        super().__init__(path, message)
        self.ref = ref


# --- references ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    text: str  # "${a.b[0]}", as written
    root: str  # "a"
    path: tuple[str | int, ...]  # ("b", 0)


class _Malformed(Exception):
    def __init__(self, text: str, why: str) -> None:
        super().__init__(text, why)
        self.text = text
        self.why = why


def _parse(s: str) -> tuple[str | _Ref, ...]:
    """Split ``s`` into literal text and references; raise :class:`_Malformed`."""
    if "${" not in s:
        return (s,)
    parts: list[str | _Ref] = []
    buf: list[str] = []
    i, n = 0, len(s)
    while i < n:
        j = s.find("$", i)
        if j < 0:
            buf.append(s[i:])
            break
        buf.append(s[i:j])
        i = j
        if s.startswith("$${", i):
            buf.append("${")
            i += 3
        elif s.startswith("${", i):
            end = s.find("}", i + 2)
            if end < 0:
                raise _Malformed(s[i:], "no closing '}'")
            text = s[i : end + 1]
            m = _BODY_RE.fullmatch(s, i + 2, end)
            if m is None:
                raise _Malformed(text, _FORMS)
            path = tuple(
                name if name else int(index) for name, index in _SEG_RE.findall(m.group(2))
            )
            literal = "".join(buf)
            if literal:
                parts.append(literal)
            buf = []
            parts.append(_Ref(text, m.group(1), path))
            i = end + 1
        else:
            buf.append("$")
            i += 1
    literal = "".join(buf)
    if literal:
        parts.append(literal)
    return tuple(parts)


def _malformed(where: str, exc: _Malformed) -> GraphError:
    return GraphError(where, f"malformed reference {exc.text!r}: {exc.why}")


def _iter_refs(obj: Any) -> Iterator[_Ref]:
    if isinstance(obj, str):
        for part in _parse(obj):
            if isinstance(part, _Ref):
                yield part
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _iter_refs(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _iter_refs(value)


def _refs(obj: Any, where: str) -> list[_Ref]:
    try:
        return list(_iter_refs(obj))
    except _Malformed as exc:
        raise _malformed(where, exc) from None


def find_refs(obj: Any, *, where: str = "") -> set[str]:
    """The task ids referenced anywhere in ``obj`` (nested dicts, lists, strings), not ``item``.

    A malformed ``${...}`` raises :class:`GraphError` with ``path=where``.
    """
    return {r.root for r in _refs(obj, where) if r.root != ITEM}


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _lookup(ref: _Ref, results: Mapping[str, Any], item: Any, where: str) -> Any:
    def fail(what: str) -> GraphRefError:
        return GraphRefError(where, f"{ref.text}: {what}", ref=ref.text)

    if ref.root == ITEM:
        if item is _MISSING:
            raise fail("no current item (only the children of a for_each task have one)")
        cur = item
    elif ref.root in results:
        cur = results[ref.root]
    else:
        raise fail(f"no result for task {ref.root!r}")
    for seg in ref.path:
        if isinstance(seg, int):
            if not isinstance(cur, list | tuple):
                raise fail(f"cannot index {_kind(cur)} with [{seg}]")
            if seg >= len(cur):
                raise fail(f"index {seg} out of range ({_kind(cur)} of {len(cur)})")
            cur = cur[seg]
        else:
            if not isinstance(cur, Mapping):
                raise fail(f"cannot take field {seg!r} of {_kind(cur)}")
            if seg not in cur:
                keys = [k for k in cur if isinstance(k, str)]
                shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
                have = f"dict with keys {shown}" if cur else "empty dict"
                close = difflib.get_close_matches(seg, keys, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise fail(f"key {seg!r} missing ({have}){hint}")
            cur = cur[seg]
    return cur


def _embed(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _resolve(obj: Any, results: Mapping[str, Any], item: Any, where: str) -> Any:
    if isinstance(obj, str):
        parts = _parse(obj)
        if len(parts) == 1 and isinstance(parts[0], _Ref):
            return copy.deepcopy(_lookup(parts[0], results, item, where))
        return "".join(
            _embed(_lookup(p, results, item, where)) if isinstance(p, _Ref) else p for p in parts
        )
    if isinstance(obj, Mapping):
        return {k: _resolve(v, results, item, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, results, item, where) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, results, item, where) for v in obj)
    return copy.deepcopy(obj)


def resolve(obj: Any, results: Mapping[str, Any], item: Any = _MISSING, *, where: str = "") -> Any:
    """A deep copy of ``obj`` with every reference replaced by its value.

    ``results`` maps task ids to their results; ``item`` is the current
    element of a fan-out (``${item}``).  A whole-string reference keeps the
    value's type; an embedded one is interpolated (dicts and lists as JSON).
    Anything missing raises :class:`GraphRefError` naming the reference and
    what was missing; a malformed reference, :class:`GraphError`; both with
    ``path=where``.
    """
    try:
        return _resolve(obj, results, item, where)
    except _Malformed as exc:
        raise _malformed(where, exc) from None


def child_id(parent: str, index: int) -> str:
    """The id of a fan-out child: ``child_id("fetch", 2) == "fetch[2]"``."""
    return f"{parent}[{index}]"


# --- nodes and the graph ---------------------------------------------------


class Node(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One task of a graph: call ``agent`` (``method``) with ``args`` once its deps succeeded.

    ``retries`` and ``timeout`` of ``None`` inherit the agent's; ``on_error``
    of ``None`` inherits the graph's.  ``for_each`` (a whole-string reference
    such as ``"${plan.topics}"``) runs one child per element, and
    ``min_success`` makes that a quorum.
    """

    id: str
    agent: str
    args: dict[str, Any] = {}
    after: list[str] = []
    method: str = ""
    retries: int | None = None
    timeout: float | None = None
    for_each: str | None = None
    min_success: int | None = None
    #: what ``${id}`` of a fan-out holds for items that did not succeed: ``"drop"``
    #: (the list of the results that did) or ``"null"`` (``None`` in their place)
    missing: Missing = "drop"
    on_error: OnError | None = None
    #: ``"required"``: the task's call waits for a person's approval
    approval: Literal["none", "required"] = "none"

    @property
    def deps(self) -> set[str]:
        """``set(after) | find_refs(args) | refs of for_each``."""
        return set(_dep_sources(self))


_NODE_FIELDS: Final = tuple(f.name for f in msgspec.structs.fields(Node))


def _dep_sources(node: Node) -> dict[str, str]:
    """Each dependency of ``node``, in order of appearance, with the field naming it."""
    out: dict[str, str] = {}
    for dep in node.after:
        out.setdefault(dep, "after")
    for ref in _refs(node.args, f"tasks.{node.id}.args"):
        if ref.root != ITEM:
            out.setdefault(ref.root, "args")
    if node.for_each is not None:
        for ref in _refs(node.for_each, f"tasks.{node.id}.for_each"):
            if ref.root != ITEM:
                out.setdefault(ref.root, "for_each")
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_node(node: Node) -> dict[str, str]:
    """Checks that need no other node; returns the dependency sources."""
    nid = node.id
    if not isinstance(nid, str) or not _ID_RE.fullmatch(nid):
        raise GraphError(
            f"tasks.{nid}.id",
            f"invalid task id {nid!r}: use letters, digits, '_' and '-', "
            "starting with a letter or '_'",
        )
    p = f"tasks.{nid}"
    if nid == ITEM:
        raise GraphError(f"{p}.id", f"{ITEM!r} is reserved (${{{ITEM}}} is a fan-out's element)")
    if not isinstance(node.agent, str) or not node.agent:
        raise GraphError(f"{p}.agent", "expected an agent name")
    if not isinstance(node.method, str):
        raise GraphError(f"{p}.method", "expected a string")
    if not isinstance(node.args, dict):
        raise GraphError(f"{p}.args", f"expected a table, got {_kind(node.args)}")
    if not isinstance(node.after, list | tuple) or not all(isinstance(a, str) for a in node.after):
        raise GraphError(f"{p}.after", "expected a list of task ids")
    if node.retries is not None and (not _is_int(node.retries) or node.retries < 0):
        raise GraphError(f"{p}.retries", f"must be an integer >= 0, got {node.retries!r}")
    t = node.timeout
    if t is not None and (not isinstance(t, int | float) or isinstance(t, bool) or not t >= 0):
        raise GraphError(f"{p}.timeout", f"must be a number of seconds >= 0, got {t!r}")
    if node.on_error is not None and node.on_error not in _ON_ERROR:
        raise GraphError(
            f"{p}.on_error", f"expected 'fail_fast' or 'continue', got {node.on_error!r}"
        )
    if node.for_each is not None:
        fe = node.for_each
        where = f"{p}.for_each"
        if not isinstance(fe, str):
            raise GraphError(where, f"expected a reference like '${{plan.items}}', got {fe!r}")
        try:
            parts = _parse(fe)
        except _Malformed as exc:
            raise _malformed(where, exc) from None
        if len(parts) != 1 or not isinstance(parts[0], _Ref):
            raise GraphError(
                where, f"expected a single reference like '${{plan.items}}', got {fe!r}"
            )
        if parts[0].root == ITEM:
            raise GraphError(where, f"{fe!r}: for_each cannot iterate over ${{{ITEM}}}")
    if node.min_success is not None:
        if node.for_each is None:
            raise GraphError(f"{p}.min_success", "only a for_each task has a quorum")
        if not _is_int(node.min_success) or node.min_success < 1:
            raise GraphError(
                f"{p}.min_success", f"must be an integer >= 1, got {node.min_success!r}"
            )
    if node.approval not in ("none", "required"):
        raise GraphError(f"{p}.approval", f"expected 'none' or 'required', got {node.approval!r}")
    if node.missing not in ("drop", "null"):
        raise GraphError(f"{p}.missing", f"expected 'drop' or 'null', got {node.missing!r}")
    if node.missing != "drop" and node.for_each is None:
        raise GraphError(f"{p}.missing", "only a for_each task has items that can be missing")
    if node.for_each is None:
        for ref in _refs(node.args, f"{p}.args"):
            if ref.root == ITEM:
                raise GraphError(
                    f"{p}.args", f"{ref.text} used outside a for_each task (there is no item)"
                )
    return _dep_sources(node)


def _spec_error(exc: msgspec.ValidationError, prefix: str) -> GraphError:
    text = str(exc)
    path = ""
    m = re.search(r" - at `\$(.*)`$", text)
    if m:
        text = text[: m.start()]
        path = re.sub(r"\[(\d+)\]", r".\1", m.group(1)).lstrip(".")
    if m2 := re.match(r"^Object contains unknown field `(.*)`$", text):
        key = m2.group(1)
        close = difflib.get_close_matches(key, _NODE_FIELDS, n=1)
        path, text = key, "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
    elif m3 := re.match(r"^Object missing required field `(.*)`$", text):
        path, text = m3.group(1), "required key is missing"
    full = ".".join(x for x in (prefix, path) if x)
    return GraphError(full, text[:1].lower() + text[1:])


def _to_node(spec: Any, index: int) -> Node:
    if isinstance(spec, Node):
        return spec
    raw_id = spec.get("id") if isinstance(spec, Mapping) else getattr(spec, "id", None)
    prefix = f"tasks.{raw_id if isinstance(raw_id, str) else index}"
    try:
        if isinstance(spec, Mapping):
            return msgspec.convert(dict(spec), Node)
        return msgspec.convert(spec, Node, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise _spec_error(exc, prefix) from None


class Graph:
    """A set of :class:`Node` objects and their dependencies.

    Build it with :meth:`add` / :meth:`add_node` / :meth:`from_specs`, then
    :meth:`validate`.  Node-local mistakes (bad id, duplicate id, malformed
    reference, ``${item}`` outside ``for_each``...) raise at once; dangling
    dependencies and cycles are found by :meth:`validate`, since a node may
    name one added after it.  Once validated, each added node is checked
    alone, at once: it may only depend on nodes already in the graph.
    """

    def __init__(self, *, on_error: OnError = "continue") -> None:
        if on_error not in _ON_ERROR:
            raise GraphError("on_error", f"expected 'fail_fast' or 'continue', got {on_error!r}")
        self.on_error: OnError = on_error
        self._nodes: dict[str, Node] = {}
        self._sources: dict[str, dict[str, str]] = {}
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._order: list[str] = []
        self._validated = False

    @classmethod
    def from_specs(cls, specs: Iterable[Any], *, on_error: OnError = "continue") -> Graph:
        """A graph of task specs: dicts, :class:`Node` objects or objects with the same attributes
        (a :class:`~agentrt.config.TaskSpec`).  Not validated yet."""
        graph = cls(on_error=on_error)
        for i, spec in enumerate(specs):
            graph.add_node(_to_node(spec, i))
        return graph

    def add(
        self,
        id: str,
        agent: str,
        *,
        args: Mapping[str, Any] | None = None,
        after: Iterable[str] = (),
        method: str = "",
        retries: int | None = None,
        timeout: float | None = None,
        for_each: str | None = None,
        min_success: int | None = None,
        missing: Missing = "drop",
        on_error: OnError | None = None,
        approval: Literal["none", "required"] = "none",
    ) -> Node:
        """Add a task (see :class:`Node`) and return its node."""
        node = Node(
            id=id,
            agent=agent,
            args=dict(args) if args is not None else {},
            after=list(after),
            method=method,
            retries=retries,
            timeout=timeout,
            for_each=for_each,
            min_success=min_success,
            missing=missing,
            on_error=on_error,
            approval=approval,
        )
        return self.add_node(node)

    def add_node(self, node: Node) -> Node:
        """Add ``node``; once the graph is validated, check its dependencies at once."""
        if not isinstance(node, Node):
            raise TypeError(f"expected a Node, got {type(node).__name__}")
        sources = _check_node(node)
        if node.id in self._nodes:
            raise GraphError(f"tasks.{node.id}.id", f"duplicate task id {node.id!r}")
        if self._validated:
            # A new node can only depend on nodes already here, none of which
            # depends on it: the one cycle it can close is through itself.
            if node.id in sources:
                raise GraphError(
                    f"tasks.{node.id}.{sources[node.id]}", f"cycle: {node.id} -> {node.id}"
                )
            self._check_dangling(node.id, sources)
        self._index[node.id] = len(self._ids)
        self._ids.append(node.id)
        self._nodes[node.id] = node
        self._sources[node.id] = sources
        if self._validated:
            self._order.append(node.id)
        return node

    def _check_dangling(self, nid: str, sources: Mapping[str, str]) -> None:
        for dep, field in sources.items():
            if dep not in self._nodes and dep != nid:
                close = difflib.get_close_matches(dep, self._ids, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise GraphError(
                    f"tasks.{nid}.{field}", f"task {nid!r} depends on unknown task {dep!r}{hint}"
                )

    def validate(self) -> list[str]:
        """Check the whole graph; return a topological order (ties in insertion order).

        Raises :class:`GraphError` for a dependency on an unknown task or a
        cycle (``"cycle: a -> b -> c -> a"``, each task feeding the next).
        """
        for nid in self._ids:
            self._check_dangling(nid, self._sources[nid])
        waiting = {nid: len(self._sources[nid]) for nid in self._ids}
        down: dict[str, list[str]] = {nid: [] for nid in self._ids}
        for nid in self._ids:
            for dep in self._sources[nid]:
                down[dep].append(nid)
        heap = [(self._index[n], n) for n in self._ids if waiting[n] == 0]
        heapq.heapify(heap)
        order: list[str] = []
        while heap:
            _, nid = heapq.heappop(heap)
            order.append(nid)
            for d in down[nid]:
                waiting[d] -= 1
                if waiting[d] == 0:
                    heapq.heappush(heap, (self._index[d], d))
        if len(order) < len(self._ids):
            self._raise_cycle({n for n in self._ids if waiting[n] > 0})
        self._order = order
        self._validated = True
        return list(order)

    def _raise_cycle(self, stuck: set[str]) -> None:
        # Every stuck node waits on a stuck node: walk upstream (first stuck
        # dependency, depth first) from the earliest stuck node until a node
        # repeats; the walk's tail is a cycle.
        start = min(stuck, key=self._index.__getitem__)
        walk = [start]
        seen = {start: 0}
        while True:
            nxt = next(d for d in self._sources[walk[-1]] if d in stuck)
            if nxt in seen:
                cycle = walk[seen[nxt] :]
                break
            seen[nxt] = len(walk)
            walk.append(nxt)
        cycle.reverse()  # upstream walk -> data-flow order
        first = min(range(len(cycle)), key=lambda i: self._index[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        head, pred = cycle[0], cycle[-1]
        names = " -> ".join([*cycle, head])
        raise GraphError(f"tasks.{head}.{self._sources[head][pred]}", f"cycle: {names}")

    @property
    def validated(self) -> bool:
        return self._validated

    @property
    def order(self) -> list[str]:
        """The last validated topological order, plus nodes added since."""
        return list(self._order)

    @property
    def nodes(self) -> list[Node]:
        """The nodes in insertion order."""
        return [self._nodes[n] for n in self._ids]

    def deps(self, id: str) -> set[str]:
        """The ids ``id`` waits for."""
        return set(self._sources[id])

    def policy(self, id: str) -> OnError:
        """The node's ``on_error``, or the graph's."""
        return self._nodes[id].on_error or self.on_error

    def __getitem__(self, id: str) -> Node:
        return self._nodes[id]

    def __contains__(self, id: object) -> bool:
        return id in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"<Graph {len(self)} nodes{' validated' if self._validated else ''}>"


# --- execution state -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FanoutProgress:
    """What :meth:`GraphState.finish_child` changed.

    ``completed``: this call completed the parent; ``ok``: the parent's
    outcome once complete (``None`` while it runs); ``cancel``: its children
    still running that are no longer needed; ``skipped``: every node newly
    skipped by this call (record each with :meth:`GraphState.reason`).
    """

    parent: str
    completed: bool
    ok: bool | None
    cancel: list[str]
    skipped: list[str]


class _Fan:
    __slots__ = ("children", "complete", "counted", "k", "n_done", "n_ok")

    def __init__(self, children: list[str], k: int | None) -> None:
        self.children = children
        self.k = k
        self.n_ok = 0
        self.n_done = 0
        self.complete = False
        self.counted: list[str] = []


class GraphState:
    """Which nodes of a (validated) graph are ready, running, done; no barrier.

    ``ready()`` lists the nodes whose dependencies all succeeded and that are
    not started; call ``start(id)`` as each is launched and ``finish(id, ok)``
    when it ends.  A failure skips, under its node's ``on_error="continue"``,
    its transitive dependents only; under ``"fail_fast"``, every node not yet
    started (``stopped`` is then set; the scheduler cancels ``running()``).
    Nodes added to the graph later join on the next call.

    A ``for_each`` node, once ready, is expanded with ``expand(id, items)``
    into children ``"id[i]"`` (ready at once; resolve their args with
    ``item=state.item(child)``), each ended with ``finish_child``.  The parent
    completes when all children have (ok if all succeeded) or, with
    ``min_success=k``, as soon as k succeeded (ok) or k can no longer be
    reached (failed); without a quorum under ``fail_fast`` a child failure
    stops the run.  ``fanout_result`` gives what ``${id}`` resolves to.
    """

    def __init__(self, graph: Graph) -> None:
        if not graph.validated:
            graph.validate()
        self.graph = graph
        self._status: dict[str, Status] = {}
        self._reason: dict[str, str] = {}
        self._cause: dict[str, str] = {}
        self._waiting: dict[str, int] = {}
        self._down: dict[str, list[str]] = {}
        self._ready: set[str] = set()
        self._key: dict[str, tuple[int, int]] = {}
        self._fans: dict[str, _Fan] = {}
        self._parent: dict[str, str] = {}
        self._items: dict[str, Any] = {}
        self._open = 0
        self._known = 0
        self._stopped: str | None = None
        # per-call accumulators
        self._newly_skipped: list[str] = []
        self._touched: list[str] = []
        self._completed: list[str] = []
        self._cancel: list[str] = []
        self._sync()

    # -- queries --

    def ready(self) -> list[str]:
        """Nodes (and fan-out children) not started whose dependencies all succeeded."""
        self._sync()
        return self._sorted(self._ready)

    def running(self) -> list[str]:
        """Nodes and children started and not yet finished."""
        self._sync()
        return self._sorted(i for i, s in self._status.items() if s == "running")

    @property
    def done(self) -> bool:
        """Every node and child is ok, failed or skipped."""
        self._sync()
        return self._open == 0

    @property
    def stopped(self) -> str | None:
        """The id whose failure stopped the run (``fail_fast``), else ``None``."""
        return self._stopped

    @property
    def skipped(self) -> dict[str, str]:
        """Every skipped node or child, with its reason, in the order skipped."""
        return {i: self._reason[i] for i, s in self._status.items() if s == "skipped"}

    def status(self, id: str) -> Status:
        self._sync()
        return self._status[id]

    def reason(self, id: str) -> str | None:
        """Why ``id`` was skipped (``"upstream 'x' failed"``) or a fan-out failed."""
        self._sync()
        self._known_id(id)
        return self._reason.get(id)

    def node(self, id: str) -> Node:
        """The node of ``id``; a child's is its parent's."""
        return self.graph[self._parent.get(id, id)]

    def parent(self, id: str) -> str | None:
        """The fan-out parent of a child id, else ``None``."""
        return self._parent.get(id)

    def item(self, child: str) -> Any:
        """The element a child runs on (``${item}``)."""
        return self._items[child]

    def children(self, id: str) -> list[str]:
        """The children of an expanded fan-out, in order (``[]`` before ``expand``)."""
        fan = self._fans.get(id)
        return list(fan.children) if fan else []

    def dependents(self, id: str) -> list[str]:
        """Every node that waits on ``id``, directly or not, in graph order."""
        self._sync()
        self._known_id(id)
        seen: set[str] = set()
        stack = [id]
        while stack:
            for d in self._down.get(stack.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return self._sorted(seen)

    def fanout_result(self, id: str, results: Mapping[str, Any]) -> list[Any]:
        """What ``${id}`` of a completed fan-out resolves to: its children's results, in order.

        Only the children that had succeeded when the parent completed (all
        of them without a quorum, when the parent is ok); with ``missing =
        "null"``, every child in order, ``None`` for those that did not.
        """
        fan = self._fans.get(id)
        if fan is None or not fan.complete:
            raise ValueError(f"fan-out {id!r} has not completed")
        if self.graph[id].missing == "null":
            counted = set(fan.counted)
            return [results[c] if c in counted else None for c in fan.children]
        return [results[c] for c in fan.counted]

    # -- transitions --

    def start(self, id: str) -> None:
        """Mark a ready node or child as running."""
        self._sync()
        if id not in self._ready:
            raise ValueError(f"cannot start {id!r}: {self._why_not_ready(id)}")
        self._ready.discard(id)
        self._status[id] = "running"

    def finish(self, id: str, ok: bool) -> list[str]:
        """End a running node.  Returns the nodes newly skipped because of it, in graph order.

        A ``for_each`` node finishes through its children; it may only be
        finished here (failed) if it was never expanded, e.g. its items could
        not be resolved.
        """
        self._begin()
        if id in self._parent:
            raise ValueError(f"{id!r} is a fan-out child: use finish_child()")
        if id in self._fans:
            raise ValueError(f"fan-out {id!r} finishes when its children do")
        self._require(id, "running")
        if ok and self.graph[id].for_each is not None:
            raise ValueError(f"for_each task {id!r} must be expanded, not finished ok")
        if ok:
            self._succeed(id)
        else:
            self._fail(id)
        self._settle()
        return self._sorted(self._newly_skipped)

    def skip(self, id: str, reason: str) -> list[str]:
        """Skip a node or child that has not started.  Returns the others newly skipped."""
        self._begin()
        self._require(id, "pending")
        self._mark_skipped(id, reason, cause=id)
        self._cascade(id, f"upstream {id!r} skipped")
        self._settle()
        return self._sorted(x for x in self._newly_skipped if x != id)

    def expand(self, id: str, items: Iterable[Any]) -> list[str]:
        """Create the children of a ready (or started) ``for_each`` node; return their ids.

        With no items, fewer than ``min_success``, or once the run has
        stopped, no child is created and the parent completes at once (ok for
        an empty fan-out without a quorum): see :meth:`status`,
        :meth:`reason` and :attr:`skipped`.
        """
        self._begin()
        node = self.graph[id]
        if node.for_each is None:
            raise ValueError(f"{id!r} has no for_each")
        if id in self._fans:
            raise ValueError(f"{id!r} is already expanded")
        if id in self._ready:
            self._ready.discard(id)
            self._status[id] = "running"
        self._require(id, "running")
        values = list(items)
        k = node.min_success
        why = ""
        if self._stopped is not None:
            why = f"run stopped: {self._stopped!r} failed"
        elif k is not None and k > len(values):
            why = f"min_success={k} but only {len(values)} items"
        if why:
            self._fans[id] = _Fan([], k)
            self._complete_fan(id, False, why)
            self._settle()
            return []
        base = self._key[id][0]
        children = [child_id(id, i) for i in range(len(values))]
        self._fans[id] = _Fan(children, k)
        for i, (cid, value) in enumerate(zip(children, values, strict=True)):
            self._status[cid] = "pending"
            self._key[cid] = (base, i)
            self._parent[cid] = id
            self._items[cid] = value
            self._ready.add(cid)
            self._open += 1
        self._touched.append(id)  # an empty fan-out completes now
        self._settle()
        return list(children)

    def finish_child(self, child: str, ok: bool) -> FanoutProgress:
        """End a running fan-out child; say whether (and how) that completed its parent."""
        self._begin()
        parent = self._parent.get(child)
        if parent is None:
            raise ValueError(f"{child!r} is not a fan-out child")
        self._require(child, "running")
        fan = self._fans[parent]
        self._status[child] = "ok" if ok else "failed"
        self._open -= 1
        if not fan.complete:
            fan.n_done += 1
            fan.n_ok += ok
            self._touched.append(parent)
            if not ok and fan.k is None and self.graph.policy(parent) == "fail_fast":
                self._stop(child)
        self._settle()
        cancel = {c for c in self._cancel if self._parent.get(c) == parent}
        if self._stopped == child:  # the run stops: the siblings go too
            cancel.update(c for c in fan.children if self._status[c] == "running")
        return FanoutProgress(
            parent=parent,
            completed=parent in self._completed,
            ok=(self._status[parent] == "ok") if fan.complete else None,
            cancel=self._sorted(cancel),
            skipped=self._sorted(self._newly_skipped),
        )

    # -- internals --

    def _sorted(self, ids: Iterable[str]) -> list[str]:
        return sorted(ids, key=self._key.__getitem__)

    def _begin(self) -> None:
        self._sync()
        self._newly_skipped = []
        self._touched = []
        self._completed = []
        self._cancel = []

    def _known_id(self, id: str) -> None:
        if id not in self._status:
            raise KeyError(id)

    def _require(self, id: str, status: Status) -> None:
        self._known_id(id)
        have = self._status[id]
        if have != status:
            raise ValueError(f"{id!r} is {have}, not {status}")

    def _why_not_ready(self, id: str) -> str:
        self._known_id(id)
        status = self._status[id]
        if status != "pending":
            return f"it is {status}"
        waiting = [d for d in self.graph._sources.get(id, {}) if self._status[d] != "ok"]
        return f"waiting for {', '.join(map(repr, waiting))}"

    def _sync(self) -> None:
        """Take in nodes added to the graph since the last call."""
        ids = self.graph._ids
        if self._known == len(ids):
            return
        for nid in ids[self._known :]:
            deps = self.graph._sources[nid]
            self._key[nid] = (self.graph._index[nid], -1)
            self._status[nid] = "pending"
            self._open += 1
            for d in deps:
                self._down.setdefault(d, []).append(nid)
            bad = next((d for d in deps if self._status.get(d) in ("failed", "skipped")), None)
            if self._stopped is not None:
                self._mark_skipped(nid, f"run stopped: {self._stopped!r} failed", self._stopped)
            elif bad is not None:
                cause = self._cause.get(bad, bad)
                self._mark_skipped(nid, self._upstream(cause), cause)
            else:
                self._waiting[nid] = sum(1 for d in deps if self._status.get(d) != "ok")
                if self._waiting[nid] == 0:
                    self._ready.add(nid)
        self._known = len(ids)

    def _upstream(self, cause: str) -> str:
        word = "skipped" if self._status.get(cause) == "skipped" else "failed"
        return f"upstream {cause!r} {word}"

    def _mark_skipped(self, id: str, reason: str, cause: str) -> None:
        self._status[id] = "skipped"
        self._reason[id] = reason
        self._cause[id] = cause
        self._ready.discard(id)
        self._open -= 1
        self._newly_skipped.append(id)
        parent = self._parent.get(id)
        if parent is not None:
            fan = self._fans[parent]
            if not fan.complete:
                fan.n_done += 1
                self._touched.append(parent)

    def _succeed(self, id: str) -> None:
        self._status[id] = "ok"
        self._open -= 1
        for d in self._down.get(id, ()):
            if self._status[d] == "pending":
                self._waiting[d] -= 1
                if self._waiting[d] == 0:
                    self._ready.add(d)

    def _fail(self, id: str) -> None:
        self._status[id] = "failed"
        self._open -= 1
        if self.graph.policy(id) == "continue":
            self._cascade(id, f"upstream {id!r} failed")
        else:
            self._stop(id)

    def _cascade(self, root: str, reason: str) -> None:
        stack = [root]
        while stack:
            for d in self._down.get(stack.pop(), ()):
                if self._status[d] == "pending":
                    self._mark_skipped(d, reason, root)
                    stack.append(d)

    def _stop(self, cause: str) -> None:
        if self._stopped is not None:
            self._cascade(cause, f"upstream {cause!r} failed")
            return
        self._stopped = cause
        self._cascade(cause, f"upstream {cause!r} failed")
        for nid in self._sorted(i for i, s in self._status.items() if s == "pending"):
            self._mark_skipped(nid, f"run stopped: {cause!r} failed", cause)

    def _settle(self) -> None:
        while self._touched:
            self._check_fan(self._touched.pop(0))

    def _check_fan(self, parent: str) -> None:
        fan = self._fans[parent]
        if fan.complete:
            return
        n, k = len(fan.children), fan.k
        if k is not None:
            if fan.n_ok >= k:
                self._complete_fan(parent, True, f"not needed: {parent!r} reached min_success={k}")
            elif fan.n_ok + (n - fan.n_done) < k:
                why = f"{parent!r} can no longer reach min_success={k}"
                self._complete_fan(parent, False, why, f"only {fan.n_ok} of {n} children succeeded")
        elif fan.n_done == n:
            failed = n - fan.n_ok
            self._complete_fan(parent, failed == 0, "", f"{failed} of {n} children did not succeed")

    def _complete_fan(self, parent: str, ok: bool, leftover: str, failure: str = "") -> None:
        fan = self._fans[parent]
        fan.complete = True
        fan.counted = [c for c in fan.children if self._status[c] == "ok"]
        self._completed.append(parent)
        for c in fan.children:
            if self._status[c] == "pending":
                self._mark_skipped(c, leftover, parent)
            elif self._status[c] == "running":
                self._cancel.append(c)
        if ok:
            self._succeed(parent)
        else:
            self._reason[parent] = failure or leftover
            self._fail(parent)


# --- critical path ---------------------------------------------------------


def critical_path(
    nodes_timing: Mapping[str, tuple[float, float]], deps: Mapping[str, Iterable[str]]
) -> tuple[list[str], float]:
    """The chain of tasks that decided the run's length, and the makespan.

    Walks back from the task that finished last, each time through the
    dependency that finished last before the task started.  ``makespan`` is
    ``max(finish) - min(start)``.  Tasks absent from ``nodes_timing`` (never
    run) are ignored.
    """
    if not nodes_timing:
        return [], 0.0
    makespan = max(f for _, f in nodes_timing.values()) - min(s for s, _ in nodes_timing.values())
    cur = max(nodes_timing, key=lambda n: nodes_timing[n][1])
    chain = [cur]
    seen = {cur}
    while True:
        start = nodes_timing[cur][0]
        cands = [d for d in deps.get(cur, ()) if d in nodes_timing and d not in seen]
        before = [d for d in cands if nodes_timing[d][1] <= start]
        pool = before or cands
        if not pool:
            break
        cur = max(pool, key=lambda d: nodes_timing[d][1])
        chain.append(cur)
        seen.add(cur)
    chain.reverse()
    return chain, makespan
