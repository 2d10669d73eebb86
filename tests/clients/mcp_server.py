"""A stdio MCP server with one tool, `sim-query`, for Claude Code in the client tier.

Claude Code defers MCP tools behind its ToolSearch tool; the simulator fills ToolSearch's query
with "sim-query", which finds this tool by name. Newline-delimited JSON-RPC 2.0, as MCP's stdio
transport is: initialize, tools/list and tools/call are answered, notifications are not.
"""
from __future__ import annotations

import json
import sys

TOOL = {"name": "sim-query", "description": "sim query: prints a marker",
        "inputSchema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}


def result(method: str, params: dict) -> dict | None:
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                "serverInfo": {"name": "sim", "version": "1"}}
    if method == "tools/list":
        return {"tools": [TOOL]}
    if method == "tools/call":
        return {"content": [{"type": "text", "text": "MARKER-MCP-2468"}]}
    return None


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg:
            continue  # a notification
        answer = result(msg.get("method", ""), msg.get("params") or {})
        reply = {"jsonrpc": "2.0", "id": msg["id"]}
        reply.update({"result": answer} if answer is not None else
                     {"error": {"code": -32601, "message": f"method not found: {msg.get('method')}"}})
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
