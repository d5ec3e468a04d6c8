"""Frameworks and tools people point at an OpenAI-compatible URL, against the real server
process: langchain-openai, openai-agents (its default Responses model), instructor, and the
`llm` CLI with `-o logprobs` (as a subprocess, the way people run it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import instructor
import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from .conftest import Stack


class Person(BaseModel):
    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def chat_model(stack: Stack, **kw: object) -> ChatOpenAI:
    return ChatOpenAI(base_url=stack.v1, api_key="sk-test", model="oai", max_retries=0, **kw)  # type: ignore[arg-type]


def test_langchain_invoke_and_stream(stack: Stack) -> None:
    """invoke returns the answer; stream yields it in pieces."""
    llm = chat_model(stack)
    assert llm.invoke("hello").content == "gpt-4o-mini heard: hello"
    assert "".join(str(c.content) for c in llm.stream("hello")) == "gpt-4o-mini heard: hello"


def test_langchain_bind_tools(stack: Stack) -> None:
    """bind_tools: the model's tool call comes back parsed."""
    message = chat_model(stack).bind_tools([get_weather]).invoke("Paris")
    assert message.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert message.tool_calls[0]["args"] == {"city": "Paris"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("policy", ["oai", "claude"])
def test_langchain_with_structured_output(stack: Stack, policy: str) -> None:
    """with_structured_output returns a validated pydantic object (OpenAI and Anthropic)."""
    llm = ChatOpenAI(base_url=stack.v1, api_key="sk", model=policy, max_retries=0)  # type: ignore[arg-type]
    person = llm.with_structured_output(Person).invoke("Ada")
    assert isinstance(person, Person) and "Ada" in person.name


def test_langchain_responses_api(stack: Stack) -> None:
    """use_responses_api=True goes through /v1/responses."""
    message = chat_model(stack, use_responses_api=True).invoke("hello")
    assert message.text == "gpt-4o-mini heard: hello"


async def test_openai_agents_with_a_function_tool(stack: Stack) -> None:
    """An openai-agents Agent on its default Responses model calls a tool and answers."""
    set_tracing_disabled(True)

    @function_tool
    def lookup(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=stack.v1, api_key="sk-test", max_retries=0)
    model = OpenAIResponsesModel(model="chat", openai_client=client)
    agent = Agent(name="weather", instructions="Use the tool.", model=model, tools=[lookup])
    result = await Runner.run(agent, "Lisbon")
    assert result.final_output == "The tool said: sunny in Lisbon"


def test_instructor_response_model(stack: Stack) -> None:
    """instructor (tools mode) returns a validated pydantic object."""
    client = instructor.from_openai(openai.OpenAI(base_url=stack.v1, api_key="sk", max_retries=0))
    person = client.chat.completions.create(
        model="chat", response_model=Person, messages=[{"role": "user", "content": "Grace"}]
    )
    assert isinstance(person, Person) and "Grace" in person.name


def test_llm_cli_completion_with_logprobs(stack: Stack, tmp_path: Path) -> None:
    """`llm -m <completion model> -o logprobs 2` against /v1/completions prints the answer."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: engine-text\n  model_name: oai\n  api_base: {stack.v1}\n  completion: true\n"
    )
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "sk-test"}
    llm = Path(sys.executable).with_name("llm")
    out = subprocess.run(
        [str(llm), "-m", "engine-text", "-o", "logprobs", "2", "-o", "max_tokens", "40", "hello"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "gpt-4o-mini heard: hello"
    logs = subprocess.run(
        [str(llm), "logs", "--json", "-n", "1"], capture_output=True, text=True, env=env, timeout=60
    )
    logged = json.loads(logs.stdout)[0]["response_json"]["logprobs"]  # what llm kept
    assert "".join(entry["text"] for entry in logged) == "gpt-4o-mini heard: hello"
    assert all(len(entry["top_logprobs"][0]) == 2 for entry in logged if entry["text"])
