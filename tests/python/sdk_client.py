"""Drives shardgate with the official Python MCP SDK: initialize, list tools, call tools, close.

Usage: sdk_client.py URL MODE [TOOL ARGS_JSON EXPECTED_TEXT]

MODE is legacy or auto. Without a tool, runs the builtin upstream's checks (echo, counter,
test_simple_text); with one, lists tools, calls TOOL with ARGS_JSON and checks that the first
text content contains EXPECTED_TEXT. Prints `ok <mode> <negotiated protocol version>`.
"""

import asyncio
import json
import sys

from mcp import Client


async def builtin_checks(client: Client) -> None:
    names = [t.name for t in (await client.list_tools()).tools]
    for expected in ("echo", "counter", "test_simple_text"):
        assert expected in names, f"{expected} missing from {names}"

    echoed = await client.call_tool("echo", {"text": "hello through shardgate"})
    assert not echoed.is_error, echoed
    assert echoed.content[0].text == "hello through shardgate", echoed

    first = await client.call_tool("counter", {})
    second = await client.call_tool("counter", {})
    a, b = int(first.content[0].text), int(second.content[0].text)
    assert b == a + 1, (a, b)

    simple = await client.call_tool("test_simple_text", {})
    assert simple.content[0].text, simple


async def tool_check(client: Client, tool: str, args: dict, expected: str) -> None:
    names = [t.name for t in (await client.list_tools()).tools]
    assert tool in names, f"{tool} missing from {names}"
    result = await client.call_tool(tool, args)
    assert not result.is_error, result
    text = result.content[0].text
    assert expected in text, (expected, text)


async def main(url: str, mode: str, rest: list[str]) -> None:
    async with Client(url, mode=mode) as client:
        if rest:
            await tool_check(client, rest[0], json.loads(rest[1]), rest[2])
        else:
            await builtin_checks(client)
        version = client.protocol_version
    print(f"ok {mode} {version}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
