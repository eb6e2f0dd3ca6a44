"""Login flood against a running privatehub-app (see scripts/login-flood).

60 sign-ups in a row, then three bursts of 300 concurrent log-ins for unknown names
from 30 addresses (X-Forwarded-For; the app must trust proxy headers), printing the
app's RSS after each step and the HTTP statuses of each burst.
"""
import json
import sys
import threading
import time
import urllib.error
import urllib.request

BASE, PID = sys.argv[1], sys.argv[2]


def rss_mb():
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def post(path, body, address):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Origin": BASE, "X-Forwarded-For": address},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return type(error).__name__


print(f"RSS at start: {rss_mb()} MB")
started = time.time()
for n in range(60):
    post("/api/auth/signup", {"username": f"user{n}", "password": "correct horse battery"}, f"198.51.100.{n}")
print(f"60 sign-ups in a row: {time.time() - started:.1f} s, RSS {rss_mb()} MB")
for burst in range(1, 4):
    statuses = []
    def login(n):
        statuses.append(post("/api/auth/login", {"username": f"ghost{n}", "password": "whatever1"}, f"203.0.113.{n % 30}"))
    threads = [threading.Thread(target=login, args=(n,)) for n in range(300)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
    print(f"burst {burst}: 300 concurrent log-ins in {time.time() - started:.1f} s ({summary}), RSS {rss_mb()} MB")
    time.sleep(1)
