#!/usr/bin/env python3
"""TCP probes for make bench, run from a peer network namespace.

  tcp-probe.py throughput HOST PORT MIB   -> MB/s sending MIB MiB (the
                                             server reads until EOF)
  tcp-probe.py request HOST PORT N        -> median ms of N requests: connect,
                                             one line each way, until the
                                             server closes (retrying while the
                                             server is not listening yet)
"""
import socket
import statistics
import sys
import time


def throughput(host, port, mib):
    buf = b"\0" * (1 << 20)
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=120)
    for _ in range(mib):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    return f"{mib / (time.monotonic() - t0):.1f}"


def request(host, port):
    while True:
        t0 = time.monotonic()
        try:
            s = socket.create_connection((host, port), timeout=30)
        except ConnectionRefusedError:
            time.sleep(0.01)
            continue
        s.sendall(b"ping\n")
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
        s.close()
        return (time.monotonic() - t0) * 1000


def main():
    mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "throughput":
        print(throughput(host, port, n))
    else:
        print(f"{statistics.median(request(host, port) for _ in range(n)):.1f}")


main()
