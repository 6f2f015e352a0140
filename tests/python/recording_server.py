"""An MCP server built with the official Python SDK that records what reaches it.

Usage: recording_server.py PORT HEADERS_LOG

Serves Streamable HTTP on 127.0.0.1:PORT/mcp with a `whoami` tool (echoes a text) and a
`count` tool, and appends the headers of every HTTP request it receives, one JSON object per
line, to HEADERS_LOG, so tests can assert on exactly what an upstream was sent.
"""

import json
import sys

import uvicorn
from mcp.server import MCPServer

PORT = int(sys.argv[1])
LOG = sys.argv[2]

server = MCPServer(name="recording-upstream", version="1.0.0")
counter = {"n": 0}


@server.tool()
def whoami(text: str = "") -> str:
    """Echoes the text back."""
    return f"recorded: {text}"


@server.tool()
def count() -> str:
    """Counts calls, process-wide."""
    counter["n"] += 1
    return str(counter["n"])


def recording(app):
    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            with open(LOG, "a", encoding="utf-8") as log:
                log.write(json.dumps({"method": scope["method"], "headers": headers}) + "\n")
        await app(scope, receive, send)

    return wrapped


app = server.streamable_http_app()
uvicorn.run(recording(app), host="127.0.0.1", port=PORT, log_level="warning", lifespan="on")
