"""A bare stdio MCP server (plain JSON-RPC lines, no SDK) for tests of what misbehaving
processes do: it can be slow to start, and it can write a line as long as asked.

Arguments: `--pid-dir DIR` writes this process's id to DIR/<pid>, and appends to that file the
params of every `initialize` it receives (one JSON object a line) before answering it;
`--start-delay SECONDS` waits that long before answering `initialize`. Tools: `big` (answers a
text of `bytes` characters), `echo`.
"""

import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--pid-dir")
parser.add_argument("--start-delay", type=float, default=0.0)
args = parser.parse_args()
PID_FILE = os.path.join(args.pid_dir, str(os.getpid())) if args.pid_dir else None
if PID_FILE:
    open(PID_FILE, "w").close()

TOOLS = [
    {"name": "big", "inputSchema": {"type": "object", "properties": {"bytes": {"type": "integer"}}}},
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
]


def answer(msg_id, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}) + "\n")
    sys.stdout.flush()


def text(s):
    return {"content": [{"type": "text", "text": s}]}


for line in sys.stdin:
    msg = json.loads(line)
    method, msg_id = msg.get("method"), msg.get("id")
    if msg_id is None:
        continue
    params = msg.get("params") or {}
    if method == "initialize":
        if PID_FILE:
            with open(PID_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(params) + "\n")
        time.sleep(args.start_delay)
        answer(msg_id, {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "raw-stdio", "version": "1"},
        })
    elif method == "tools/list":
        answer(msg_id, {"tools": TOOLS})
    elif method == "tools/call":
        arguments = params.get("arguments") or {}
        if params.get("name") == "big":
            answer(msg_id, text("x" * int(arguments.get("bytes", 0))))
        else:
            answer(msg_id, text(str(arguments.get("text", ""))))
    else:
        answer(msg_id, {})
