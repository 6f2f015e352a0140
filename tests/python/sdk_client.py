"""Drives shardgate with the official Python MCP SDK: initialize, list tools, call tools, close.

Usage: sdk_client.py URL MODE   (MODE: legacy | auto)
Prints one line `ok <mode> <negotiated protocol version>` on success; raises otherwise.
"""

import asyncio
import sys

from mcp import Client


async def main(url: str, mode: str) -> None:
    async with Client(url, mode=mode) as client:
        tools = await client.list_tools()
        names = [t.name for t in tools.tools]
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

        version = client.protocol_version
    print(f"ok {mode} {version}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
