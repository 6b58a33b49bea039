"""Tests of :mod:`agentrt.graph`: references, validation, ready set, fan-out, critical path."""

from __future__ import annotations

import ast
import copy
import pickle
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

import agentrt.graph as graph_mod
from agentrt.config import TaskSpec
from agentrt.errors import ConfigError
from agentrt.graph import (
    FanoutProgress,
    Graph,
    GraphError,
    GraphRefError,
    GraphState,
    Node,
    child_id,
    critical_path,
    find_refs,
    resolve,
)

RESULTS: dict[str, Any] = {
    "search": {"hits": [{"title": "A", "url": "u1"}, {"title": "B", "url": "u2"}], "n": 2},
    "plan": {"topics": ["x", "y", "z"], "meta": {}},
    "count": 7,
    "flag": False,
    "none": None,
    "text": "hello",
    "lst": [1, [2, 3]],
}


# --- references: parsing and resolution ------------------------------------


class TestResolve:
    def test_whole_string_keeps_the_type(self) -> None:
        assert resolve("${count}", RESULTS) == 7
        assert resolve("${flag}", RESULTS) is False
        assert resolve("${none}", RESULTS) is None
        assert resolve("${plan.topics}", RESULTS) == ["x", "y", "z"]
        assert resolve("${search.hits[1]}", RESULTS) == {"title": "B", "url": "u2"}

    def test_fields_indexes_and_nesting(self) -> None:
        assert resolve("${search.hits[0].title}", RESULTS) == "A"
        assert resolve("${lst[1][0]}", RESULTS) == 2
        args = {"q": "${search.hits[1].url}", "deep": [{"n": "${search.n}"}, ("${count}",)]}
        assert resolve(args, RESULTS) == {"q": "u2", "deep": [{"n": 2}, (7,)]}

    def test_result_is_a_deep_copy(self) -> None:
        out = resolve({"t": "${plan.topics}", "c": {"k": [1]}}, RESULTS)
        out["t"].append("mutated")
        assert RESULTS["plan"]["topics"] == ["x", "y", "z"]
        src = {"c": {"k": [1]}}
        out2 = resolve(src, {})
        out2["c"]["k"].append(2)
        assert src == {"c": {"k": [1]}}

    def test_embedded_interpolation(self) -> None:
        assert resolve("n=${count}!", RESULTS) == "n=7!"
        assert resolve("${text}, ${search.hits[0].title}", RESULTS) == "hello, A"
        assert resolve("f=${flag} z=${none}", RESULTS) == "f=False z=None"
        assert resolve("t: ${plan.topics}", RESULTS) == 't: ["x", "y", "z"]'
        assert resolve("h ${search.hits[0]}", RESULTS) == 'h {"title": "A", "url": "u1"}'

    def test_escapes(self) -> None:
        assert resolve("$${count}", RESULTS) == "${count}"
        assert resolve("a $${x} b ${count}", RESULTS) == "a ${x} b 7"
        assert resolve("$$${count}", RESULTS) == "$${count}"
        assert resolve("$5 and $$ and {x}", RESULTS) == "$5 and $$ and {x}"
        assert find_refs("$${count}") == set()

    def test_item(self) -> None:
        assert resolve("${item}", {}, item={"a": 1}) == {"a": 1}
        assert resolve("topic: ${item.name}", {}, item={"name": "cats"}) == "topic: cats"
        assert resolve("${item[1]}", {}, item=[5, 6]) == 6
        assert resolve("${item}", {}, item=None) is None
        with pytest.raises(GraphRefError, match=r"\$\{item\}: no current item"):
            resolve("${item}", {})

    def test_non_string_values_and_keys_untouched(self) -> None:
        obj = {"${count}": 1, "n": 3.5, "b": b"x", "none": None}
        assert resolve(obj, RESULTS) == obj

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("${nope}", "${nope}: no result for task 'nope'"),
            ("${search.hits[3]}", "${search.hits[3]}: index 3 out of range (list of 2)"),
            ("${search.hits[0].titel}", "key 'titel' missing (dict with keys 'title', 'url')"),
            ("${search.hits[0].titel}", "did you mean 'title'?"),
            ("${plan.meta.x}", "${plan.meta.x}: key 'x' missing (empty dict)"),
            ("${count[0]}", "${count[0]}: cannot index int with [0]"),
            ("${count.x}", "${count.x}: cannot take field 'x' of int"),
            ("${search.hits.title}", "cannot take field 'title' of list"),
            ("${none.x}", "cannot take field 'x' of None"),
            ("${search[0]}", "cannot index dict with [0]"),
            ("${text[0]}", "cannot index str with [0]"),
        ],
    )
    def test_missing_things_are_named(self, text: str, message: str) -> None:
        with pytest.raises(GraphRefError) as info:
            resolve({"a": ["x", text]}, RESULTS, where="tasks.t.args")
        assert message in str(info.value)
        assert info.value.ref in str(info.value)
        assert info.value.path == "tasks.t.args"
        assert str(info.value).startswith("tasks.t.args: ${")

    def test_embedded_missing_also_raises(self) -> None:
        with pytest.raises(GraphRefError, match=r"no result for task 'zz'"):
            resolve("before ${zz} after", RESULTS)

    @pytest.mark.parametrize(
        "text",
        [
            "${}",
            "${1abc}",
            "${-a}",
            "${a.}",
            "${a..b}",
            "${a[x]}",
            "${a[-1]}",
            "${a[]}",
            "${ a }",
            "${a b}",
            "${a.1}",
            "x ${unclosed",
            "${a{b}}",
        ],
    )
    def test_malformed_reference(self, text: str) -> None:
        with pytest.raises(GraphError, match="malformed reference") as info:
            find_refs({"k": [text]}, where="tasks.t.args")
        assert info.value.path == "tasks.t.args"
        assert not isinstance(info.value, GraphRefError)
        with pytest.raises(GraphError, match="malformed reference"):
            resolve(text, {"a": {"b": 1}})

    def test_malformed_names_task_and_text(self) -> None:
        g = Graph()
        with pytest.raises(GraphError) as info:
            g.add("summ", "agent", args={"q": "see ${search.hits[x]}"})
        assert info.value.path == "tasks.summ.args"
        assert "'${search.hits[x]}'" in str(info.value)
        with pytest.raises(GraphError, match="no closing"):
            g.add("t2", "agent", args={"q": "${search"})

    def test_find_refs(self) -> None:
        args = {
            "a": "${search.hits[0].title} and ${count}",
            "b": ["${plan}", {"c": "${item.x}"}, ("${dash-id_2}",)],
            "d": "$${escaped}",
            "e": 5,
        }
        assert find_refs(args) == {"search", "count", "plan", "dash-id_2"}
        assert find_refs("plain") == set()
        assert find_refs(42) == set()


# --- nodes and validation --------------------------------------------------


def test_graph_error_is_a_config_error() -> None:
    assert issubclass(GraphError, ConfigError)
    assert issubclass(GraphRefError, GraphError)
    err = GraphRefError("tasks.a.args", "${x}: no result for task 'x'", ref="${x}")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.path, clone.ref, str(clone)) == (err.path, err.ref, str(err))
    assert copy.copy(err).ref == "${x}"


def test_node_deps_union() -> None:
    n = Node(
        id="t",
        agent="a",
        args={"q": "${x.y}", "r": ["${item}"]},
        after=["w"],
        for_each="${z.list}",
    )
    assert n.deps == {"w", "x", "z"}


def test_add_returns_node_and_graph_accessors() -> None:
    g = Graph()
    a = g.add("a", "agent", args={"x": 1}, retries=2, timeout=1.5, method="run")
    b = g.add("b", "agent", args={"y": "${a}"}, on_error="fail_fast")
    assert isinstance(a, Node) and a.retries == 2 and a.timeout == 1.5 and a.method == "run"
    assert g["b"] is b and "a" in g and "zz" not in g and len(g) == 2
    assert list(g) == ["a", "b"] and g.nodes == [a, b]
    assert g.deps("b") == {"a"}
    # continue is the default: a failure sinks only its own branch
    assert g.policy("a") == "continue" and g.policy("b") == "fail_fast"
    assert not g.validated
    assert g.validate() == ["a", "b"] and g.validated and g.order == ["a", "b"]


def test_topological_order_is_deterministic() -> None:
    g = Graph()
    g.add("d", "x", after=["b", "c"])
    g.add("c", "x", args={"v": "${a}"})
    g.add("b", "x", after=["a"])
    g.add("a", "x")
    g.add("e", "x")
    # ready nodes go in insertion order: d (inserted first) before e
    assert g.validate() == ["a", "c", "b", "d", "e"]


def test_duplicate_id() -> None:
    g = Graph()
    g.add("a", "x")
    with pytest.raises(GraphError, match="duplicate task id 'a'") as info:
        g.add("a", "y")
    assert info.value.path == "tasks.a.id"
    with pytest.raises(GraphError, match="duplicate"):
        Graph.from_specs([{"id": "a", "agent": "x"}, {"id": "a", "agent": "x"}])


def test_dangling_dependency_with_suggestion() -> None:
    g = Graph()
    g.add("search", "x")
    g.add("summarize", "x", args={"text": "${serch.hits}"})
    with pytest.raises(GraphError) as info:
        g.validate()
    msg = str(info.value)
    assert info.value.path == "tasks.summarize.args"
    assert "'summarize'" in msg and "'serch'" in msg and "did you mean 'search'?" in msg
    g2 = Graph()
    g2.add("a", "x", after=["zzzz"])
    with pytest.raises(GraphError, match=r"unknown task 'zzzz'$") as info2:
        g2.validate()
    assert info2.value.path == "tasks.a.after"


def test_cycle_message_names_the_cycle() -> None:
    g = Graph()
    g.add("start", "x")
    g.add("a", "x", after=["start", "c"])
    g.add("b", "x", args={"v": "${a.out}"})
    g.add("c", "x", after=["b"])
    g.add("tail", "x", after=["c"])
    with pytest.raises(GraphError) as info:
        g.validate()
    assert info.value.message == "cycle: a -> b -> c -> a"
    assert info.value.path == "tasks.a.after"


def test_cycle_starts_at_earliest_node_and_self_cycle() -> None:
    g = Graph()
    g.add("z", "x", args={"v": "${y}"})
    g.add("y", "x", args={"v": "${z}"})
    with pytest.raises(GraphError, match=r"cycle: z -> y -> z$"):
        g.validate()
    g2 = Graph()
    g2.add("s", "x", after=["s"])
    with pytest.raises(GraphError, match=r"cycle: s -> s$"):
        g2.validate()


@pytest.mark.parametrize(
    ("kwargs", "path", "match"),
    [
        ({"id": "9lives"}, "tasks.9lives.id", "invalid task id"),
        ({"id": "a.b"}, "tasks.a.b.id", "invalid task id"),
        ({"id": "a[0]"}, "tasks.a[0].id", "invalid task id"),
        ({"id": "item"}, "tasks.item.id", "reserved"),
        ({"agent": ""}, "tasks.t.agent", "agent name"),
        ({"retries": -1}, "tasks.t.retries", ">= 0"),
        ({"timeout": -1.0}, "tasks.t.timeout", ">= 0"),
        ({"on_error": "ignore"}, "tasks.t.on_error", "fail_fast"),
        ({"args": {"x": "${item.name}"}}, "tasks.t.args", "outside a for_each"),
        ({"for_each": "topics"}, "tasks.t.for_each", "single reference"),
        ({"for_each": "${a} ${b}"}, "tasks.t.for_each", "single reference"),
        ({"for_each": "${item}"}, "tasks.t.for_each", "cannot iterate"),
        ({"for_each": "${a[}"}, "tasks.t.for_each", "malformed"),
        ({"min_success": 1}, "tasks.t.min_success", "for_each"),
        ({"for_each": "${a}", "min_success": 0}, "tasks.t.min_success", ">= 1"),
    ],
)
def test_node_checks(kwargs: dict[str, Any], path: str, match: str) -> None:
    spec: dict[str, Any] = {"id": "t", "agent": "ag"} | kwargs
    with pytest.raises(GraphError, match=match) as info:
        Graph().add(**spec)
    assert info.value.path == path


def test_item_inside_for_each_is_fine() -> None:
    g = Graph()
    g.add("plan", "x")
    g.add("each", "x", args={"t": "${item.name}", "ctx": "${plan.meta}"}, for_each="${plan.t}")
    assert g.deps("each") == {"plan"}
    assert g.validate() == ["plan", "each"]


def test_from_specs_dicts_and_taskspecs() -> None:
    specs: list[Any] = [
        TaskSpec(id="a", agent="ag", args={"k": 1}, timeout="2s", retries=1),
        {"id": "b", "agent": "ag", "args": {"v": "${a.k}"}, "on_error": "continue"},
        Node(id="c", agent="ag", after=["b"]),
    ]
    g = Graph.from_specs(specs, on_error="continue")
    assert g["a"].timeout == 2.0 and g["a"].retries == 1 and g["a"].args == {"k": 1}
    assert g["b"].on_error == "continue" and g.on_error == "continue"
    assert g.validate() == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("spec", "path", "match"),
    [
        ({"id": "a", "agent": "x", "aftr": ["b"]}, "tasks.a.aftr", "did you mean 'after'"),
        ({"id": "a"}, "tasks.a.agent", "required key is missing"),
        ({"id": "a", "agent": "x", "after": [1]}, "tasks.a.after.0", "expected `str`"),
        ({"id": "a", "agent": "x", "on_error": "nah"}, "tasks.a.on_error", "invalid enum"),
        ({"agent": "x"}, "tasks.0.id", "required key is missing"),
    ],
)
def test_from_specs_errors(spec: dict[str, Any], path: str, match: str) -> None:
    with pytest.raises(GraphError, match=match) as info:
        Graph.from_specs([spec])
    assert info.value.path == path


def test_bad_graph_policy() -> None:
    with pytest.raises(GraphError, match="on_error"):
        Graph(on_error="sometimes")  # type: ignore[arg-type]


def test_dynamic_add_after_validation() -> None:
    g = Graph()
    g.add("a", "x")
    g.validate()
    g.add("b", "x", args={"v": "${a}"})
    assert g.order == ["a", "b"]
    with pytest.raises(GraphError, match="unknown task 'later'"):
        g.add("c", "x", after=["later"])  # no forward references once running
    assert "c" not in g
    with pytest.raises(GraphError, match=r"cycle: d -> d"):
        g.add("d", "x", after=["d"])
    with pytest.raises(GraphError, match="did you mean 'b'"):
        g.add("e", "x", args={"v": "${bb}"})
    assert list(g) == ["a", "b"]


# --- ready set --------------------------------------------------------------


def _diamond(on_error: Any = "fail_fast") -> Graph:
    #   a -> b -> d
    #   a -> c -> d        e (independent) -> f
    g = Graph(on_error=on_error)
    g.add("a", "x")
    g.add("b", "x", args={"v": "${a}"})
    g.add("c", "x", after=["a"])
    g.add("d", "x", after=["b", "c"])
    g.add("e", "x")
    g.add("f", "x", args={"v": "${e.out}"})
    return g


def test_ready_has_no_barrier() -> None:
    s = GraphState(_diamond())
    assert s.ready() == ["a", "e"]
    s.start("a")
    s.start("e")
    assert s.ready() == [] and s.running() == ["a", "e"]
    assert s.finish("e", ok=True) == []
    assert s.ready() == ["f"]  # f does not wait for the "level" of a
    s.start("f")
    s.finish("a", ok=True)
    assert s.ready() == ["b", "c"]
    s.start("b")
    s.finish("b", ok=True)
    assert s.ready() == ["c"]  # d still waits on c
    s.start("c")
    s.finish("c", ok=True)
    assert s.ready() == ["d"]
    s.start("d")
    s.finish("d", ok=True)
    assert not s.done
    s.finish("f", ok=True)
    assert s.done and all(s.status(n) == "ok" for n in "abcdef")


def test_state_validates_the_graph() -> None:
    g = Graph()
    g.add("a", "x", after=["nope"])
    with pytest.raises(GraphError):
        GraphState(g)


def test_misuse_raises() -> None:
    s = GraphState(_diamond())
    with pytest.raises(ValueError, match="waiting for 'a'"):
        s.start("b")
    with pytest.raises(ValueError, match="pending, not running"):
        s.finish("a", ok=True)
    with pytest.raises(KeyError):
        s.start("nope")
    with pytest.raises(KeyError):
        s.status("nope")
    s.start("a")
    with pytest.raises(ValueError, match="it is running"):
        s.start("a")
    with pytest.raises(ValueError, match="not a fan-out child"):
        s.finish_child("a", True)
    with pytest.raises(ValueError, match="has no for_each"):
        s.expand("a", [1])


def test_dependents_are_transitive() -> None:
    s = GraphState(_diamond())
    assert s.dependents("a") == ["b", "c", "d"]
    assert s.dependents("e") == ["f"]
    assert s.dependents("d") == []


def test_continue_skips_only_transitive_dependents() -> None:
    s = GraphState(_diamond(on_error="continue"))
    s.start("a")
    s.start("e")
    skipped = s.finish("a", ok=False)
    assert skipped == ["b", "c", "d"]
    assert s.reason("d") == "upstream 'a' failed"
    assert s.skipped == {n: "upstream 'a' failed" for n in "bcd"}
    assert s.stopped is None
    assert "b" not in s.ready()
    s.finish("e", ok=True)
    assert s.ready() == ["f"]  # the independent branch carries on
    s.start("f")
    s.finish("f", ok=True)
    assert s.done
    assert [s.status(n) for n in "abcdef"] == [
        "failed",
        "skipped",
        "skipped",
        "skipped",
        "ok",
        "ok",
    ]


def test_continue_failure_mid_graph() -> None:
    s = GraphState(_diamond(on_error="continue"))
    s.start("a")
    s.finish("a", True)
    s.start("b")
    s.start("c")
    assert s.finish("b", False) == ["d"]
    assert s.finish("c", True) == []
    assert s.ready() == ["e"]


def test_fail_fast_skips_everything_not_started() -> None:
    s = GraphState(_diamond())
    s.start("a")
    s.start("e")
    skipped = s.finish("a", ok=False)
    assert skipped == ["b", "c", "d", "f"]
    assert s.stopped == "a"
    assert s.reason("b") == "upstream 'a' failed"
    assert s.reason("f") == "run stopped: 'a' failed"
    assert s.ready() == [] and s.running() == ["e"] and not s.done
    s.finish("e", ok=False)  # e.g. cancelled by the scheduler
    assert s.done


def test_per_node_policy_overrides_graph() -> None:
    g = Graph()  # fail_fast by default
    g.add("a", "x", on_error="continue")
    g.add("b", "x", after=["a"])
    g.add("c", "x")
    s = GraphState(g)
    s.start("a")
    assert s.finish("a", False) == ["b"]
    assert s.stopped is None and s.ready() == ["c"]


def test_skip_cascades() -> None:
    s = GraphState(_diamond())
    s.start("a")
    s.finish("a", True)
    assert s.skip("b", "condition false") == ["d"]
    assert s.reason("b") == "condition false"
    assert s.reason("d") == "upstream 'b' skipped"
    assert s.stopped is None and s.ready() == ["c", "e"]
    with pytest.raises(ValueError):
        s.skip("a", "too late")


def test_dynamic_nodes_join_the_state() -> None:
    g = _diamond(on_error="continue")
    s = GraphState(g)
    s.start("a")
    s.finish("a", True)
    g.add("late", "x", args={"v": "${a}"})
    assert "late" in s.ready()
    s.start("e")
    s.finish("e", False)
    g.add("late2", "x", after=["f"])
    assert s.status("late2") == "skipped"
    assert s.reason("late2") == "upstream 'e' failed"
    g.add("late3", "x", after=["b"])
    assert s.status("late3") == "pending" and "late3" not in s.ready()
    s.start("b")
    s.finish("b", True)
    assert "late3" in s.ready()


# --- fan-out ---------------------------------------------------------------


def _fan(min_success: int | None = None, on_error: Any = "continue") -> GraphState:
    g = Graph(on_error=on_error)
    g.add("plan", "x")
    g.add(
        "fetch",
        "x",
        args={"topic": "${item}", "n": "${plan.n}"},
        for_each="${plan.topics}",
        min_success=min_success,
    )
    g.add("write", "x", args={"pages": "${fetch}"})
    g.add("other", "x")
    s = GraphState(g)
    s.start("plan")
    s.finish("plan", True)
    return s


def test_for_each_expansion_and_item() -> None:
    s = _fan()
    assert s.ready() == ["fetch", "other"]
    results: dict[str, Any] = {"plan": {"topics": ["t0", "t1", "t2"], "n": 3}}
    items = resolve(s.node("fetch").for_each, results)
    kids = s.expand("fetch", items)
    assert kids == ["fetch[0]", "fetch[1]", "fetch[2]"] == [child_id("fetch", i) for i in range(3)]
    assert s.status("fetch") == "running" and s.children("fetch") == kids
    assert s.ready() == [*kids, "other"]
    assert s.parent("fetch[1]") == "fetch" and s.parent("fetch") is None
    assert s.item("fetch[1]") == "t1" and s.node("fetch[1]") is s.node("fetch")
    args = resolve(s.node("fetch[1]").args, results, item=s.item("fetch[1]"))
    assert args == {"topic": "t1", "n": 3}
    for k in kids:
        s.start(k)
    assert s.finish_child("fetch[2]", True) == FanoutProgress("fetch", False, None, [], [])
    assert s.finish_child("fetch[0]", True).completed is False
    assert "write" not in s.ready()
    last = s.finish_child("fetch[1]", True)
    assert last.completed and last.ok is True and last.cancel == []
    assert s.status("fetch") == "ok" and s.ready() == ["write", "other"]
    child_results = {k: f"page {k}" for k in kids}
    assert s.fanout_result("fetch", child_results) == [
        "page fetch[0]",
        "page fetch[1]",
        "page fetch[2]",
    ]
    with pytest.raises(ValueError, match="finishes when its children do"):
        s.finish("fetch", True)


def test_for_each_without_quorum_fails_when_a_child_fails_continue() -> None:
    s = _fan()
    kids = s.expand("fetch", [1, 2])
    for k in kids:
        s.start(k)
    assert s.finish_child(kids[0], False).completed is False  # waits for all children
    last = s.finish_child(kids[1], True)
    assert last.completed and last.ok is False and last.skipped == ["write"]
    assert s.reason("fetch") == "1 of 2 children did not succeed"
    assert s.reason("write") == "upstream 'fetch' failed"
    assert s.ready() == ["other"]


def test_for_each_without_quorum_fail_fast_stops_the_run() -> None:
    s = _fan(on_error="fail_fast")
    kids = s.expand("fetch", [1, 2, 3])
    s.start(kids[0])
    s.start(kids[1])
    p = s.finish_child(kids[0], False)
    assert s.stopped == "fetch[0]"
    assert p.cancel == ["fetch[1]"] and p.completed is False
    assert p.skipped == ["fetch[2]", "write", "other"]
    p2 = s.finish_child(kids[1], False)  # cancelled
    assert p2.completed and p2.ok is False
    assert s.done


def test_quorum_completes_early() -> None:
    s = _fan(min_success=2)
    kids = s.expand("fetch", ["a", "b", "c", "d"])
    for k in kids[:3]:
        s.start(k)
    assert s.finish_child(kids[0], False).completed is False
    assert s.finish_child(kids[2], True).completed is False
    p = s.finish_child(kids[1], True)
    assert p.completed and p.ok is True
    assert p.cancel == []  # nothing else running
    assert p.skipped == ["fetch[3]"]  # never started, not needed
    assert s.reason("fetch[3]") == "not needed: 'fetch' reached min_success=2"
    assert s.status("fetch") == "ok" and "write" in s.ready()
    results = {k: k.upper() for k in kids}
    assert s.fanout_result("fetch", results) == ["FETCH[1]", "FETCH[2]"]  # successes only


def test_quorum_reports_running_children_to_cancel() -> None:
    s = _fan(min_success=1)
    kids = s.expand("fetch", ["a", "b", "c"])
    for k in kids:
        s.start(k)
    p = s.finish_child(kids[1], True)
    assert p.completed and p.ok and p.cancel == ["fetch[0]", "fetch[2]"]
    late = s.finish_child(kids[0], True)  # finished before the cancel landed
    assert late == FanoutProgress("fetch", False, True, [], [])
    assert s.fanout_result("fetch", {k: k for k in kids}) == ["fetch[1]"]
    s.finish_child(kids[2], False)
    assert s.status("fetch[2]") == "failed" and s.status("fetch") == "ok"


def test_quorum_fails_once_unreachable() -> None:
    s = _fan(min_success=3)
    kids = s.expand("fetch", ["a", "b", "c", "d"])
    s.start(kids[0])
    s.start(kids[1])
    assert s.finish_child(kids[0], False).completed is False
    p = s.finish_child(kids[1], False)
    assert p.completed and p.ok is False
    assert p.skipped == ["fetch[2]", "fetch[3]", "write"]
    assert s.reason("fetch") == "only 0 of 4 children succeeded"
    assert s.reason("write") == "upstream 'fetch' failed"
    assert s.stopped is None and s.ready() == ["other"]


def test_quorum_larger_than_items_fails_at_once() -> None:
    s = _fan(min_success=3)
    assert s.expand("fetch", ["a", "b"]) == []
    assert s.status("fetch") == "failed"
    assert s.reason("fetch") == "min_success=3 but only 2 items"
    assert s.skipped == {"write": "upstream 'fetch' failed"}


def test_expand_after_the_run_stopped_creates_nothing() -> None:
    s = _fan(on_error="fail_fast")
    s.start("fetch")
    s.start("other")
    assert s.finish("other", False) == ["write"]
    assert s.expand("fetch", [1, 2]) == []
    assert s.status("fetch") == "failed"
    assert s.reason("fetch") == "run stopped: 'other' failed"
    assert s.done


def test_empty_fanout_without_quorum_is_ok() -> None:
    s = _fan()
    s.start("fetch")  # starting before expanding is allowed too
    assert s.expand("fetch", []) == []
    assert s.status("fetch") == "ok" and s.fanout_result("fetch", {}) == []
    assert s.ready() == ["write", "other"]


def test_skipping_a_child_counts_against_the_quorum() -> None:
    s = _fan(min_success=2)
    kids = s.expand("fetch", ["a", "b"])
    s.skip(kids[0], "filtered out")
    assert s.status("fetch") == "failed"
    assert s.status("write") == "skipped"


def test_unexpanded_for_each_may_fail() -> None:
    s = _fan()
    s.start("fetch")
    with pytest.raises(ValueError, match="must be expanded"):
        s.finish("fetch", True)
    assert s.finish("fetch", False) == ["write"]  # e.g. its items were not a list
    with pytest.raises(ValueError, match=r"is failed, not running"):
        s.expand("fetch", [1])
    with pytest.raises(ValueError, match="has not completed"):
        s.fanout_result("other", {})


def test_expand_twice_and_finish_child_via_finish() -> None:
    s = _fan()
    kids = s.expand("fetch", [1])
    with pytest.raises(ValueError, match="already expanded"):
        s.expand("fetch", [1])
    s.start(kids[0])
    with pytest.raises(ValueError, match="use finish_child"):
        s.finish(kids[0], True)


# --- critical path -----------------------------------------------------------


def test_critical_path_hand_made() -> None:
    #  fetch 0-2 ─┐
    #  plan  0-1 ─┼─> merge 3-5 ─> report 5-9
    #  lint  0-8 (independent, long but finishes before report)
    #  search 1-3 after plan ─┘
    timing = {
        "plan": (0.0, 1.0),
        "fetch": (0.0, 2.0),
        "search": (1.0, 3.0),
        "merge": (3.0, 5.0),
        "report": (5.0, 9.0),
        "lint": (0.0, 8.0),
    }
    deps = {
        "search": {"plan"},
        "merge": {"fetch", "search", "plan"},
        "report": {"merge"},
        "lint": set(),
    }
    chain, makespan = critical_path(timing, deps)
    assert chain == ["plan", "search", "merge", "report"]
    assert makespan == 9.0


def test_critical_path_edges() -> None:
    assert critical_path({}, {}) == ([], 0.0)
    assert critical_path({"a": (2.0, 5.0)}, {}) == (["a"], 3.0)
    # a dependency that never ran is ignored
    assert critical_path({"b": (1.0, 4.0)}, {"b": {"a"}}) == (["b"], 3.0)


# --- module hygiene ----------------------------------------------------------


def test_graph_imports_only_errors_msgspec_and_stdlib() -> None:
    tree = ast.parse(Path(graph_mod.__file__).read_text())
    for node in ast.walk(tree):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module]
        for m in mods:
            top = m.split(".")[0]
            assert m == "agentrt.errors" or top == "msgspec" or top in sys.stdlib_module_names, m
            assert top not in {"asyncio", "subprocess", "os", "socket", "multiprocessing"}, m


def test_public_api_is_exported() -> None:
    for name in graph_mod.__all__:
        assert hasattr(graph_mod, name), name
    assert msgspec.structs.fields(Node)[0].name == "id"
