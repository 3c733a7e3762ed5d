#!/usr/bin/env python3
"""A local SMTP sink for the notifier's e-mail test (crates/duress-receiver/tests/notify.rs).

    smtp_sink.py PORT

Listens on 127.0.0.1:PORT with aiosmtpd (plain SMTP, as a local relay), prints "ready", then
one JSON line per message received: {"mail_from", "rcpt_tos", "data"} (data: the raw message).
Runs until its standard input closes.
"""
import json
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }), flush=True)
        return "250 OK"


def main():
    port = int(sys.argv[1])
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    done = threading.Event()

    def wait_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
