# A git server speaking receive-pack over the ext:: transport that hands the push's command
# list to the test and answers with whatever the test wrote. Usage: fake_remote.py DIR
import os, sys, time, zlib

ZERO = b"0" * 40
exchange = sys.argv[1]

def pkt(payload):
    return b"%04x" % (len(payload) + 4) + payload

out = os.fdopen(1, "wb", buffering=0)
out.write(pkt(ZERO + b" capabilities^{}\0report-status side-band-64k delete-refs ofs-delta\n") + b"0000")

class Reader:
    def __init__(self):
        self.buf = b""
    def need(self, n):
        while len(self.buf) < n:
            chunk = os.read(0, 65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
    def take(self, n):
        self.need(n)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

r = Reader()
commands = b""
creates_objects = False
while True:
    head = r.take(4)
    commands += head
    length = int(head, 16)
    if length == 0:
        break
    line = r.take(length - 4)
    commands += line
    if line.split(b" ")[1][:40] != ZERO:
        creates_objects = True

# Read the whole pack so the client finishes sending before it reads the answer.
if creates_objects:
    header = r.take(12)
    assert header[:4] == b"PACK", header
    for _ in range(int.from_bytes(header[8:12], "big")):
        c = r.take(1)[0]
        kind = (c >> 4) & 7
        while c & 0x80:
            c = r.take(1)[0]
        if kind == 6:
            c = r.take(1)[0]
            while c & 0x80:
                c = r.take(1)[0]
        elif kind == 7:
            r.take(20)
        inflater = zlib.decompressobj()
        while not inflater.eof:
            r.need(1)
            data, r.buf = r.buf, b""
            inflater.decompress(data)
            r.buf = inflater.unused_data
    r.take(20)

with open(os.path.join(exchange, "request.tmp"), "wb") as f:
    f.write(commands)
os.rename(os.path.join(exchange, "request.tmp"), os.path.join(exchange, "request"))
answer = os.path.join(exchange, "response")
for _ in range(6000):
    if os.path.exists(answer):
        break
    time.sleep(0.01)
with open(answer, "rb") as f:
    out.write(f.read())
