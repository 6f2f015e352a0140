"""A stdio MCP server built with the official Python SDK, for process-level tests.

Tools: `pid` (this process's id), `nap` (sleeps for `seconds`, then answers), `echo`.
"""

import asyncio
import os

from mcp.server import MCPServer

server = MCPServer(name="stdio-test-upstream", version="1.0.0")


@server.tool()
def pid() -> str:
    """This server process's id."""
    return str(os.getpid())


@server.tool()
async def nap(seconds: float = 5.0) -> str:
    """Sleeps, then answers."""
    await asyncio.sleep(seconds)
    return "rested"


@server.tool()
def echo(text: str) -> str:
    """Echoes the text."""
    return text


server.run("stdio")
