"""WHEP test player built on aiortc, used as an independent peer.

Offers recvonly audio + video to a WHEP endpoint, decodes what arrives and
counts frames until --frames video frames were decoded or --timeout expires.
Only loopback is used: no STUN/TURN servers, and the only host candidate
offered is 127.0.0.1. The full offer is POSTed after ICE gathering.

stdout: one JSON object per line (events); stderr: diagnostics.
Exit codes: 0 got the frames, 2 HTTP error, 3 refused (not 201), 4 timeout.
"""

import argparse
import asyncio
import json
import os
import sys
from urllib.parse import urljoin

import aiohttp
import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

# Offer only a loopback host candidate (aioice skips 127.0.0.1 by default).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def emit(**event):
    print(json.dumps(event), flush=True)


def log(msg):
    print(f"whep_play: {msg}", file=sys.stderr, flush=True)


class Counter:
    def __init__(self, want):
        self.want, self.video, self.audio = want, 0, 0
        self.width = self.height = None
        self.done = asyncio.Event()
        self.tasks = []

    def line(self):
        emit(event="frames", video=self.video, audio=self.audio, width=self.width, height=self.height)

    async def consume(self, track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video += 1
                    self.width, self.height = frame.width, frame.height
                    if self.video >= self.want:
                        self.done.set()
                else:
                    self.audio += 1
        except MediaStreamError:
            log(f"{track.kind} track ended")


async def run(args):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        return await play(args, pc)
    finally:
        pc.remove_all_listeners("connectionstatechange")  # no "closed" line
        await pc.close()


async def play(args, pc):
    counter = Counter(args.frames)
    deadline = asyncio.get_running_loop().time() + args.timeout

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            emit(event="connected")
        else:
            emit(event="connection_state", state=pc.connectionState)

    @pc.on("track")
    def on_track(track):
        log(f"got {track.kind} track")
        counter.tasks.append(asyncio.ensure_future(counter.consume(track)))

    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())  # waits for gathering

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.timeout),
                                     connector=aiohttp.TCPConnector(ssl=not args.insecure)) as http:
        try:
            async with http.post(args.url, data=pc.localDescription.sdp.encode(),
                                 headers={**headers, "Content-Type": "application/sdp"}) as resp:
                body = await resp.text(errors="replace")
                if resp.status != 201:
                    emit(event="refused", status=resp.status,
                         content_type=resp.headers.get("Content-Type"), body=body[:500])
                    return 3
                loc = resp.headers.get("Location")
                location = urljoin(args.url, loc) if loc else None
                emit(event="playing", status=201, location=location,
                     etag=resp.headers.get("ETag"), link=resp.headers.getall("Link", []))
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            emit(event="error", error=str(e))
            return 2
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

        code = 0
        try:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait_for(counter.done.wait(), remaining)
            counter.line()
        except asyncio.TimeoutError:
            counter.line()
            emit(event="timeout")
            code = 4
        if args.no_delete:
            os._exit(code)  # vanish without DELETE or DTLS close
        for t in counter.tasks:
            t.cancel()
        if location:
            try:
                async with http.delete(location, headers=headers) as resp:
                    emit(event="deleted", status=resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                log(f"DELETE failed: {e}")
                emit(event="deleted", status=None)
    return code


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--insecure", action="store_true",
                   help="accept any TLS certificate (a test's self-signed nginx front)")
    p.add_argument("--token")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--no-delete", action="store_true")
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
