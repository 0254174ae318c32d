#!/usr/bin/env python3
"""Failed SASL/PLAIN logins as fast as THREADS connections can make them, against the Kafka
listener at ADDR, for SECONDS: each connection sends SaslHandshake v1 (PLAIN) and
SaslAuthenticate v0 with a wrong password, reads the answer and closes. Prints the logins
attempted and those the broker answered (a throttled address is closed at accept instead).

    python3 benches/auth_flood.py 127.0.0.1:19093 8 10 [USER]
"""
import socket
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


def attempt(host, port, user):
    """One failed login; True when the broker answered the authentication."""
    with socket.create_connection((host, port), timeout=5) as sock:
        mechanism = b"PLAIN"
        sock.sendall(request(17, 1, 1, struct.pack(">h", len(mechanism)) + mechanism))
        if read_frame(sock) is None:
            return False
        token = b"\0" + user.encode() + b"\0wrong-password"
        sock.sendall(request(36, 0, 2, struct.pack(">i", len(token)) + token))
        return read_frame(sock) is not None


def main():
    addr, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    user = sys.argv[4] if len(sys.argv) > 4 else "nobody"
    host, port = addr.rsplit(":", 1)
    deadline = time.time() + seconds
    counts = {"attempted": 0, "answered": 0}
    lock = threading.Lock()

    def loop():
        while time.time() < deadline:
            try:
                answered = attempt(host, int(port), user)
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
