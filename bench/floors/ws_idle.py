"""Floor for B6: what uvicorn alone costs per open websocket.

An ASGI app that accepts every websocket (with the subprotocol asked for) and then only awaits
``receive`` until the peer leaves: no GraphQL, no database, no task of its own. Served by uvicorn
the way inboxd is (uvloop, httptools, ``ws_per_message_deflate=False``), with the websocket
implementation chosen by ``--ws``. Its RSS growth per connection is the least any websocket
server on uvicorn can cost; B6 reports inboxd's figure beside it.

    python bench/floors/ws_idle.py --port 8103 --ws websockets-sansio
"""

from __future__ import annotations

import argparse
from typing import Any

Scope = dict[str, Any]


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    protocols = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None})
    while (await receive())["type"] != "websocket.disconnect":
        pass


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--ws", default="websockets-sansio", help="uvicorn's websocket implementation"
    )
    args = parser.parse_args(argv)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws=args.ws,
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
