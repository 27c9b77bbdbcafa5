"""Drives the live page in Debian's headless Chromium with PyPI's playwright, for
tests/integration/live.rs. usage: python3 live_page.py URL KEY METER SCREENSHOT

The test and this script talk in lines. This script prints `ready` once the page is live and
watching METER; the test publishes a reading and answers `published <epoch ms> <ts>`; this
script waits for the reading to show and prints `reading <ms from publish to display>`. The
test opens an alert and answers `alert <meter>`; this script waits for its row, clicks
Acknowledge, waits for the new state and prints `acked <alert id>`. Then it drops the
connection, waits for the page to reconnect by itself and prints `reconnected`; the test
publishes again and answers `published …`; the reading shows: `reading …`. A screenshot goes
to SCREENSHOT (also on failure), then `done`.

The browser is Debian's /usr/bin/chromium: playwright downloads none.
"""

import sys
import time

from playwright.sync_api import sync_playwright

url, key, meter, screenshot = sys.argv[1:5]


def say(line):
    print(line, flush=True)


def next_line():
    line = sys.stdin.readline()
    if not line:
        raise RuntimeError("the test closed its end")
    return line.split()


def await_reading(page):
    word, published_ms, ts = next_line()
    if word != "published":
        raise RuntimeError("expected published, got " + word)
    page.wait_for_function(
        """([m, t]) => {
            const el = document.getElementById("latest");
            return el.dataset.meter === m && el.dataset.ts === t;
        }""",
        arg=[meter, ts],
        timeout=10000,
        polling=10,
    )
    say("reading %d" % (time.time() * 1000 - int(published_ms)))


def main():
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        ok = False
        try:
            page.goto(url)
            page.fill("#key", key)
            page.click("#key-form button[type=submit]")
            page.wait_for_selector("#connection.state-on", timeout=10000)
            page.wait_for_function(
                "() => document.getElementById('stat-online').textContent !== '–'", timeout=10000
            )
            page.select_option("#watch-kind", "meter")
            page.fill("#watch-id", meter)
            page.click("#watch-form button[type=submit]")
            page.wait_for_function(
                "() => document.getElementById('latest').textContent.startsWith('waiting for meter')"
            )
            # The subscription is on the wire once the server answered it; give it a round trip.
            page.wait_for_timeout(300)
            say("ready")
            await_reading(page)

            word, alert_meter = next_line()
            if word != "alert":
                raise RuntimeError("expected alert, got " + word)
            row = page.locator("#alerts tbody tr[data-state=open]", has_text=alert_meter)
            row.wait_for(timeout=15000)
            alert_id = row.get_attribute("data-alert-id")
            row.locator("button.ack").click()
            page.wait_for_selector(
                '#alerts tbody tr[data-alert-id="%s"][data-state=acknowledged]' % alert_id,
                timeout=10000,
            )
            say("acked " + alert_id)

            # A flaky network: the connection drops; the page reconnects by itself.
            page.evaluate("() => state.ws.close()")
            page.wait_for_selector("#connection.state-off, #connection.state-wait", timeout=5000)
            page.wait_for_selector("#connection.state-on", timeout=15000)
            page.wait_for_timeout(300)
            say("reconnected")
            await_reading(page)
            chart = page.evaluate("() => state.points.length")
            if chart < 2:
                raise RuntimeError("the chart has %d points" % chart)
            if errors:
                raise RuntimeError("page errors: " + "; ".join(errors))
            page.screenshot(path=screenshot, full_page=True)
            ok = True
            say("done")
        except Exception as e:  # reported to the test as a line, with the screenshot kept
            try:
                page.screenshot(path=screenshot, full_page=True)
            except Exception:
                pass
            detail = str(e).replace("\n", " ")
            if errors:
                detail += " page errors: " + "; ".join(errors)
            say("error " + detail)
        finally:
            browser.close()
    return 0 if ok else 1


sys.exit(main())
