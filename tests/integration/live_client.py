"""A live-feed client with the `websockets` package, for tests/integration/live.rs.

usage: live_client.py URL KEY METER COUNT TIMEOUT_S

Connects to URL (ws://…/api/v1/live) with `Authorization: Bearer KEY`, checks the welcome and a
ping/pong, subscribes to the readings of METER, prints `ready`, then reads until COUNT readings
arrived or TIMEOUT_S passed. Checks that the connection's sequence numbers run 1, 2, 3… with no
gap. Prints one JSON line per reading received: {"meter_id", "ts", "import_wh"}; then `done`.
"""

import asyncio
import json
import sys

import websockets


async def main(url, key, meter, count, timeout):
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {key}"},
        subprotocols=["meterstack.v1"],
    ) as ws:
        assert ws.subprotocol == "meterstack.v1", ws.subprotocol
        expected_seq = 1

        async def receive():
            nonlocal expected_seq
            m = json.loads(await ws.recv())
            assert m["seq"] == expected_seq, (m, expected_seq)
            expected_seq += 1
            return m

        welcome = await receive()
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"op": "ping", "id": "p1"}))
        pong = await receive()
        assert pong == {"seq": 2, "type": "pong", "id": "p1"}, pong
        await ws.send("not json")
        err = await receive()
        assert err["type"] == "error" and err["code"] == "bad_request", err
        await ws.send(json.dumps({"op": "subscribe", "channel": "readings", "meters": [meter]}))
        sub = await receive()
        assert sub["type"] == "subscribed" and sub["meters"] == [meter], sub
        print("ready", flush=True)

        readings = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(readings) < count:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                m = await asyncio.wait_for(receive(), left)
            except asyncio.TimeoutError:
                break
            assert m["type"] in ("reading", "lagged"), m
            assert m["type"] != "lagged", f"this client reads fast: {m}"
            d = m["data"]
            readings.append({"meter_id": d["meter_id"], "ts": d["ts"], "import_wh": d["import_wh"]})
        # Anything else still on its way (readings of other meters would show here).
        try:
            while True:
                m = await asyncio.wait_for(receive(), 1.0)
                if m["type"] == "reading":
                    d = m["data"]
                    readings.append({"meter_id": d["meter_id"], "ts": d["ts"], "import_wh": d["import_wh"]})
        except asyncio.TimeoutError:
            pass
        for r in readings:
            print(json.dumps(r), flush=True)
        print("done", flush=True)


if __name__ == "__main__":
    url, key, meter, count, timeout = sys.argv[1:6]
    asyncio.run(main(url, key, meter, int(count), float(timeout)))
