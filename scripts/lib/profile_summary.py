#!/usr/bin/env python3
"""Groups folded perf stacks (inferno-collapse-perf output on stdin) into the parts of the
SFU's forwarding path and prints each part's share of the samples.

A stack inside the kernel's UDP send (which on loopback also delivers the datagram to the
receiving socket) or receive counts for that. Otherwise the frames are read from the leaf
up, and the first one that names a known part decides: the allocator, memory copies,
aws-lc (SRTP/DTLS crypto), str0m (with its DTLS and ICE crates), our code, tokio/mio, the
kernel. Inlined std helpers (Option, Vec, hashbrown...) count for whoever called them.
"""
import sys

WHOLE_STACK = [
    ("UDP send (kernel; on loopback it also delivers to the receiver)", ("sendto", "sendmsg", "sendmmsg")),
    ("UDP receive (kernel)", ("recvfrom", "recvmsg", "recvmmsg")),
]
BY_FRAME = [
    ("allocator (malloc/free/realloc)", ("malloc", "_int_free", "unlink_chunk", "calloc", "realloc", "cfree", "__libc_free")),
    ("memory copies (memmove/memcpy/memset)", ("memmove", "memcpy", "memset")),
    ("SRTP/DTLS crypto (aws-lc)", ("aws_lc",)),
    ("str0m (packetizing, RTCP, ICE, DTLS, timeouts)", ("str0m", "dimpl::", "is::agent", "str0m_")),
    ("privatehub-media's own code", ("privatehub_media",)),
    ("tokio, mio, epoll", ("tokio::", "mio::", "epoll")),
    ("kernel, other (scheduling, wake-ups, softirq)", ("_[k]",)),
]


def classify(stack):
    for name, markers in WHOLE_STACK:
        if any(marker in stack for marker in markers):
            return name
    for frame in reversed(stack.split(";")):
        for name, markers in BY_FRAME:
            if any(marker in frame for marker in markers):
                return name
    return "everything else"


def main():
    totals = {}
    all_samples = 0
    for line in sys.stdin:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        all_samples += samples
        name = classify(stack)
        totals[name] = totals.get(name, 0) + samples
    for name, samples in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"{100 * samples / max(all_samples, 1):5.1f} %  {name}")


if __name__ == "__main__":
    main()
