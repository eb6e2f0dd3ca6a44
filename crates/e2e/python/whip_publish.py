"""WHIP (RFC 9725) test publisher built on aiortc, used as an independent peer.

Sends a synthetic video track (moving bar, changing colours, binary frame
counter) and a 440 Hz sine audio track to a WHIP endpoint. Only loopback is
used: no STUN/TURN servers, and the only host candidate offered is 127.0.0.1.
The full offer is POSTed after ICE gathering (no trickle). SIGUSR1 pauses the
video (audio goes on) and resumes it, as an OBS scene without video would.

stdout: one JSON object per line (events); stderr: diagnostics.
Exit codes: 0 done, 2 HTTP error, 3 endpoint refused the offer (not 201).
"""

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from array import array
from fractions import Fraction
from urllib.parse import urljoin

import aiohttp
import aioice.ice
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

# Offer only a loopback host candidate (aioice skips 127.0.0.1 by default).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def emit(**event):
    print(json.dumps(event), flush=True)


def log(msg):
    print(f"whip_publish: {msg}", file=sys.stderr, flush=True)


class PatternTrack(MediaStreamTrack):
    """yuv420p frames: a bar moving across, chroma drifting, counter bits on top."""

    kind = "video"

    def __init__(self, width, height, fps, paint_clock=False):
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        # The top strip's 32 cells carry the wall clock (ms, mod 2^32) instead of the
        # frame counter, for a viewer to measure glass-to-glass delay from its pixels.
        self.paint_clock = paint_clock
        self.paused = False  # toggled by SIGUSR1: no frames while set
        self.count = 0
        self.start = None

    def toggle(self):
        self.paused = not self.paused
        log(f"video {'paused' if self.paused else 'resumed'} (SIGUSR1)")

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        else:
            await asyncio.sleep(max(0, self.start + self.count / self.fps - time.monotonic()))
        if self.paused:
            while self.paused:
                await asyncio.sleep(0.05)
            # The timestamps follow the wall clock across the pause.
            self.count = int((time.monotonic() - self.start) * self.fps)
        n, w, h = self.count, self.width, self.height
        frame = av.VideoFrame(w, h, "yuv420p")
        bw = max(w // 8, 2)
        x = (n * 7) % (w - bw)
        bar = b"\x20" * x + b"\xeb" * bw + b"\x20" * (w - x - bw)
        cells, value = (32, int(time.time() * 1000) & 0xFFFFFFFF) if self.paint_clock else (16, n)
        cell = w // cells
        bits = b"".join((b"\xeb" if (value >> b) & 1 else b"\x50") * cell for b in range(cells))
        bits = bits.ljust(w, b"\x50")
        top = max(h // 8, 1)
        fill(frame.planes[0], [bits] * top + [bar] * (h - top))
        u = 128 + int(100 * math.sin(n / 15))
        v = 128 + int(100 * math.cos(n / 23))
        for plane, val in ((frame.planes[1], u), (frame.planes[2], v)):
            fill(plane, [bytes([val]) * plane.width] * plane.height)
        frame.pts = round(n * 90000 / self.fps)
        frame.time_base = Fraction(1, 90000)
        self.count += 1
        return frame


def fill(plane, rows):
    data = b"".join(r.ljust(plane.line_size, b"\0") for r in rows)
    plane.update(data.ljust(plane.buffer_size, b"\0"))


class SineTrack(MediaStreamTrack):
    """48 kHz mono s16, 20 ms frames of a 440 Hz sine."""

    kind = "audio"
    RATE, SAMPLES = 48000, 960
    # 440 Hz fits exactly 440 periods in one second: precompute one second.
    WAVE = array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(48000)))

    def __init__(self):
        super().__init__()
        self.pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        else:
            await asyncio.sleep(max(0, self.start + self.pts / self.RATE - time.monotonic()))
        off = self.pts % self.RATE
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self.WAVE[off:off + self.SAMPLES].tobytes().ljust(frame.planes[0].buffer_size, b"\0"))
        frame.pts, frame.sample_rate, frame.time_base = self.pts, self.RATE, Fraction(1, self.RATE)
        self.pts += self.SAMPLES
        return frame


async def run(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        return await publish(args, pc, stop)
    finally:
        pc.remove_all_listeners("connectionstatechange")  # no "closed" line
        await pc.close()


async def publish(args, pc, stop):
    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            emit(event="connected")
        else:
            emit(event="connection_state", state=pc.connectionState)

    track = PatternTrack(args.width, args.height, args.fps, args.paint_clock)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, track.toggle)
    video = pc.addTransceiver(track, direction="sendonly")
    mime = {"vp8": "video/VP8", "h264": "video/H264"}[args.codec]
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime]
    video.setCodecPreferences(codecs)
    pc.addTransceiver(SineTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # waits for gathering

    headers = {"Content-Type": args.content_type}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                     connector=aiohttp.TCPConnector(ssl=not args.insecure)) as http:
        try:
            async with http.post(args.url, data=pc.localDescription.sdp.encode(), headers=headers) as resp:
                body = await resp.text(errors="replace")
                if resp.status != 201:
                    emit(event="refused", status=resp.status,
                         content_type=resp.headers.get("Content-Type"), body=body[:500])
                    return 3
                loc = resp.headers.get("Location")
                location = urljoin(args.url, loc) if loc else None
                emit(event="published", status=201, location=location,
                     etag=resp.headers.get("ETag"), link=resp.headers.getall("Link", []))
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            emit(event="error", error=str(e))
            return 2
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

        try:
            await asyncio.wait_for(stop.wait(), args.duration)
        except asyncio.TimeoutError:
            pass
        if args.no_delete:
            os._exit(0)  # vanish like a crashed encoder: no DELETE, no DTLS close
        if location:
            # As OBS's "Stop Streaming": close the connection (DTLS close_notify), then
            # DELETE the session.
            pc.remove_all_listeners("connectionstatechange")
            await pc.close()
            headers.pop("Content-Type")
            try:
                async with http.delete(location, headers=headers) as resp:
                    emit(event="deleted", status=resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                log(f"DELETE failed: {e}")
                emit(event="deleted", status=None)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--insecure", action="store_true",
                   help="accept any TLS certificate (a test's self-signed nginx front)")
    p.add_argument("--token")
    p.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    p.add_argument("--duration", type=float, help="seconds (default: until SIGTERM/SIGINT)")
    p.add_argument("--no-delete", action="store_true")
    p.add_argument("--content-type", default="application/sdp")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--paint-clock", action="store_true",
                   help="paint the wall clock (ms) into the top strip, for delay measurements")
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
