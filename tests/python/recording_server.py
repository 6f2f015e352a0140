"""An MCP server built with the official Python SDK that records what reaches it.

Usage: recording_server.py PORT HEADERS_LOG

Serves Streamable HTTP on 127.0.0.1:PORT/mcp with a `whoami` tool (echoes a text) and a
`count` tool, and appends the method and headers of every HTTP request it receives (and a POST's
body, as JSON if it parses), one JSON object per line, to HEADERS_LOG, so tests can assert on
exactly what an upstream was sent.
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


def replaying(body, receive):
    """An ASGI `receive` that gives `body` (already read) first, then what `receive` gives."""
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def recording(app):
    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            entry = {"method": scope["method"], "headers": headers}
            if scope["method"] == "POST":
                # The whole body first (JSON if it parses), then handed to the app as it came.
                body, more = b"", True
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                try:
                    entry["body"] = json.loads(body)
                except ValueError:
                    entry["body"] = body.decode("utf-8", "replace")
                receive = replaying(body, receive)
            with open(LOG, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
        await app(scope, receive, send)

    return wrapped


app = server.streamable_http_app()
uvicorn.run(recording(app), host="127.0.0.1", port=PORT, log_level="warning", lifespan="on")
