#!/usr/bin/env python3
"""Parses DSMR P1 telegram fixtures with PyPI's dsmr-parser, independently of meterstack.

Usage: python3 scripts/dsmr-crosscheck.py DIR

Every DIR/*.txt is one telegram. The part of its file name before the first '-' names the
dsmr-parser telegram specification: v2_2, v3, v4, v5 or v5_BELGIUM (Fluvius e-MUCS); CRCs are
checked for the specifications that have them. Prints one JSON object, keyed by file name:

  {"ok": true, "timestamp": RFC 3339 UTC | null, "import_wh": f, "export_wh": f | null,
   "power_w": f | null, "voltage_v": f | null, "current_a": f | null,
   "gas_m3": f | null, "gas_ts": RFC 3339 UTC | null}
  {"ok": false, "error": "...", "crc": true | false}

The fields follow the rules of core/src/wire/dsmr.rs (meterstack_core::wire::dsmr), computed
from dsmr-parser's objects: import/export = tariff 1 + tariff 2 in Wh (at least one import
tariff), power = (1.7.0 - 2.7.0) in W, current = sum of the phase currents, gas from the M-Bus
channel with an m3 reading whose device type is gas (3) or unknown, preferring a declared gas
meter, then the lowest channel. Units, where given, must be the expected ones and registers
must be finite and non-negative. Exit status: 0 after printing, 2 on a usage or setup error
(dsmr-parser missing, unknown file name prefix).
"""

import copy
import json
import logging
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

try:
    from dsmr_parser import telegram_specifications
    from dsmr_parser.exceptions import InvalidChecksumError
    from dsmr_parser.parsers import TelegramParser
except ImportError as err:  # pragma: no cover - setup error
    sys.stderr.write(
        f"dsmr-crosscheck: PyPI package dsmr-parser is not installed ({err}); "
        "install it with: python3 -m pip install dsmr-parser\n"
    )
    sys.exit(2)

SPECS = {
    "v2_2": telegram_specifications.V2_2,
    "v3": telegram_specifications.V3,
    "v4": telegram_specifications.V4,
    "v5": telegram_specifications.V5,
    "v5_BELGIUM": telegram_specifications.BELGIUM_FLUVIUS,
}

GAS_DEVICE_TYPE = 3


class Rejected(Exception):
    """The telegram parsed, but breaks one of meterstack's rules."""


def rfc3339(value):
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise Rejected(f"not an aware datetime: {value!r}")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity(obj, name, unit):
    """The Decimal value of a CosemObject, checked like meterstack does; None if obj is None."""
    if obj is None:
        return None
    value = obj.value
    if obj.unit is not None and obj.unit != unit:
        raise Rejected(f"{name}: unit {obj.unit!r}, expected {unit}")
    if not isinstance(value, Decimal) or not value.is_finite():
        raise Rejected(f"{name}: not a number: {value!r}")
    if value < 0:
        raise Rejected(f"{name}: negative value {value}")
    return value


def field(telegram, name):
    return getattr(telegram, name, None)


def total(values, scale):
    present = [v for v in values if v is not None]
    if not present:
        return None
    return float(sum(present) * scale)


def gas(telegram):
    """(m3, capture time) from the M-Bus devices dsmr-parser found, or (None, None)."""
    best = None
    for device in getattr(telegram, "MBUS_DEVICES", []):
        reading = None
        for name in ("MBUS_METER_READING", "HOURLY_GAS_METER_READING", "GAS_METER_READING"):
            reading = getattr(device, name, None)
            if reading is not None:
                break
        if reading is None or reading.unit != "m3":
            continue
        kind = None
        for name in ("MBUS_DEVICE_TYPE", "DEVICE_TYPE"):
            obj = getattr(device, name, None)
            if obj is not None and obj.value not in (None, ""):
                kind = int(obj.value)
                break
        if kind is not None and kind != GAS_DEVICE_TYPE:
            continue
        key = (kind != GAS_DEVICE_TYPE, device.channel_id)
        if best is None or key < best[0]:
            best = (key, reading)
    if best is None:
        return None, None
    reading = best[1]
    value = reading.value
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise Rejected(f"gas: bad value {value!r}")
    return float(value), rfc3339(reading.datetime)


def crosscheck(path, spec):
    data = path.read_bytes().decode("ascii")
    parser = TelegramParser(copy.deepcopy(spec), apply_checksum_validation=True)
    try:
        telegram = parser.parse(data, throw_ex=True)
    except InvalidChecksumError as err:
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "crc": True}
    except Exception as err:  # dsmr-parser raises ParseError and plain exceptions alike
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "crc": False}

    try:
        stamp = field(telegram, "P1_MESSAGE_TIMESTAMP")
        if stamp is not None and stamp.value is None:
            raise Rejected("P1_MESSAGE_TIMESTAMP: unreadable timestamp")
        imports = [
            quantity(field(telegram, n), n, "kWh")
            for n in ("ELECTRICITY_USED_TARIFF_1", "ELECTRICITY_USED_TARIFF_2")
        ]
        if all(v is None for v in imports):
            raise Rejected("no import register (1-0:1.8.1 / 1-0:1.8.2)")
        exports = [
            quantity(field(telegram, n), n, "kWh")
            for n in ("ELECTRICITY_DELIVERED_TARIFF_1", "ELECTRICITY_DELIVERED_TARIFF_2")
        ]
        power_in = quantity(field(telegram, "CURRENT_ELECTRICITY_USAGE"), "1.7.0", "kW")
        power_out = quantity(field(telegram, "CURRENT_ELECTRICITY_DELIVERY"), "2.7.0", "kW")
        voltages = [
            quantity(field(telegram, f"INSTANTANEOUS_VOLTAGE_L{i}"), f"voltage L{i}", "V")
            for i in (1, 2, 3)
        ]
        currents = [
            quantity(field(telegram, f"INSTANTANEOUS_CURRENT_L{i}"), f"current L{i}", "A")
            for i in (1, 2, 3)
        ]
        gas_m3, gas_ts = gas(telegram)
        power_w = None
        if power_in is not None:
            power_w = float((power_in - (power_out or Decimal(0))) * 1000)
        return {
            "ok": True,
            "timestamp": rfc3339(stamp.value) if stamp is not None else None,
            "import_wh": total(imports, 1000),
            "export_wh": total(exports, 1000),
            "power_w": power_w,
            "voltage_v": float(voltages[0]) if voltages[0] is not None else None,
            "current_a": total(currents, 1),
            "gas_m3": gas_m3,
            "gas_ts": gas_ts,
        }
    except Rejected as err:
        return {"ok": False, "error": str(err), "crc": False}


def main(argv):
    if len(argv) != 2 or not Path(argv[1]).is_dir():
        sys.stderr.write("usage: dsmr-crosscheck.py DIR  (DIR holds one telegram per *.txt)\n")
        return 2
    logging.disable(logging.CRITICAL)  # dsmr-parser logs every line it cannot parse
    results = {}
    for path in sorted(Path(argv[1]).glob("*.txt")):
        prefix = path.name.split("-", 1)[0]
        spec = SPECS.get(prefix)
        if spec is None:
            sys.stderr.write(
                f"dsmr-crosscheck: {path.name}: unknown specification prefix {prefix!r}; "
                f"expected one of {', '.join(SPECS)}\n"
            )
            return 2
        results[path.name] = crosscheck(path, spec)
    json.dump(results, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
