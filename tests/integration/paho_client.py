"""A meter as paho-mqtt (an independent MQTT client) sees the broker, for the identity tests.

    paho_client.py --port P --client-id ID [--username U --password S]
                   [--cafile CA --cert CRT --key KEY] ACTION [ARGS]

ACTION:
  connect                      connect, report the CONNACK code
  publish TOPIC PAYLOAD        connect, publish at QoS 1, report whether it was acknowledged
  subscribe FILTER [N]         connect, subscribe at QoS 1, report the SUBACK and wait up to
                               --wait seconds for N messages (default 0)

Prints one JSON object: {"rc": int|null, "acked": bool, "subscribed": bool,
"disconnected": bool, "messages": [{"topic":…, "payload":…}]}.
"""

import argparse
import json
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--cafile")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--wait", type=float, default=3.0)
    p.add_argument("action", choices=["connect", "publish", "subscribe"])
    p.add_argument("args", nargs="*")
    a = p.parse_args()

    out = {"rc": None, "acked": False, "subscribed": False, "disconnected": False, "messages": []}
    connected = threading.Event()
    done = threading.Event()
    subscribed = threading.Event()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.client_id,
                    protocol=mqtt.MQTTv311, reconnect_on_failure=False)
    if a.username is not None:
        c.username_pw_set(a.username, a.password)
    if a.cafile:
        c.tls_set(ca_certs=a.cafile, certfile=a.cert, keyfile=a.key,
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)

    def on_connect(client, userdata, flags, reason_code, properties):
        out["rc"] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        connected.set()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        out["disconnected"] = True
        connected.set()
        subscribed.set()
        done.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        out["subscribed"] = all(not rc.is_failure for rc in reason_codes)
        print("SUBSCRIBED" if out["subscribed"] else "SUBSCRIBE-FAILED", file=sys.stderr, flush=True)
        subscribed.set()

    def on_message(client, userdata, msg):
        out["messages"].append({"topic": msg.topic, "payload": msg.payload.decode("utf-8", "replace")})

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    try:
        c.connect(a.host, a.port, keepalive=30)
    except (OSError, ssl.SSLError) as e:
        out["error"] = str(e)
        print(json.dumps(out))
        return 0
    c.loop_start()
    connected.wait(10)
    if out["rc"] == 0 and not out["disconnected"]:
        if a.action == "publish":
            info = c.publish(a.args[0], a.args[1], qos=1)
            deadline = time.time() + a.wait
            while time.time() < deadline and not info.is_published() and not out["disconnected"]:
                time.sleep(0.02)
            out["acked"] = info.is_published()
        elif a.action == "subscribe":
            want = int(a.args[1]) if len(a.args) > 1 else 0
            c.subscribe(a.args[0], qos=1)
            subscribed.wait(a.wait)
            deadline = time.time() + a.wait
            while time.time() < deadline and len(out["messages"]) < want and not out["disconnected"]:
                time.sleep(0.02)
        if not out["disconnected"]:
            c.disconnect()
    else:
        # Let a refused connection's disconnect arrive.
        time.sleep(0.2)
    c.loop_stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
