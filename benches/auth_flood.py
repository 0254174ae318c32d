#!/usr/bin/env python3
"""Failed SASL/PLAIN logins as fast as THREADS connections can make them, against the Kafka
listener at ADDR, for SECONDS: each connection sends SaslHandshake v1 (PLAIN) and
SaslAuthenticate v0 with a wrong password, reads the answer and closes. With SOURCES above 1,
each login comes from the next of that many loopback addresses (127.1.0.0 onwards), as a flood
from many machines would, so no one address reaches the broker's per-address limit. Prints
the logins attempted and those the broker answered (a throttled address is closed at accept
instead). With USER "tls:", the login is a TLS handshake instead, which the client abandons
once it has the broker's certificate (it trusts no CA): the broker has done its whole part,
key exchange and signature, for nothing.

    python3 benches/auth_flood.py 127.0.0.1:19093 8 10 [USER | tls:] [SOURCES]
"""
import socket
import ssl
import struct
import sys
import threading
import time


def request(api_key, version, correlation, body):
    client = b"flood"
    header = struct.pack(">hhih", api_key, version, correlation, len(client)) + client
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def read_frame(sock):
    size = b""
    while len(size) < 4:
        chunk = sock.recv(4 - len(size))
        if not chunk:
            return None
        size += chunk
    (length,) = struct.unpack(">i", size)
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def attempt(host, port, user, source):
    """One failed login from `source` (None: the system's choice); True when the broker
    answered the authentication."""
    bind = (source, 0) if source else None
    with socket.create_connection((host, port), timeout=5, source_address=bind) as sock:
        if user == "tls:":
            return abandoned_handshake(sock)
        mechanism = b"PLAIN"
        sock.sendall(request(17, 1, 1, struct.pack(">h", len(mechanism)) + mechanism))
        if read_frame(sock) is None:
            return False
        token = b"\0" + user.encode() + b"\0wrong-password"
        sock.sendall(request(36, 0, 2, struct.pack(">i", len(token)) + token))
        return read_frame(sock) is not None


# Verifies against an empty store: every certificate is refused after the broker sent it.
DISTRUSTFUL = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def abandoned_handshake(sock):
    """True when the broker went through the handshake (the refusal is the client's)."""
    try:
        DISTRUSTFUL.wrap_socket(sock, server_hostname="localhost")
    except ssl.SSLCertVerificationError:
        return True
    except (ssl.SSLError, OSError):
        return False
    return False


def main():
    addr, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    user = sys.argv[4] if len(sys.argv) > 4 else "nobody"
    sources = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    host, port = addr.rsplit(":", 1)
    deadline = time.time() + seconds
    counts = {"attempted": 0, "answered": 0}
    next_source = [0]
    lock = threading.Lock()

    def loop():
        while time.time() < deadline:
            source = None
            if sources > 1:
                with lock:
                    k = next_source[0] % sources
                    next_source[0] += 1
                source = f"127.1.{k >> 8}.{k & 255}"
            try:
                answered = attempt(host, int(port), user, source)
            except OSError:
                answered = False
            with lock:
                counts["attempted"] += 1
                counts["answered"] += int(answered)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(f"attempted {counts['attempted']} answered {counts['answered']}")


if __name__ == "__main__":
    main()
