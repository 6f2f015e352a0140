"""An MCP client over HTTP/3 that is not ours: aioquic's QUIC and HTTP/3.

Usage: h3_client.py HOST PORT CA_FILE

Initializes a session-era session, sends notifications/initialized and calls the builtin's
echo tool, all over one QUIC connection, then prints one JSON object: the statuses, the
session id and the echoed text.
"""

import asyncio
import json
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.streams = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            stream = self.streams.get(getattr(ev, "stream_id", None))
            if stream is None:
                continue
            if isinstance(ev, HeadersReceived):
                stream["headers"].update({k.decode(): v.decode() for k, v in ev.headers})
            elif isinstance(ev, DataReceived):
                stream["body"] += ev.data
            if getattr(ev, "stream_ended", False) and not stream["done"].done():
                stream["done"].set_result(None)

    async def request(self, authority, headers, body):
        stream_id = self._quic.get_next_available_stream_id()
        self.streams[stream_id] = {
            "headers": {},
            "body": b"",
            "done": asyncio.get_running_loop().create_future(),
        }
        head = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", b"/mcp"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ] + [(k.encode(), v.encode()) for k, v in headers.items()]
        data = json.dumps(body).encode()
        self.h3.send_headers(stream_id=stream_id, headers=head)
        self.h3.send_data(stream_id=stream_id, data=data, end_stream=True)
        self.transmit()
        stream = self.streams[stream_id]
        await asyncio.wait_for(stream["done"], 10)
        return stream["headers"], stream["body"].decode()


def answer_of(headers, text, request_id):
    """The JSON-RPC answer: the JSON body, or the SSE event that carries it."""
    if headers.get("content-type", "").startswith("application/json"):
        return json.loads(text)
    for line in text.splitlines():
        # The priming event's data is empty.
        if line.startswith("data:") and line[5:].strip():
            msg = json.loads(line[5:].strip())
            if msg.get("id") == request_id:
                return msg
    return None


async def main(host, port, ca_file):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(ca_file)
    authority = f"localhost:{port}"
    out = {}
    async with connect(host, port, configuration=config, create_protocol=Client) as client:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "aioquic", "version": "0"}}}
        headers, text = await client.request(authority, {}, init)
        out["initialize_status"] = headers.get(":status")
        out["protocol_version"] = (answer_of(headers, text, 0) or {}).get("result", {}).get(
            "protocolVersion")
        sid = headers.get("mcp-session-id")
        out["session"] = sid
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        headers, _ = await client.request(authority, {"mcp-session-id": sid}, note)
        out["initialized_status"] = headers.get(":status")
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "hello from aioquic"}}}
        headers, text = await client.request(authority, {"mcp-session-id": sid}, call)
        out["call_status"] = headers.get(":status")
        answer = answer_of(headers, text, 1) or {}
        out["echo"] = answer.get("result", {}).get("content", [{}])[0].get("text")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
