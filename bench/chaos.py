"""Chaos run for mixopt (driven by bench/chaos.sh): kill -9 and hostile
clients against the release binary, loopback only, every phase bounded in
time. Prints, per phase, what survived and what was lost.

  1. online --listen, killed -9 at random moments while a trainer-like client
     posts updates and retries each until it is answered: kills survived,
     updates lost or duplicated (against the same requests replayed without
     kills: policies are deterministic, so the final states must be equal).
  2. sweep, killed -9 at random moments and resumed until it finishes: rows
     lost, duplicated or different from an uninterrupted sweep of the seed.
  3. prepare, killed -9 mid-tokenization and rerun: the cache equals a clean one.
  4. A slow-client flood (idle and trickling connections, more than the server
     holds) while a client keeps sending requests: requests served.
  5. Oversized input: a 256 MiB JSON line, a 2 GiB Content-Length, a 1 MiB
     request head: the answers and the server's peak RSS.

Usage: python3 bench/chaos.py BIN [SEED]   (stdlib only)
"""

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
RNG = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
WORK = tempfile.mkdtemp(prefix="mixopt-chaos-")
DOMAINS = ["web", "code", "books"]
ENV = dict(os.environ, MIXOPT_QUIET="1")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(state, port):
    p = subprocess.Popen(
        [BIN, "online", "--policy", "odm", "--domains", ",".join(DOMAINS),
         "--state", state, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    line = p.stderr.readline().decode()
    if "http://" not in line:
        p.wait(5)
        raise RuntimeError(f"server did not start: {line}{p.stderr.read().decode()}")
    threading.Thread(target=p.stderr.read, daemon=True).start()
    return p


def body(i):
    losses = {d: 2.0 + 0.5 * j + 1.0 / (i + 1) + 0.01 * ((i * 7 + j) % 5)
              for j, d in enumerate(DOMAINS)}
    return json.dumps({"step": i, "losses": losses})


def post(port, text, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/observe", text, {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def phase_online(n_requests=3000, deadline_s=90, max_kills=40):
    print("== 1. online --listen under kill -9")
    state = os.path.join(WORK, "online-state.json")
    port = free_port()
    server = [start_server(state, port)]
    done = threading.Event()
    answered = [0]
    retries = [0]

    def client():
        for i in range(1, n_requests + 1):
            while not done.is_set():
                try:
                    st, _ = post(port, body(i))
                    if st == 200:
                        answered[0] += 1
                        break
                    retries[0] += 1
                except OSError:
                    retries[0] += 1
                    time.sleep(0.02)
        done.set()

    t = threading.Thread(target=client)
    t.start()
    kills, restarts_ok, started = 0, 0, time.time()
    while not done.is_set() and time.time() - started < deadline_s and kills < max_kills:
        time.sleep(RNG.uniform(0.05, 0.4))
        if done.is_set():
            break
        server[0].send_signal(signal.SIGKILL)
        server[0].wait()
        kills += 1
        try:
            server[0] = start_server(state, port)
            restarts_ok += 1
        except RuntimeError as e:
            print(f"   restart failed after kill {kills}: {e}")
            break
    # No more kills: let the client finish (bounded).
    t.join(timeout=max(0.0, deadline_s - (time.time() - started)) + 30)
    done.set()
    t.join()
    server[0].send_signal(signal.SIGKILL)
    server[0].wait()
    applied = json.load(open(state))["n_updates"]
    # The same requests, once each, without kills.
    ref_state = os.path.join(WORK, "online-ref.json")
    lines = "\n".join(body(i) for i in range(1, n_requests + 1)) + "\n"
    subprocess.run([BIN, "online", "--policy", "odm", "--domains", ",".join(DOMAINS),
                    "--state", ref_state], input=lines.encode(), capture_output=True,
                   check=True, env=ENV)
    ref = json.load(open(ref_state))
    got = json.load(open(state))
    same = got["state"] == ref["state"] and got["weights"] == ref["weights"]
    print(f"   kills survived: {restarts_ok}/{kills} (server restarted on its state each time)")
    print(f"   requests answered: {answered[0]}/{n_requests} ({retries[0]} retries)")
    print(f"   updates applied: {applied} for {n_requests} requests -> "
          f"lost {max(0, n_requests - applied)}, duplicated {max(0, applied - n_requests)}")
    print(f"   final policy state equals the uninterrupted run: {'yes' if same else 'NO'}")


PROXY = """name = "chaos"
n_layers = 1
d_model = 32
n_heads = 2
d_ff = 64
seq_len = 32
batch_size = 8
n_steps = 60
lr_peak = 1e-2
warmup_steps = 4
eval_windows = 8
"""


def write_corpus(root, docs=60, repeat=20):
    units = {"web": "the cat sat on the mat ", "code": "fn main() { x += 1; } ",
             "books": "It was a dark and stormy night. "}
    paths = []
    for d, u in units.items():
        os.makedirs(os.path.join(root, d), exist_ok=True)
        p = os.path.join(root, d, "docs.jsonl")
        with open(p, "w") as f:
            for i in range(docs):
                f.write(json.dumps({"text": u * (repeat + i % 11) + str(i)}) + "\n")
        paths.append(f"{d}={p}")
    return paths


def data_rows(path):
    with open(path) as f:
        lines = f.read().splitlines()
    rows = []
    for line in lines[1:]:
        cells = line.split(",")
        del cells[4]  # wall_s
        rows.append(",".join(cells))
    return rows


def phase_sweep(runs=16, max_kills=12):
    print("== 2. sweep under kill -9")
    corpus = write_corpus(os.path.join(WORK, "corpus"))
    cache = os.path.join(WORK, "cache")
    args = [BIN, "prepare", "--cache", cache]
    for d in corpus:
        args += ["--domain", d]
    subprocess.run(args, check=True, capture_output=True, env=ENV)
    proxy = os.path.join(WORK, "chaos.toml")
    open(proxy, "w").write(PROXY)

    def sweep(out):
        return [BIN, "sweep", "--cache", cache, "--proxy", proxy, "--runs", str(runs),
                "--seed", "11", "--jobs", "2", "--out", out]

    ref = os.path.join(WORK, "ref.csv")
    t0 = time.time()
    subprocess.run(sweep(ref), check=True, capture_output=True, env=ENV)
    clean_s = time.time() - t0
    out = os.path.join(WORK, "chaos.csv")
    kills = 0
    while True:
        p = subprocess.Popen(sweep(out), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
        if kills < max_kills:
            try:
                p.wait(RNG.uniform(0.1, clean_s / 3))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                continue
        if p.wait(600) != 0:
            raise RuntimeError("resumed sweep failed")
        break
    want, got = data_rows(ref), data_rows(out)
    ids = lambda rows: [r.split(",")[0] for r in rows]
    lost = len(set(ids(want)) - set(ids(got)))
    dup = len(got) - len(set(ids(got)))
    differ = sum(1 for r in got if r not in set(want))
    print(f"   kills survived: {kills} (sweep of {runs} runs, {clean_s:.1f} s uninterrupted)")
    print(f"   rows lost {lost}, duplicated {dup}, different from the uninterrupted sweep {differ}; "
          f"same row order: {'yes' if ids(got) == ids(want) else 'no'}")


def phase_prepare(kills_wanted=5):
    print("== 3. prepare under kill -9")
    corpus = write_corpus(os.path.join(WORK, "big"), docs=4000, repeat=200)
    clean = os.path.join(WORK, "cache-clean")

    def prep(cache):
        a = [BIN, "prepare", "--cache", cache]
        for d in corpus:
            a += ["--domain", d]
        return a

    t0 = time.time()
    subprocess.run(prep(clean), check=True, capture_output=True, env=ENV)
    clean_s = time.time() - t0
    cache = os.path.join(WORK, "cache-chaos")
    kills = 0
    for _ in range(kills_wanted):
        p = subprocess.Popen(prep(cache), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
        try:
            p.wait(RNG.uniform(0.05, 0.8 * clean_s))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
    subprocess.run(prep(cache), check=True, capture_output=True, env=ENV)
    same = all(
        open(os.path.join(clean, f), "rb").read() == open(os.path.join(cache, f), "rb").read()
        for f in os.listdir(clean) if f.endswith(".bin"))
    mf = lambda d: json.load(open(os.path.join(d, "manifest.json")))["inputs_fingerprint"]
    print(f"   kills survived: {kills} (prepare of {sum(os.path.getsize(d.split('=')[1]) for d in corpus) >> 20} MiB, "
          f"{clean_s:.1f} s uninterrupted)")
    print(f"   bins equal to a clean prepare: {'yes' if same else 'NO'}; "
          f"same inputs fingerprint: {'yes' if mf(clean) == mf(cache) else 'NO'}")


def phase_flood(slow=300, seconds=10):
    print(f"== 4. slow-client flood ({slow} connections; the server holds 256)")
    state = os.path.join(WORK, "flood-state.json")
    port = free_port()
    server = start_server(state, port)
    stop = threading.Event()
    opened = [0]
    head = b"POST /observe HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"x" * 4096

    def crowd():
        conns = []

        def open_one():
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.setblocking(False)
                opened[0] += 1
                return [s, 0]
            except OSError:
                return [None, 0]

        for _ in range(slow):
            conns.append(open_one())
        while not stop.is_set():
            for i, c in enumerate(conns):
                s, sent = c
                alive = s is not None
                if alive:
                    try:
                        if s.recv(512) == b"":
                            alive = False
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive = False
                if alive and i % 2 == 1:
                    try:
                        s.send(head[sent:sent + 1])
                        c[1] += 1
                    except OSError:
                        alive = False
                if not alive:
                    if s is not None:
                        s.close()
                    conns[i] = open_one()
            time.sleep(0.1)
        for s, _ in conns:
            if s is not None:
                s.close()

    step = [0]

    def serve_for(secs):
        ok = failed = 0
        lat = []
        started = time.time()
        while time.time() - started < secs:
            step[0] += 1
            t0 = time.time()
            try:
                st, _ = post(port, body(step[0]), timeout=3)
                if st == 200:
                    ok += 1
                    lat.append(time.time() - t0)
                else:
                    failed += 1
            except OSError:
                failed += 1
        lat.sort()
        p50 = lat[len(lat) // 2] * 1e3 if lat else float("nan")
        return ok, failed, p50

    ok, failed, p50 = serve_for(seconds / 2)
    print(f"   without the flood: {ok} ok, {failed} failed in {seconds / 2:.0f} s (p50 {p50:.1f} ms)")
    t = threading.Thread(target=crowd)
    t.start()
    time.sleep(1.0)
    ok, failed, p50 = serve_for(seconds)
    stop.set()
    t.join()
    server.send_signal(signal.SIGKILL)
    server.wait()
    print(f"   requests served during the flood: {ok} ok, {failed} failed in {seconds} s "
          f"(p50 {p50:.1f} ms); slow connections opened {opened[0]} "
          f"(reopened after the server dropped them: {opened[0] - slow})")


def phase_oversized():
    print("== 5. oversized input")
    state = os.path.join(WORK, "big-state.json")
    p = subprocess.Popen([BIN, "online", "--policy", "odm", "--domains", ",".join(DOMAINS),
                          "--state", state], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=ENV)
    p.stdout.readline()
    chunk = b"x" * (1 << 20)
    for _ in range(256):
        p.stdin.write(chunk)
    p.stdin.write(b"\n" + body(1).encode() + b"\n")
    p.stdin.flush()
    first = p.stdout.readline().decode().strip()
    second = p.stdout.readline().decode().strip()
    rss = peak_rss_mib(p.pid)
    p.stdin.close()
    p.wait(30)
    print(f"   JSON lines, a 256 MiB line: peak RSS {rss:.0f} MiB; answer {first[:60]}...; "
          f"next request {'answered' if 'updated' in second else 'NOT answered'}")
    port = free_port()
    server = start_server(os.path.join(WORK, "big-http.json"), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /observe HTTP/1.1\r\nContent-Length: 2147483648\r\n\r\n")
    big_body = s.recv(200).split(b"\r\n")[0].decode()
    s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"y" * (1 << 20) + b"\r\n\r\n")
        big_head = s.recv(200).split(b"\r\n")[0].decode() or "(connection closed)"
    except OSError as e:
        big_head = f"({e.__class__.__name__}: {e})"
    s.close()
    rss = peak_rss_mib(server.pid)
    server.send_signal(signal.SIGKILL)
    server.wait()
    print(f"   HTTP, Content-Length 2 GiB: {big_body}; 1 MiB request head: {big_head}; "
          f"server peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    try:
        t0 = time.time()
        phase_online()
        phase_sweep()
        phase_prepare()
        phase_flood()
        phase_oversized()
        print(f"(chaos run: {time.time() - t0:.0f} s, binary {BIN})")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
