#!/usr/bin/env python3
"""A local SMTP sink for the notifier's e-mail test (crates/duress-receiver/tests/notify.rs).

    smtp_sink.py PORT [starttls|tls CERT_PEM KEY_PEM]

Listens on 127.0.0.1:PORT with aiosmtpd (plain SMTP, as a local relay; or with `starttls`,
requiring STARTTLS before MAIL; or with `tls`, implicit TLS from the first byte), prints
"ready", then one JSON line per message received: {"mail_from", "rcpt_tos", "data", "tls"}
(data: the raw message; tls: whether the session was encrypted). Runs until its standard
input closes.
"""
import json
import ssl
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        }), flush=True)
        return "250 OK"


def main():
    port = int(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "none"
    kwargs = {}
    if mode in ("starttls", "tls"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
        if mode == "starttls":
            kwargs = {"tls_context": context, "require_starttls": True}
        else:
            kwargs = {"ssl_context": context}
    elif mode != "none":
        sys.exit(f"unknown mode {mode!r}")
    controller = Controller(Sink(), hostname="127.0.0.1", port=port, **kwargs)
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
