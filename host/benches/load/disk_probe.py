"""The disk's own latency tail, the baseline for the router's ingest p99.

Writes 32 KB and waits for it with sync_file_range (what sled's flush does
for one write group) about once a millisecond for 10 seconds, and reports
the latency percentiles and the stalls. A stall here delays every ingest
request waiting on a flush at that moment, whatever the router does.

    python3 host/benches/load/disk_probe.py [file]
"""
import ctypes
import os
import sys
import time

SYNC_FILE_RANGE = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER

path = sys.argv[1] if len(sys.argv) > 1 else "disk_probe.bin"
libc = ctypes.CDLL("libc.so.6", use_errno=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
buf = os.urandom(32768)
lat, off = [], 0
end = time.monotonic() + 10
try:
    while time.monotonic() < end:
        t = time.perf_counter()
        os.pwrite(fd, buf, off)
        if libc.sync_file_range(fd, ctypes.c_longlong(off), ctypes.c_longlong(len(buf)), SYNC_FILE_RANGE) != 0:
            os.fdatasync(fd)
        lat.append(time.perf_counter() - t)
        off += len(buf)
        time.sleep(0.0008)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
n = len(lat)
ms = lambda q: lat[min(n - 1, int(n * q))] * 1e3
print(
    f"disk probe (32 KB write + sync_file_range, {n} in 10 s): p50 {ms(0.5):.2f} ms, "
    f"p99 {ms(0.99):.2f} ms, p99.9 {ms(0.999):.2f} ms, max {lat[-1] * 1e3:.1f} ms; "
    f"stalls over 5 ms: {sum(1 for x in lat if x > 0.005)}"
)
