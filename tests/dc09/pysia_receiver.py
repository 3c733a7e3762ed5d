"""A central station for crates/duress-receiver/tests/dc09.rs: pysiaalarm (PyPI, installed into
the project venv by scripts/install-deps) as a real SIA DC-09 TCP receiver, independent of our
encoder. It decodes (and decrypts) each frame, checks CRC, account and timestamp window, answers
ACK/NAK/DUH itself, and prints one JSON line per ACKed event on stdout.

usage: pysia_receiver.py PORT ACCOUNT [AES_KEY]
Prints "ready" once listening; runs until stdin closes (the test ends it).
"""

import asyncio
import json
import logging
import sys

from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient


async def main() -> None:
    port = int(sys.argv[1])
    account = sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 else None
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def on_event(event) -> None:
        print(
            json.dumps(
                {
                    "message_type": str(event.message_type.value),
                    "encrypted": bool(event.encrypted),
                    "account": event.account,
                    "sequence": event.sequence,
                    "receiver": event.receiver,
                    "line": event.line,
                    "code": event.code,
                    "event_qualifier": event.event_qualifier,
                    "event_type": event.event_type,
                    "partition": event.partition,
                    "ri": event.ri,
                    "x_data": event.x_data,
                    "timestamp": event.timestamp.isoformat() if event.timestamp else None,
                    "valid_message": event.valid_message,
                    # pysiaalarm's own valid_length reads the field as decimal (a bug that raises
                    # on hex digits): the length checked here by the standard's rule instead.
                    "length_ok": int(event.length, 16) == len(event.full_message),
                    "description": event.sia_code.description if event.sia_code else None,
                }
            ),
            flush=True,
        )

    client = SIAClient("127.0.0.1", port, [SIAAccount(account, key)], on_event)
    await client.async_start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    # Until the test closes our stdin (or dies): never outlives it.
    await loop.run_in_executor(None, sys.stdin.read)
    await client.async_stop()


asyncio.run(main())
