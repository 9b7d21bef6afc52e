"""A small FTP client on Python's ftplib, driven by ftpgate's end-to-end tests.

    ftpclient.py HOST PORT MODE OP REMOTE LOCAL [--strict]

MODE is passive or active; OP is list, retr, stor or resume (RETR with REST
from the size of LOCAL, appending to it). --strict makes ftplib connect to the
address in the 227 reply instead of the control peer
(trust_server_pasv_ipv4_address), so that a wrong 227 rewrite fails.

OP "badinput" sends hostile commands on one session and prints each reply
as "REPLY <line>": PORT to a third party, PORT to port 21, EPRT with an
unknown family, NOOP (the session still works), then a 1 MiB line without a
newline, after which it prints the reply and "CLOSED" once the server side
closes.

OP "pause" is passive RETR in steps, for tests that look at the data port
before the client uses it (port theft, pinholes): it prints "DATAPORT <port>"
after the 227 reply, waits for a line on standard input, then connects and
retrieves REMOTE into LOCAL.

OP "protocol" walks through the rest of the protocol on one session and
prints "OK <step>" for each: FEAT (no AUTH, EPRT and EPSV offered), AUTH TLS
refused with 534, STOR then REST+STOR (a resumed upload), APPE, STOU, NLST,
SIZE, MDTM, STAT, and ABOR in the middle of a RETR of REMOTE (a large file):
426 then 226, in order, and the session goes on.

With --tls CAFILE, the session is FTPS (AUTH TLS, then PROT P), trusting
the certificates that CAFILE signed; ftplib does not resume the control
connection's TLS session on its data connections.

OP "raw" logs in as anonymous, then sends each line of the file REMOTE as
one command (Python escapes such as \\t are decoded, and the bytes sent as
Latin-1, CRLF added) and prints each reply's last line as "REPLY <line>"
(every reply of the session: greeting, USER and PASS first). With --each,
each line gets a session of its own, so that a line the server does not
answer (3s) holds up no other.

OP "sessions" runs REMOTE (a number) sessions in a row, each a login, a
LIST of pub/ in the given MODE, and QUIT; it prints "SESSIONS <n>" at the end.
"""

import ftplib
import os
import socket
import ssl
import sys


def main():
    host, port, mode, op, remote, local = sys.argv[1:7]
    strict = "--strict" in sys.argv[7:]
    if op == "badinput":
        return badinput(host, int(port))
    if op == "raw":
        return raw(host, int(port), remote, "--each" in sys.argv[7:])
    if op == "protocol":
        return protocol(host, int(port), mode, remote)
    if op == "sessions":
        return sessions(host, int(port), mode, int(remote), strict)
    tls = None
    if "--tls" in sys.argv[7:]:
        tls = sys.argv[sys.argv.index("--tls") + 1]
    if tls:
        ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=tls), timeout=30)
    else:
        ftp = ftplib.FTP(timeout=30)
    ftp.set_debuglevel(1)
    ftp.connect(host, int(port))
    ftp.login()  # FTP_TLS: AUTH TLS first
    if tls:
        ftp.prot_p()
    ftp.set_pasv(mode == "passive")
    ftp.trust_server_pasv_ipv4_address = strict
    if op == "list":
        lines = []
        ftp.retrlines("LIST " + remote, lines.append)
        print("\n".join(lines))
    elif op == "retr":
        with open(local, "wb") as f:
            ftp.retrbinary("RETR " + remote, f.write)
    elif op == "stor":
        with open(local, "rb") as f:
            ftp.storbinary("STOR " + remote, f)
    elif op == "resume":
        with open(local, "ab") as f:
            ftp.retrbinary("RETR " + remote, f.write, rest=os.path.getsize(local))
    elif op == "pause":
        ftp.voidcmd("TYPE I")
        dhost, dport = ftplib.parse227(ftp.sendcmd("PASV"))
        print("DATAPORT", dport, flush=True)
        sys.stdin.readline()
        conn = socket.create_connection((dhost if strict else host, dport), timeout=30)
        resp = ftp.sendcmd("RETR " + remote)
        if not resp.startswith("1"):
            raise ftplib.error_reply(resp)
        with open(local, "wb") as f, conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                f.write(data)
        ftp.voidresp()
    else:
        sys.exit("unknown op " + op)
    ftp.quit()


def protocol(host, port, mode, big):
    import hashlib
    import io

    ftp = ftplib.FTP(timeout=30)
    ftp.connect(host, port)
    ftp.login()
    ftp.set_pasv(mode == "passive")
    ftp.voidcmd("TYPE I")

    feat = ftp.sendcmd("FEAT")
    names = [l.split()[0] for l in feat.splitlines()[1:-1] if l.strip()]
    assert "AUTH" not in names and "EPRT" in names and "EPSV" in names, feat
    print("OK FEAT", " ".join(names), flush=True)

    try:
        ftp.sendcmd("AUTH TLS")
        raise SystemExit("AUTH TLS was accepted")
    except ftplib.error_perm as e:
        assert str(e).startswith("534"), e
    print("OK AUTH", flush=True)

    name = "upload/protocol-%d-%s.bin" % (os.getpid(), mode)
    data = os.urandom(3 << 20)
    half = len(data) // 2
    ftp.storbinary("STOR " + name, io.BytesIO(data[:half]))
    ftp.storbinary("STOR " + name, io.BytesIO(data[half:]), rest=half)
    assert ftp.size(name) == len(data), ftp.size(name)
    got = bytearray()
    ftp.retrbinary("RETR " + name, got.extend)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    print("OK REST+STOR", flush=True)

    ftp.storbinary("APPE " + name, io.BytesIO(b"tail"))
    assert ftp.size(name) == len(data) + 4
    print("OK APPE", flush=True)

    ftp.cwd("upload")
    conn, _ = ftp.ntransfercmd("STOU")
    conn.sendall(b"unique")
    conn.close()
    resp = ftp.voidresp()
    ftp.cwd("/")
    print("OK STOU", resp, flush=True)

    assert any(n.endswith("big.bin") for n in ftp.nlst("pub"))
    print("OK NLST", flush=True)
    assert ftp.sendcmd("MDTM pub/big.bin").startswith("213")
    print("OK MDTM", flush=True)
    stat = ftp.sendcmd("STAT")
    assert stat.startswith("211") and "\n" in stat, stat  # multi-line
    print("OK STAT", flush=True)

    conn = ftp.transfercmd("RETR " + big)
    n = 0
    while n < (1 << 20):
        b = conn.recv(65536)
        if not b:
            break
        n += len(b)
    r1 = ftp.abort()
    conn.close()
    r2 = ftp.getresp()
    assert r1.startswith("426") and r2.startswith("226"), (r1, r2)
    ftp.voidcmd("NOOP")
    print("OK ABOR", r1, "|", r2, flush=True)
    ftp.quit()


def sessions(host, port, mode, n, strict):
    for i in range(n):
        ftp = ftplib.FTP(timeout=30)
        ftp.connect(host, port)
        ftp.login()
        ftp.set_pasv(mode == "passive")
        ftp.trust_server_pasv_ipv4_address = strict
        lines = []
        ftp.retrlines("LIST pub", lines.append)
        if not any("big.bin" in l for l in lines):
            sys.exit("session %d: listing lacks big.bin" % i)
        ftp.quit()
    print("SESSIONS", n, flush=True)


def raw(host, port, path, each):
    with open(path, encoding="ascii") as lines:
        cmds = [l.rstrip("\n").encode("ascii").decode("unicode_escape") for l in lines]
    if not each:
        return raw_session(host, port, cmds)
    for cmd in cmds:
        raw_session(host, port, [cmd])


def print_reply(f):
    """Reads one reply from f, all its lines, and prints its last line as
    "REPLY <line>"."""
    line = f.readline().decode("latin-1").rstrip("\r\n")
    while len(line) > 3 and line[3] == "-":  # multi-line: read to the end
        end = line[:3] + " "
        while True:
            line = f.readline().decode("latin-1").rstrip("\r\n")
            if line.startswith(end) or not line:
                break
    print("REPLY", line, flush=True)


def raw_session(host, port, cmds):
    s = socket.create_connection((host, port), timeout=3)
    f = s.makefile("rb")

    def reply():
        try:
            print_reply(f)
        except TimeoutError:
            print("REPLY (no reply within 3s)", flush=True)

    def send(b):
        s.sendall(b + b"\r\n")
        reply()

    reply()  # greeting
    send(b"USER anonymous")
    send(b"PASS ftpgate@")
    for cmd in cmds:
        send(cmd.encode("latin-1"))
    s.close()


def badinput(host, port):
    s = socket.create_connection((host, port), timeout=30)
    f = s.makefile("rb")

    def reply():
        print_reply(f)

    def send(cmd):
        s.sendall(cmd.encode("latin-1") + b"\r\n")
        reply()

    reply()  # greeting
    send("USER anonymous")
    send("PASS ftpgate@")
    send("PORT 198,19,1,2,156,64")  # a third party's address
    send("PORT 198,19,0,2,0,21")  # port 21
    send("EPRT |3|198.19.0.2|40000|")  # unknown network protocol
    send("NOOP")
    try:
        s.sendall(b"A" * (1 << 20))
    except OSError as e:  # the proxy may close before all is sent
        print("SENDERR", e, flush=True)
    try:
        reply()
        rest = f.read()
        print("CLOSED", len(rest), flush=True)
    except OSError as e:
        print("CLOSED", e, flush=True)


if __name__ == "__main__":
    main()
