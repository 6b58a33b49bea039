"""Property tests for :mod:`agentrt.graph`.

The contracts: escaping round-trips and a whole-string reference returns the
value at its path unchanged; ``validate`` returns an order where every task
follows its dependencies, or names a real cycle; the ready set never offers a
task before all of its dependencies succeeded, and a failure under
``continue`` skips exactly its transitive dependents; a fan-out completes
exactly once, as its quorum says; the critical path of an as-soon-as-possible
schedule spans the whole run.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrt.graph import Graph, GraphError, GraphState, critical_path, find_refs, resolve

PROPS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(NAMES, children, max_size=4),
    max_leaves=12,
)


# --- references ----------------------------------------------------------------


@PROPS
@given(st.text())
def test_escaped_text_round_trips(text: str) -> None:
    escaped = text.replace("${", "$${")
    assert resolve(escaped, {}) == text
    assert find_refs(escaped) == set()


@PROPS
@given(VALUES, st.data())
def test_whole_reference_returns_the_value_at_its_path(value: Any, data: st.DataObject) -> None:
    ref, cur = "${up", value
    while True:
        if isinstance(cur, list) and cur and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(cur) - 1))
            ref, cur = f"{ref}[{i}]", cur[i]
        elif isinstance(cur, dict) and cur and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(cur)))
            ref, cur = f"{ref}.{key}", cur[key]
        else:
            break
    ref += "}"
    out = resolve({"x": [ref]}, {"up": value})
    assert out == {"x": [cur]}
    assert type(out["x"][0]) is type(cur)
    assert find_refs({"x": [ref]}) == {"up"}
    if isinstance(cur, list | dict) and cur:
        assert out["x"][0] is not cur  # a copy


@PROPS
@given(st.text(alphabet=st.characters(exclude_characters="$")), st.text(), st.text())
def test_embedded_reference_is_interpolated(value: str, before: str, after: str) -> None:
    before, after = before.replace("$", ""), after.replace("$", "")
    assert resolve(f"{before}${{v}}{after}", {"v": value}) == before + value + after
    assert resolve(f"{before}${{item}}{after}", {}, item=value) == before + value + after


# --- random DAGs ----------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 12) -> dict[str, list[str]]:
    """node -> its dependencies (acyclic), in a shuffled insertion order."""
    n = draw(st.integers(1, max_nodes))
    names = [f"n{i}" for i in range(n)]
    deps = {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        for i, name in enumerate(names)
    }
    order = draw(st.permutations(names))
    return {name: deps[name] for name in order}


def _build(dag: dict[str, list[str]], data: st.DataObject, on_error: Any) -> Graph:
    g = Graph(on_error=on_error)
    for name, deps in dag.items():
        # each dependency goes through `after` or a reference in args
        refs = [d for d in deps if data.draw(st.booleans())]
        after = [d for d in deps if d not in refs]
        g.add(name, "agent", after=after, args={"in": [f"x ${{{d}.out}}" for d in refs]})
    return g


def _upstream(dag: dict[str, list[str]], node: str) -> set[str]:
    seen: set[str] = set()
    stack = list(dag[node])
    while stack:
        d = stack.pop()
        if d not in seen:
            seen.add(d)
            stack.extend(dag[d])
    return seen


@PROPS
@given(dags(), st.data())
def test_validate_orders_dependencies_first(dag: dict[str, list[str]], data: st.DataObject) -> None:
    order = _build(dag, data, "fail_fast").validate()
    assert sorted(order) == sorted(dag)
    pos = {n: i for i, n in enumerate(order)}
    for name, deps in dag.items():
        assert all(pos[d] < pos[name] for d in deps)


@PROPS
@given(dags(), st.data())
def test_a_back_edge_is_reported_as_a_real_cycle(
    dag: dict[str, list[str]], data: st.DataObject
) -> None:
    # add an edge from some node to one of its (transitive) dependents
    pairs = [(n, d) for n in dag for d in dag if n in _upstream(dag, d) or n == d]
    lo, hi = data.draw(st.sampled_from(pairs))
    dag = {k: list(v) for k, v in dag.items()}
    dag[lo].append(hi)  # lo now waits on hi, which waits on lo
    g = _build(dag, data, "fail_fast")
    with pytest.raises(GraphError) as info:
        g.validate()
    msg = info.value.message
    assert msg.startswith("cycle: ")
    cycle = msg.removeprefix("cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1] and len(set(cycle[:-1])) == len(cycle) - 1
    for up, down in itertools.pairwise(cycle):
        assert up in dag[down], (up, down, dag)


@PROPS
@given(dags(), st.data(), st.sampled_from(["continue", "fail_fast", "mixed"]))
def test_ready_never_precedes_dependencies(
    dag: dict[str, list[str]], data: st.DataObject, policy: str
) -> None:
    g = Graph(on_error="continue" if policy == "continue" else "fail_fast")
    for name, deps in dag.items():
        on_error = (
            data.draw(st.sampled_from(["continue", "fail_fast"])) if policy == "mixed" else None
        )
        g.add(name, "agent", after=deps, on_error=on_error)
    state = GraphState(g)
    started: set[str] = set()
    finished: dict[str, bool] = {}
    while not state.done:
        ready = state.ready()
        for r in ready:
            assert r not in started
            assert all(finished.get(d) is True for d in dag[r]), (r, finished)
        running = state.running()
        assert ready or running
        if ready and (not running or data.draw(st.booleans())):
            nid = data.draw(st.sampled_from(ready))
            state.start(nid)
            started.add(nid)
        else:
            nid = data.draw(st.sampled_from(running))
            ok = data.draw(st.booleans())
            skipped = state.finish(nid, ok)
            finished[nid] = ok
            assert not set(skipped) & started
            if not ok and g.policy(nid) == "continue":
                assert set(skipped) <= set(state.dependents(nid))
            if ok:
                assert skipped == []
    for name in dag:
        status = state.status(name)
        assert (status in ("ok", "failed")) == (name in started)
        if status == "skipped":
            assert name not in started
            if policy == "continue":
                # skipped exactly when something upstream failed
                assert any(finished.get(u) is False for u in _upstream(dag, name))
        elif policy == "continue" and status == "pending":
            raise AssertionError("done with a pending node")
    if policy == "continue":
        for name in dag:
            if any(finished.get(u) is False for u in _upstream(dag, name)):
                assert state.status(name) == "skipped"
            else:
                assert name in started


# --- fan-out ----------------------------------------------------------------------


@PROPS
@given(st.integers(0, 8), st.data())
def test_fanout_completes_once_as_the_quorum_says(n: int, data: st.DataObject) -> None:
    k = data.draw(st.none() | st.integers(1, n + 1))
    g = Graph(on_error="continue")
    g.add("src", "a")
    g.add("fan", "a", args={"x": "${item}"}, for_each="${src}", min_success=k)
    g.add("sink", "a", args={"all": "${fan}"})
    state = GraphState(g)
    state.start("src")
    state.finish("src", True)
    kids = state.expand("fan", list(range(n)))
    if k is not None and k > n:
        assert kids == [] and state.status("fan") == "failed"
        assert state.status("sink") == "skipped"
        return
    completions: list[bool] = []
    oks: list[str] = []
    cancelled: set[str] = set()
    while not state.done:
        ready = [c for c in state.ready() if c in kids]
        running = [c for c in state.running() if c in kids]
        if ready and (not running or data.draw(st.booleans())):
            state.start(data.draw(st.sampled_from(ready)))
            continue
        if not running:
            break  # only "sink" is left
        child = data.draw(st.sampled_from(running))
        ok = child not in cancelled and data.draw(st.booleans())
        was_complete = state.status("fan") in ("ok", "failed")
        progress = state.finish_child(child, ok)
        if ok and not was_complete:
            oks.append(child)
        if progress.completed:
            completions.append(bool(progress.ok))
            cancelled.update(progress.cancel)
            assert set(progress.cancel) <= set(running)
        else:
            assert progress.cancel == []
    if n == 0 and k is None:
        completions.append(state.status("fan") == "ok")  # completed inside expand()
    assert len(completions) == 1
    fan_ok = completions[0]
    assert state.status("fan") == ("ok" if fan_ok else "failed")
    if k is None:
        assert fan_ok == (len(oks) == n)
    else:
        assert fan_ok == (len(oks) >= k)
        if fan_ok:
            assert len(oks) == k
    if fan_ok:
        got = state.fanout_result("fan", {c: c for c in kids})
        assert got == [c for c in kids if c in oks]
        assert state.ready() == ["sink"]
    else:
        assert state.status("sink") == "skipped"


# --- critical path ------------------------------------------------------------------


@PROPS
@given(dags(), st.data())
def test_critical_path_spans_an_asap_schedule(
    dag: dict[str, list[str]], data: st.DataObject
) -> None:
    duration = {n: float(data.draw(st.integers(1, 20))) for n in dag}
    timing: dict[str, tuple[float, float]] = {}
    remaining = dict(dag)
    while remaining:
        for name, deps in list(remaining.items()):
            if all(d in timing for d in deps):
                start = max((timing[d][1] for d in deps), default=0.0)
                timing[name] = (start, start + duration[name])
                del remaining[name]
    chain, makespan = critical_path(timing, {n: set(d) for n, d in dag.items()})
    assert makespan == max(f for _, f in timing.values())
    assert timing[chain[-1]][1] == makespan
    assert timing[chain[0]][0] == 0.0
    for up, down in itertools.pairwise(chain):
        assert up in dag[down]
        assert timing[up][1] == timing[down][0]  # no slack along the chain
    assert sum(duration[n] for n in chain) == makespan
