"""The client of benches/inference.sh: Anthropic Messages requests with http.client.

stream N DELAY_MS: N streamed completions one after another; prints TTFT p50/p90 and the
per-chunk lag p50/p90 (a chunk's arrival minus the first's, minus the provider's own spacing
of DELAY_MS per chunk), in ms, as table cells.
rate SECONDS CLIENTS: small JSON completions from CLIENTS threads for SECONDS; prints
completions/s and latency p50/p90 in ms.
"""
import http.client
import json
import sys
import threading
import time

HOST, PORT = sys.argv[1].rsplit(":", 1)
PATH, KEY, MODE = sys.argv[2], sys.argv[3], sys.argv[4]
HEADERS = {"x-api-key": KEY, "content-type": "application/json", "anthropic-version": "2023-06-01"}


def request(stream):
    body = json.dumps({"model": "claude-bench", "max_tokens": 16, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]})
    conn = http.client.HTTPConnection(HOST, int(PORT))
    conn.request("POST", PATH, body, HEADERS)
    return conn, conn.getresponse()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def streams(n, delay_ms):
    ttft, lag = [], []
    for _ in range(n):
        start = time.perf_counter()
        conn, response = request(True)
        assert response.status == 200, response.read()
        arrivals = []
        for line in response:
            if line.startswith(b"data:") and b"content_block_delta" in line:
                arrivals.append(time.perf_counter())
        conn.close()
        ttft.append((arrivals[0] - start) * 1e3)
        for i, t in enumerate(arrivals[1:], 1):
            lag.append((t - arrivals[0]) * 1e3 - i * delay_ms)
    print(f"{pct(ttft, .5):.2f} | {pct(ttft, .9):.2f} | {pct(lag, .5):.2f} | {pct(lag, .9):.2f}")


def rate(seconds, clients):
    latencies, lock = [], threading.Lock()
    end = time.perf_counter() + seconds

    def client():
        mine = []
        while time.perf_counter() < end:
            start = time.perf_counter()
            conn, response = request(False)
            response.read()
            conn.close()
            assert response.status == 200
            mine.append((time.perf_counter() - start) * 1e3)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(latencies) / seconds:.0f} | {pct(latencies, .5):.2f} | {pct(latencies, .9):.2f}")


if MODE == "stream":
    streams(int(sys.argv[5]), float(sys.argv[6]))
else:
    rate(float(sys.argv[5]), int(sys.argv[6]))
