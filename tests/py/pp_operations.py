"""
photon-pump 0.9.5.2 (asyncio) against a node: python pp_operations.py PORT

Run in a subprocess with C{PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python}:
photon-pump ships protobuf code generated for an old runtime.  Prints one
JSON line C{{"ok": ..., "checks": [...], "failures": [...]}} and exits 0
only when every check passed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import photonpump  # type: ignore[import-untyped]
from photonpump import messages as msg  # type: ignore[import-untyped]

checks: list[str] = []
failures: list[dict[str, str]] = []


def check(name: str, condition: bool, detail: object = None) -> None:
    checks.append(name)
    if not condition:
        failures.append({"name": name, "detail": repr(detail)})


async def main(port: int) -> None:
    stream = f"pp-{uuid.uuid4()}"
    async with photonpump.connect(host="127.0.0.1", port=port) as conn:
        rtt = await conn.ping()
        check("ping", rtt >= 0, rtt)
        for i in range(5):
            await conn.publish_event(stream, "pp-event", body={"i": i})
        event = await conn.get_event(stream, 2)
        check("get_event", event.json() == {"i": 2}, event)
        events = await conn.get(stream, max_count=10)
        check("get stream", [e.json()["i"] for e in events] == [0, 1, 2, 3, 4], events)
        backward = await conn.get(stream, direction=msg.StreamDirection.Backward, from_event=4)
        check("get backward", [e.json()["i"] for e in backward] == [4, 3, 2, 1, 0], backward)
        seen = [e.json()["i"] async for e in conn.iter(stream, batch_size=2)]
        check("iter stream", seen == [0, 1, 2, 3, 4], seen)
        published = await conn.publish(
            stream,
            [msg.NewEvent("pp-batch", data={"i": 5}), msg.NewEvent("pp-batch", data={"i": 6})],
        )
        check("publish batch", published.last_event_number == 6, published)

        # Volatile subscription, then a catch-up subscription from event 3.
        live = await conn.subscribe_to(stream)
        catchup = await conn.subscribe_to(stream, start_from=3)
        await conn.publish_event(stream, "pp-event", body={"i": 7})
        got = await asyncio.wait_for(live.events.anext(), 5)
        check("volatile subscription", got.json() == {"i": 7}, got)
        caught = []
        for _ in range(5):
            e = await asyncio.wait_for(catchup.events.anext(), 5)
            caught.append(e.json()["i"])
        check("catch-up subscription", caught == [3, 4, 5, 6, 7], caught)

    async with photonpump.connect(
        host="127.0.0.1", port=port, username="admin", password="changeit"
    ) as admin:
        page = await admin.get_all(max_count=4096)
        check("read $all as admin", any(e.stream == stream for e in page), len(page))
        group = "pp-group"
        await admin.create_subscription(group, stream, start_from=0)
        sub = await admin.connect_subscription(group, stream)
        received = []
        for _ in range(8):
            e = await asyncio.wait_for(sub.events.anext(), 5)
            received.append(e.json()["i"])
            await sub.ack(e)
        check("persistent subscription", received == list(range(8)), received)

    async with photonpump.connect(
        host="127.0.0.1", port=port, username="admin", password="wrong"
    ) as bad:
        try:
            await asyncio.wait_for(bad.publish_event(stream, "x", body={}), 5)
        except Exception as e:  # NotAuthenticated surfaces as a conversation error
            check(
                "wrong password rejected",
                "uthenticat" in repr(e) or "uthenticat" in type(e).__name__,
                e,
            )
        else:
            check("wrong password rejected", False, "write succeeded")


def run() -> None:
    port = int(sys.argv[1])
    try:
        asyncio.run(asyncio.wait_for(main(port), 60))
    except BaseException as e:  # report, never hang
        failures.append({"name": "exception", "detail": repr(e)})
    print(json.dumps({"ok": not failures, "checks": checks, "failures": failures}))
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    run()
