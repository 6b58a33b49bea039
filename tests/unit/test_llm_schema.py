"""Tool schemas from signatures, and the three model APIs' call/answer shapes."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Annotated, Any, Literal, Optional, TypedDict

import msgspec
import pytest

from agentrt.llm import ArgumentsError, Toolbox, parse_calls, plan_tool, tool_def
from agentrt.llm.calls import prepare
from agentrt.llm.shapes import answer, encode_content, error_content


class Point(msgspec.Struct):
    x: int
    y: int = 0


@dataclasses.dataclass
class Box:
    width: float
    label: str = "box"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Opts(TypedDict):
    verbose: bool


def everything(
    name: str,
    count: int,
    ratio: float,
    flag: bool,
    words: list[str],
    scores: dict[str, int],
    pair: tuple[int, str],
    maybe: str | None = None,
    old_maybe: Optional[int] = None,  # noqa: UP045 - the spelling users still write
    mode: Literal["a", "b"] = "a",
    point: Point | None = None,
    box: Box | None = None,
    colour: Colour = Colour.RED,
    opts: Opts | None = None,
    small: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3,
) -> None:
    """Takes one of everything.

    Args:
        name: who
        count: how many, a description that
            runs over two lines
    """


def props(fn: Any) -> dict[str, Any]:
    return tool_def(fn).openai()["function"]["parameters"]["properties"]  # type: ignore[no-any-return]


def test_schema_types_users_write() -> None:
    p = props(everything)
    assert p["name"] == {"description": "who", "type": "string"}
    assert p["count"] == {
        "description": "how many, a description that runs over two lines",
        "type": "integer",
    }
    assert p["ratio"] == {"type": "number"}
    assert p["flag"] == {"type": "boolean"}
    assert p["words"] == {"type": "array", "items": {"type": "string"}}
    assert p["scores"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert p["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert p["maybe"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert p["old_maybe"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert p["mode"] == {"enum": ["a", "b"], "default": "a"}
    assert p["point"]["anyOf"][0] == {"$ref": "#/$defs/Point"}
    assert p["box"]["anyOf"][0] == {"$ref": "#/$defs/Box"}
    assert p["small"] == {"type": "integer", "minimum": 1, "maximum": 5, "default": 3}
    params = tool_def(everything).openai()["function"]["parameters"]
    assert params["required"] == ["name", "count", "ratio", "flag", "words", "scores", "pair"]
    assert params["additionalProperties"] is False
    defs = params["$defs"]
    assert defs["Point"]["required"] == ["x"]
    assert defs["Box"]["properties"]["label"] == {"type": "string", "default": "box"}
    assert defs["Colour"]["enum"] == ["blue", "red"]
    assert defs["Opts"]["properties"] == {"verbose": {"type": "boolean"}}
    assert tool_def(everything).description == "Takes one of everything."


def test_validation_uses_the_same_types_and_names_where_it_failed() -> None:
    d = tool_def(everything)
    base = {
        "name": "n",
        "count": 1,
        "ratio": 0.5,
        "flag": True,
        "words": [],
        "scores": {},
        "pair": [1, "a"],
    }
    got = d.validate(json.dumps({**base, "point": {"x": 2}, "box": {"width": 1}, "colour": "blue"}))
    assert got["point"] == Point(2, 0) and got["box"] == Box(1.0)
    assert got["colour"] is Colour.BLUE and got["pair"] == (1, "a") and got["small"] == 3
    assert d.validate({**base, "ratio": 1})["ratio"] == 1.0  # an int is a fine number
    cases = {
        "`$.count`": {**base, "count": "1"},
        "`$.small`": {**base, "small": 9},
        "`$.words[1]`": {**base, "words": ["a", 2]},
        "`$.point.x`": {**base, "point": {"x": "no"}},
        "`$.mode`": {**base, "mode": "c"},
        "unknown field `nope`": {**base, "nope": 1},
        "missing required field `flag`": {k: v for k, v in base.items() if k != "flag"},
    }
    for where, args in cases.items():
        with pytest.raises(ArgumentsError, match=where.replace("[", r"\[").replace("$", r"\$")):
            d.validate(json.dumps(args))
    with pytest.raises(ArgumentsError, match="not valid JSON"):
        d.validate('{"name": ')
    with pytest.raises(ArgumentsError, match="Expected `object`"):
        d.validate("[]")


def test_ctx_self_and_var_args_are_left_out_and_kwargs_opens_the_object() -> None:
    async def agent(ctx: Any, topic: str, *rest: int, **more: Any) -> None:
        """:param topic: the subject"""

    params = tool_def(agent, kind="agent").anthropic()["input_schema"]
    assert params["properties"] == {"topic": {"description": "the subject", "type": "string"}}
    assert "additionalProperties" not in params
    assert tool_def(agent).validate({"topic": "t", "other": 1}) == {"topic": "t"}

    class Agent:
        def summarize(self, text: str) -> str:
            """Summarize a text."""
            return text

    d = tool_def(Agent, method="summarize", kind="agent")
    assert (d.name, d.method, d.description) == ("summarize", "summarize", "Summarize a text.")
    assert d.responses()["parameters"]["required"] == ["text"]


def test_bad_tools_are_refused_with_the_reason() -> None:
    def positional(a: int, /) -> None: ...

    with pytest.raises(ValueError, match="positional-only"):
        tool_def(positional)
    with pytest.raises(ValueError, match="1-64 letters"):
        tool_def(everything, name="has space")

    def untyped_object(x: object) -> None: ...

    with pytest.raises(ValueError, match="no JSON Schema"):
        tool_def(untyped_object)


def test_toolbox_exports_each_shape_and_narrows() -> None:
    async def research(ctx: Any, topic: str) -> None: ...

    box = Toolbox([everything], agents={"research": research})
    assert [t["function"]["name"] for t in box.openai()] == ["everything", "research"]
    assert [t["name"] for t in box.responses()] == ["everything", "research"]
    assert box["research"].kind == "agent"
    assert box.for_shape("anthropic") == box.anthropic()
    assert list(box.only(["research"])) == ["research"]
    with pytest.raises(KeyError, match="no tool 'zz'"):
        box.only(["zz"])
    planner = plan_tool(box)
    assert planner.kind == "plan" and "everything, research" in planner.description
    step = planner.openai()["function"]["parameters"]["$defs"]["Step"]
    assert step["required"] == ["id", "tool"]


# --- shapes ------------------------------------------------------------------------

OPENAI_MSG = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
    ],
}
RESPONSES_OUTPUT = {
    "output": [
        {"type": "reasoning", "id": "r1", "summary": []},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "a",
            "arguments": "{}",
        },
        {"type": "message", "role": "assistant", "content": []},
        {
            "type": "function_call",
            "id": "fc_2",
            "call_id": "call_2",
            "name": "b",
            "arguments": '{"x":1}',
        },
    ]
}
ANTHROPIC_MSG = {
    "role": "assistant",
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "a", "input": {}},
        {"type": "tool_use", "id": "call_2", "name": "b", "input": {"x": 1}},
    ],
}


@pytest.mark.parametrize(
    ("given", "shape"),
    [
        (OPENAI_MSG, "openai"),
        (OPENAI_MSG["tool_calls"], "openai"),
        (RESPONSES_OUTPUT, "responses"),
        (RESPONSES_OUTPUT["output"], "responses"),
        (ANTHROPIC_MSG, "anthropic"),
        (ANTHROPIC_MSG["content"], "anthropic"),
    ],
)
def test_each_shape_round_trips(given: Any, shape: str) -> None:
    reqs = parse_calls(given)
    assert [(r.id, r.name, r.shape) for r in reqs] == [
        ("call_1", "a", shape),
        ("call_2", "b", shape),
    ]
    assert (
        json.loads(reqs[1].arguments)
        if isinstance(reqs[1].arguments, str)
        else (reqs[1].arguments) == {"x": 1}
    )
    ok, bad = answer(reqs[0], '{"v": 1}'), answer(reqs[1], error_content("E", "m"), is_error=True)
    if shape == "openai":
        assert ok == {"role": "tool", "tool_call_id": "call_1", "content": '{"v": 1}'}
    elif shape == "responses":
        assert ok == {"type": "function_call_output", "call_id": "call_1", "output": '{"v": 1}'}
    else:
        assert ok == {
            "type": "tool_result",
            "tool_use_id": "call_1",
            "content": '{"v": 1}',
            "is_error": False,
        }
        assert bad["is_error"] is True
    text = bad.get("content", bad.get("output"))
    assert json.loads(text) == {"error": {"type": "E", "message": "m"}}


def test_sdk_objects_and_turns_are_read_too() -> None:
    class Fn:
        def __init__(self, name: str, arguments: str) -> None:
            self.name, self.arguments = name, arguments

    class SdkCall:  # the shape of the OpenAI SDK's pydantic objects
        def model_dump(self) -> dict[str, Any]:
            return {"id": "c", "type": "function", "function": {"name": "a", "arguments": "{}"}}

    class Turn:
        tool_calls = [SdkCall()]

    assert [r.id for r in parse_calls([SdkCall()])] == ["c"]
    assert [r.id for r in parse_calls(Turn())] == ["c"]
    assert parse_calls({"role": "assistant", "content": "just text"}) == []


def test_malformed_calls_are_refused_naming_the_place() -> None:
    with pytest.raises(ValueError, match="different shapes"):
        parse_calls([OPENAI_MSG["tool_calls"][0], ANTHROPIC_MSG["content"][1]])
    with pytest.raises(ValueError, match=r"calls\[0\]: not a tool call"):
        parse_calls([{"type": "banana"}])
    with pytest.raises(ValueError, match=r"calls\[0\].id: expected a string"):
        parse_calls([{"type": "tool_use", "id": 5, "name": "a", "input": {}}])
    with pytest.raises(ValueError, match="longer than 256"):
        parse_calls([{"type": "tool_use", "id": "x" * 300, "name": "a", "input": {}}])
    with pytest.raises(ValueError, match="at most 1000"):
        prepare(
            [{"type": "tool_use", "id": str(i), "name": "a", "input": {}} for i in range(1001)],
            Toolbox(),
        )


def test_answers_encode_results_for_the_model() -> None:
    assert encode_content("plain text") == "plain text"
    assert encode_content({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert encode_content(Point(1, 2)) == '{"x":1,"y":2}'
    assert encode_content(object()).startswith("<object object")
    cut = encode_content("x" * 50, max_chars=10)
    assert cut.startswith("x" * 10) and "40 more characters cut" in cut
