#!/usr/bin/env python3
"""Serve funadjson result lines to a PLC as Modbus TCP registers.

The bridge reads the JSON lines of funadjson (schema version 2) from standard
input or from a tcpserversink. It serves the newest result, or in handshake
mode a queue of results, as a block of 16-bit registers laid out the way
machine-vision cameras expose inspection results. plugin/SCHEMA.md contains
the register map. Run it with the project's virtual environment, where
scripts/setup.sh installs the pinned pymodbus 3.16.1 (its SimDevice API,
which the bridge uses, is marked experimental there):

    .venv/bin/python pipelines/modbus_bridge.py --connect 127.0.0.1:5000 \\
        --listen 127.0.0.1:5020 --handshake

It serves requests for every unit id and stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import math
import signal
import sys
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

log = logging.getLogger("modbus_bridge")

SCHEMA_VERSION = 2

# Register addresses (0-based, as in the Modbus PDU).
STATUS = 0
INSPECTION_ID = 1
VERDICT = 2
SCORE = 3
THRESHOLD = 4
MODEL_VERSION = 5  # two registers, high word first
SEQUENCE = 7  # two registers, high word first
REGION_COUNT = 9
REGIONS_DROPPED = 10
PROCESSING_TIME_US = 11  # two registers, high word first
QUEUED = 13
RESULTS_DROPPED = 14
INVALID_LINES = 15
REGIONS = 16  # REGION_SLOTS blocks of REGION_WORDS registers
REGION_SLOTS = 4
REGION_WORDS = 5  # x, y, width, height, peak score
BLOCK_SIZE = REGIONS + REGION_SLOTS * REGION_WORDS
ACKNOWLEDGE = 100

# Bits of the status register.
STATUS_VALID = 1 << 0
STATUS_PASS = 1 << 1
STATUS_FAIL = 1 << 2
STATUS_NOT_SCORED = 1 << 3
STATUS_CONNECTED = 1 << 4
STATUS_RESULTS_DROPPED = 1 << 5
STATUS_MORE_QUEUED = 1 << 6

VERDICT_CODES = {"OK": 1, "NG": 2, "no-model": 3, "not-scored": 4}

# Scores and thresholds in [0, 1] are sent as integers from 0 to SCORE_SCALE;
# NO_VALUE stands for a null score or threshold.
SCORE_SCALE = 10000
NO_VALUE = 0xFFFF

# Function codes that the bridge serves: read holding and input registers,
# write single and multiple registers.
SUPPORTED_FUNCTIONS = {3, 4, 6, 16}

# Invalid lines are logged one by one up to this count, then every 100th.
LOGGED_INVALID_LINES = 10


class InvalidLine(ValueError):
    """A line that is not a funadjson result of the supported schema."""


def saturate(value: int, maximum: int = 0xFFFF) -> int:
    return max(0, min(int(value), maximum))


def scaled(value) -> int:
    if value is None:
        return NO_VALUE
    return saturate(round(float(value) * SCORE_SCALE), SCORE_SCALE)


def words32(value: int) -> list[int]:
    """Split an unsigned 32-bit value into two registers, high word first."""
    value &= 0xFFFFFFFF
    return [value >> 16, value & 0xFFFF]


@dataclass
class Result:
    """The fields of one line that the registers carry."""

    verdict: str
    sequence: int
    score: float | None
    threshold: float | None
    model_version: int
    processing_time_ns: int
    regions: list[dict]
    regions_dropped: int


def parse_line(text: str) -> Result:
    """Parse one JSON line, raising InvalidLine with the reason."""
    try:
        line = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidLine(f"not JSON: {err}") from None
    if not isinstance(line, dict):
        raise InvalidLine(f"not a JSON object but {type(line).__name__}")
    version = line.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidLine(
            f"schema_version {version!r} is not {SCHEMA_VERSION}; "
            "use a bridge and a funadjson of the same release"
        )
    verdict = line.get("verdict")
    if verdict not in VERDICT_CODES:
        raise InvalidLine(f"verdict {verdict!r} is not one of {sorted(VERDICT_CODES)}")

    def integer(name, default=None):
        value = line.get(name, default)
        if value is None:
            value = default
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidLine(f"{name} {value!r} is not a non-negative integer")
        return value

    def number(name):
        value = line.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise InvalidLine(f"{name} {value!r} is not a number or null")
        # Python's json module reads NaN and Infinity, which no register can hold.
        if value is not None and not math.isfinite(value):
            raise InvalidLine(f"{name} {value!r} is not a finite number")
        return value

    regions = line.get("regions", [])
    if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
        raise InvalidLine("regions is not an array of objects")
    for region in regions:
        for name in ("x", "y", "width", "height"):
            if not isinstance(region.get(name), int):
                raise InvalidLine(f"region {name} {region.get(name)!r} is not an integer")
        peak = region.get("peak_score")
        if not isinstance(peak, (int, float)) or isinstance(peak, bool) or not math.isfinite(peak):
            raise InvalidLine(f"region peak_score {peak!r} is not a finite number")
    return Result(
        verdict=verdict,
        sequence=integer("sequence"),
        score=number("score"),
        threshold=number("threshold"),
        model_version=integer("model_version", 0),
        processing_time_ns=integer("processing_time_ns", 0),
        regions=regions,
        regions_dropped=integer("regions_dropped", 0),
    )


def result_words(result: Result) -> list[int]:
    """Registers VERDICT to the end of the block for one result."""
    words = [0] * BLOCK_SIZE
    words[VERDICT] = VERDICT_CODES[result.verdict]
    words[SCORE] = scaled(result.score)
    words[THRESHOLD] = scaled(result.threshold)
    words[MODEL_VERSION:MODEL_VERSION + 2] = words32(min(result.model_version, 0xFFFFFFFF))
    words[SEQUENCE:SEQUENCE + 2] = words32(result.sequence)
    words[REGION_COUNT] = saturate(len(result.regions))
    words[REGIONS_DROPPED] = saturate(result.regions_dropped)
    micros = min(result.processing_time_ns // 1000, 0xFFFFFFFF)
    words[PROCESSING_TIME_US:PROCESSING_TIME_US + 2] = words32(micros)
    for slot, region in enumerate(result.regions[:REGION_SLOTS]):
        base = REGIONS + slot * REGION_WORDS
        words[base:base + REGION_WORDS] = [
            saturate(region["x"]),
            saturate(region["y"]),
            saturate(region["width"]),
            saturate(region["height"]),
            scaled(region["peak_score"]),
        ]
    return words[VERDICT:]


@dataclass
class Bridge:
    """State behind the registers: the shown result, the queue and the counters."""

    handshake: bool
    queue_size: int
    connected: bool = False
    inspection_id: int = 0
    current: Result | None = None
    valid: bool = False
    queue: collections.deque = field(default_factory=collections.deque)
    results_dropped: int = 0
    invalid_lines: int = 0

    def show(self, result: Result) -> None:
        self.current = result
        self.valid = True
        # Inspection ids run from 1 to 65535 and wrap to 1; 0 means none yet.
        self.inspection_id = self.inspection_id % 0xFFFF + 1
        log.debug("showing inspection %d: line %d, %s", self.inspection_id,
                  result.sequence, result.verdict)

    def add(self, result: Result) -> None:
        if not self.handshake or not self.valid:
            self.show(result)
        elif len(self.queue) < self.queue_size:
            self.queue.append(result)
        else:
            self.results_dropped += 1
            log.warning("result queue full (%d results): dropped line %d; "
                        "acknowledge faster or raise --queue", self.queue_size, result.sequence)

    def acknowledge(self, value: int) -> None:
        if not self.handshake:
            return
        if not self.valid or value != self.inspection_id:
            log.warning("acknowledge %d does not match the shown inspection id %d; ignored",
                        value, self.inspection_id if self.valid else 0)
            return
        if self.queue:
            self.show(self.queue.popleft())
        else:
            self.valid = False

    def reject_line(self, number: int, reason: str) -> None:
        self.invalid_lines += 1
        if self.invalid_lines <= LOGGED_INVALID_LINES or self.invalid_lines % 100 == 0:
            log.warning("invalid line %d (%d invalid so far): %s", number,
                        self.invalid_lines, reason)

    def registers(self) -> list[int]:
        status = 0
        if self.valid:
            status |= STATUS_VALID
        if self.current is not None:
            verdict = self.current.verdict
            status |= {"OK": STATUS_PASS, "NG": STATUS_FAIL}.get(verdict, STATUS_NOT_SCORED)
        if self.connected:
            status |= STATUS_CONNECTED
        if self.results_dropped:
            status |= STATUS_RESULTS_DROPPED
        if self.queue:
            status |= STATUS_MORE_QUEUED
        words = [0] * BLOCK_SIZE
        if self.current is not None:
            words[VERDICT:] = result_words(self.current)
        words[STATUS] = status
        words[INSPECTION_ID] = self.inspection_id
        words[QUEUED] = saturate(len(self.queue))
        words[RESULTS_DROPPED] = saturate(self.results_dropped)
        words[INVALID_LINES] = saturate(self.invalid_lines)
        return words


async def read_lines(bridge: Bridge, readline, source: str) -> None:
    """Add the results of the lines that the coroutine function readline returns."""
    number = 0
    while line := await readline():
        number += 1
        text = line.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        try:
            bridge.add(parse_line(text))
        except InvalidLine as err:
            bridge.reject_line(number, f"{source}: {err}")
    log.info("%s ended after %d lines", source, number)


async def read_stdin(bridge: Bridge) -> None:
    # A thread reads, because asyncio's pipe transport rejects regular files.
    loop = asyncio.get_running_loop()

    async def readline():
        return await loop.run_in_executor(None, sys.stdin.buffer.readline)

    bridge.connected = True
    log.info("reading result lines from standard input")
    try:
        await read_lines(bridge, readline, "standard input")
    finally:
        bridge.connected = False


async def read_tcp(bridge: Bridge, host: str, port: int) -> None:
    """Read lines from a tcpserversink, reconnecting with a growing delay."""
    delay = 0.2
    failures = 0
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=16 * 1024 * 1024)
        except OSError as err:
            failures += 1
            if failures == 1 or failures % 60 == 0:
                log.warning("cannot connect to %s:%d (attempt %d): %s; retrying",
                            host, port, failures, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        log.info("connected to %s:%d after %d failed attempts", host, port, failures)
        failures, delay = 0, 0.2
        bridge.connected = True
        try:
            await read_lines(bridge, reader.readline, f"{host}:{port}")
        except OSError as err:
            log.warning("connection to %s:%d failed: %s", host, port, err)
        finally:
            bridge.connected = False
            writer.close()
        log.info("disconnected from %s:%d; reconnecting", host, port)


def make_device(bridge: Bridge) -> SimDevice:
    async def on_request(function_code, start_address, address, count, registers, values):
        if function_code not in SUPPORTED_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        if values is None:
            registers[STATUS - start_address:BLOCK_SIZE - start_address] = bridge.registers()
            return None
        # pymodbus has already rejected writes to the read-only result block.
        if address == ACKNOWLEDGE:
            bridge.acknowledge(values[0])
        return None

    simdata = [
        SimData(0, count=BLOCK_SIZE, values=0, datatype=DataType.REGISTERS, readonly=True),
        SimData(ACKNOWLEDGE, values=0, datatype=DataType.REGISTERS),
    ]
    # Device id 0 serves requests for every unit id, as a camera on Modbus TCP does.
    return SimDevice(0, simdata=simdata, action=on_request)


def parse_address(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{option} {text!r} is not HOST:PORT, for example 127.0.0.1:5020")
    return host, int(port)


async def serve(args) -> None:
    bridge = Bridge(handshake=args.handshake, queue_size=args.queue)
    host, port = args.listen
    server = ModbusTcpServer(make_device(bridge), address=(host, port))
    if args.connect:
        reader = asyncio.create_task(read_tcp(bridge, *args.connect))
    else:
        reader = asyncio.create_task(read_stdin(bridge))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.create_task(server.serve_forever())
    stopping = asyncio.create_task(stop.wait())
    log.info("serving Modbus TCP on %s:%d (%s mode)", host, port,
             "handshake" if args.handshake else "latest-result")
    # The registers stay readable after standard input ends, so only a
    # failed reader, a failed server or a signal ends the bridge.
    waiting = {serving, stopping, reader}
    while True:
        done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in done if task is not stopping and task.exception()]
        if failed:
            log.error("%s failed: %r", "line reader" if failed[0] is reader else "Modbus server",
                      failed[0].exception())
            sys.exit(1)
        if stopping in done or serving in done:
            break
    log.info("stopping")
    reader.cancel()
    await server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connect", metavar="HOST:PORT",
                        type=lambda t: parse_address(t, "--connect"),
                        help="read lines from this tcpserversink; default: standard input")
    parser.add_argument("--listen", metavar="HOST:PORT", default=("127.0.0.1", 5020),
                        type=lambda t: parse_address(t, "--listen"),
                        help="address of the Modbus TCP server (default 127.0.0.1:5020; "
                             "port 502 needs root)")
    parser.add_argument("--handshake", action="store_true",
                        help="queue results until the PLC acknowledges each one by writing "
                             "its inspection id to holding register 100")
    parser.add_argument("--queue", type=int, default=64, metavar="N",
                        help="results held in handshake mode before new ones are dropped "
                             "(default 64)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args()
    if args.queue < 1:
        parser.error(f"--queue {args.queue} must be at least 1")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
