#!/usr/bin/env python3
"""Writes the DNS fuzz target's seeds into fuzz/seeds/dns/: real answers from a local dnsmasq.

A dnsmasq on 127.0.0.1:5353 answers A, AAAA and CNAME-chained questions from its own records;
each query and its answer are wrapped in the IPv4 or IPv6 and UDP headers the raw socket
captures (the host at 10.0.0.2 asking the resolver 10.0.0.1, port 53) and written as frames of
the target's input (see fuzz/src/dns.rs): `[control][length u16 LE][packet]`, bit 0 of control
set for packets the host sent, bits 1-5 the seconds before it, bit 6 for the second network
namespace, bit 7 for a query from a namespace the host does not own. Besides the real pairs: an
unsolicited answer, an answer whose id is off by one, one that comes too late, one received in
another namespace than its query's, one to a query from a namespace any user can make, and a
bare response as the whole input.

Run it again only when the frame format changes: `python3 fuzz/examples/dns_seeds.py`.
"""

import os
import random
import socket
import struct
import subprocess
import tempfile
import time

PORT = 5353
SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "seeds", "dns")

RECORDS = [
    "--host-record=api.example.com,192.0.2.10,2001:db8::10",
    "--host-record=db.example.com,10.20.0.5,fd00:20::5",
    "--cname=www.example.com,edge.example.com",
    "--cname=edge.example.com,api.example.com",
]


def query(qid, name, qtype):
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return header + qname + struct.pack(">HH", qtype, 1)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(">%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp(sport, dport, payload):
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(src, dst, payload):
    head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    head = head[:10] + struct.pack(">H", checksum(head)) + head[12:]
    return head + payload


def ipv6(src, dst, payload):
    return struct.pack(">IHBB16s16s", 6 << 28, len(payload), 17, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


def frame(outgoing, secs, packet, other_ns=False, untrusted_ns=False):
    control = (secs << 1) | int(outgoing) | (int(other_ns) << 6) | (int(untrusted_ns) << 7)
    return bytes([control]) + struct.pack("<H", len(packet)) + packet


def ask(sock, qid, name, qtype):
    q = query(qid, name, qtype)
    sock.sendto(q, ("127.0.0.1", PORT))
    answer, _ = sock.recvfrom(4096)
    return q, answer


def main():
    os.makedirs(SEEDS, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        dnsmasq = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-daemon",
             "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={PORT}",
             f"--pid-file={tmp}/pid", "--log-facility=-", "--conf-file=/dev/null"] + RECORDS,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(2)
            rng = random.Random(10)
            for name, qtype, v6 in [("api.example.com", 1, False), ("api.example.com", 28, True),
                                    ("www.example.com", 1, False), ("db.example.com", 28, False),
                                    ("nx.example.com", 1, False)]:
                qid = rng.randrange(1 << 16)
                q, a = ask(sock, qid, name, qtype)
                if v6:
                    host, resolver = "fd00::2", "fd00::1"
                    wrap = ipv6
                else:
                    host, resolver = "10.0.0.2", "10.0.0.1"
                    wrap = ipv4
                sport = 40000 + rng.randrange(20000)
                out = wrap(host, resolver, udp(sport, 53, q))
                back = wrap(resolver, host, udp(53, sport, a))
                label = f"{name.split('.')[0]}-{ {1: 'a', 28: 'aaaa'}[qtype] }"
                write(f"{label}.bin", frame(True, 0, out) + frame(False, 0, back))
                if name == "www.example.com":
                    # Unsolicited, then off by one id, then an answer after its query timed out.
                    write("www-unsolicited.bin", frame(False, 0, back))
                    forged = a[:1] + bytes([a[1] ^ 1]) + a[2:]
                    write("www-wrong-id.bin",
                          frame(True, 0, out) + frame(False, 0, wrap(resolver, host, udp(53, sport, forged))))
                    write("www-late.bin", frame(True, 0, out) + frame(False, 30, back))
                    write("www-other-namespace.bin",
                          frame(True, 0, out) + frame(False, 0, back, other_ns=True))
                    write("www-untrusted-namespace.bin",
                          frame(True, 0, out, other_ns=True, untrusted_ns=True)
                          + frame(False, 0, back, other_ns=True))
                    write("www-payload.bin", a)
        finally:
            dnsmasq.terminate()
            dnsmasq.wait()


def write(name, data):
    with open(os.path.join(SEEDS, name), "wb") as f:
        f.write(data)
    print(f"dns seed {name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
