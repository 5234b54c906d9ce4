#!/usr/bin/env python3
"""A txsock client in Python 3, standard library only, written from docs/PROTOCOL.md.

It registers (computing the SCRAM verifier locally with hashlib.pbkdf2_hmac), logs in with
SCRAM-SHA-256 and checks the server's signature, asks for a batch of nonces, sends MAC'd
transfers and verifies every receipt, balance, history and statement page (MAC, echoed
fields and sequence number). `history` prints the statement: transfers and deposits. Section numbers (§) refer to docs/PROTOCOL.md.

Usage:
    export TXSOCK_PASSWORD='correct horse battery'      # or type it at the prompt
    python3 txsock_client.py --user alice register
    python3 txsock_client.py --user alice balance
    python3 txsock_client.py --user alice transfer bob 12.50 [--id rent-2026-01]
    python3 txsock_client.py --user alice history
    python3 txsock_client.py --server bank.example:11002 --tls --user alice balance
    python3 txsock_client.py --tls --ca certs/ca.pem --user alice balance
Options: --server HOST:PORT (default 127.0.0.1:11002), --min-iterations N (default 600000,
also the count used to register), --timeout SECONDS (default 10), --tls (TLS 1.3 with the
server's certificate checked against the system's CAs, or --ca FILE), --tls-name NAME (the
name the certificate must carry; default: the host of --server).

Several servers of one ledger: --server HOST:PORT,HOST:PORT,... The client uses the first that
answers and, when one cannot be reached, drops the connection or answers `internal`, moves to
the next, logs in again and re-sends a pending transfer with the same id (the ledger answers a
recorded id with its original outcome, so money still moves at most once).

The password comes from TXSOCK_PASSWORD or a no-echo prompt, never from the command line.

Exit status: 0 success, 2 invalid input (nothing sent), 3 refused by the server,
4 integrity failure (a forged or altered answer), 5 connection failure or no answer, and
every TLS failure (unknown CA, wrong name, expired certificate, plaintext on one side).
"""

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import ssl
import sys
import unicodedata

DEFAULT_SERVER = "127.0.0.1:11002"
DEFAULT_ITERATIONS = 600_000  # §7, §15
MAX_RESPONSE = 576  # §2: a response line is at most 576 bytes including its LF
MAX_AMOUNT = 10**15  # §4: largest amount in minor units
MAX_BALANCE = 10**15  # §4: no ledger credits past it; a larger balance is malformed
MAX_ITERATIONS = 10_000_000  # §8: the most PBKDF2 iterations a client runs at login
RING = 16  # §12: hold at most 16 unused nonces
ATTEMPTS = 3  # §13: retry a transfer with the same id until a verified receipt

USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
TRANSFER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
AMOUNT = re.compile(r"(0|[1-9][0-9]*)(\.([0-9]{1,2}))?")
NONCE_HEX = re.compile(r"[0-9a-f]{32}")
MAC_HEX = re.compile(r"[0-9a-f]{64}")


class InvalidInput(Exception):
    exit_status = 2


class Refused(Exception):
    """The server refused: an `error` frame (unauthenticated) or a verified receipt."""

    exit_status = 3

    def __init__(self, code, message=""):
        super().__init__("%s: %s" % (code, message) if message else code)
        self.code = code


class IntegrityFailure(Exception):
    """An answer failed verification: forged, altered, replayed or reordered (§10, §11)."""

    exit_status = 4


class ConnectionFailure(Exception):
    exit_status = 5


# --- servers: failover ---------------------------------------------------------------------


class Servers:
    """The servers given with --server (one ledger), and the one in use."""

    # Answers saying "this server cannot serve now": its storage failed, or it closed the
    # session for its own reasons (§14). Another server may serve.
    CANNOT_SERVE = ("internal", "server_busy", "timeout")
    # §14: the codes this client knows; any other is treated as `internal`.
    KNOWN_CODES = CANNOT_SERVE + (
        "malformed", "frame_too_long", "not_logged_in", "already_logged_in",
        "unexpected_message", "registration_closed", "user_exists", "weak_verifier",
        "auth_failed", "bad_mac", "unknown_nonce", "invalid_amount", "invalid_name",
        "insufficient_funds", "unknown_recipient", "self_transfer", "duplicate_id",
        "ledger_full", "balance_overflow", "too_many_bad_frames", "output_overflow",
    )

    def __init__(self, text, tls=False, ca=None, tls_name=None):
        self.tls = (tls, ca, tls_name)
        self.list = [part.strip() for part in text.split(",")]
        for server in self.list:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidInput("--server: %r is not HOST:PORT" % server)
        if len(set(self.list)) != len(self.list):
            raise InvalidInput("--server lists a server twice")
        self.current = 0

    def connect(self, timeout):
        """A connection to the first server that answers, starting with the one in use."""
        last = None
        for step in range(len(self.list)):
            index = (self.current + step) % len(self.list)
            try:
                conn = Connection(Endpoint(self.list[index], *self.tls), timeout)
            except ConnectionFailure as e:
                last = e
                continue
            self.current = index
            return conn
        raise last

    def leave(self, failure):
        """After `failure`, moves to the next server if the failure says this one cannot serve
        now and there is another; returns the server moved to, or None."""
        cannot_serve = isinstance(failure, ConnectionFailure) or (
            isinstance(failure, Refused)
            and (failure.code in self.CANNOT_SERVE or failure.code not in self.KNOWN_CODES)
        )
        if len(self.list) < 2 or not cannot_serve:
            return None
        self.current = (self.current + 1) % len(self.list)
        return self.list[self.current]


# --- values (§4) -------------------------------------------------------------------------


def normalise_user(text):
    """Lowercases ASCII capitals; refuses anything outside the username rule."""
    if not text.isascii():
        raise InvalidInput("username %r: only a-z 0-9 _ . - are allowed" % text)
    name = text.lower()
    if not USERNAME.fullmatch(name):
        raise InvalidInput("username %r: 1-32 of a-z 0-9 _ . -, starting with a letter or digit" % text)
    return name


def check_id(text):
    if not TRANSFER_ID.fullmatch(text):
        raise InvalidInput("transfer id %r: 1-32 of A-Z a-z 0-9 _ . : -" % text)
    return text


def parse_minor(text, allow_zero, limit):
    """Decimal string -> minor units (hundredths), exactly as §4's grammar."""
    m = AMOUNT.fullmatch(text)
    if not m:
        raise ValueError("malformed amount %r" % text)
    frac = (m.group(3) or "").ljust(2, "0")
    minor = int(m.group(1)) * 100 + int(frac)
    if minor == 0 and not allow_zero:
        raise ValueError("zero amount")
    if minor > limit:
        raise ValueError("amount too large")
    return minor


def parse_amount(text):
    try:
        return parse_minor(text, allow_zero=False, limit=MAX_AMOUNT)
    except ValueError as e:
        raise InvalidInput("amount %r: %s (positive, at most two decimals, e.g. 12.50)" % (text, e))


def json_uint(value):
    """A JSON integer from 0 to 2^64 - 1 (§6 `at`): not a string, a float or a boolean,
    which str() would turn into the same MAC field."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ValueError("not an unsigned 64-bit integer: %r" % (value,))
    return value


def json_str(value):
    """A JSON string (§6 `id`, `from`, `to`, `amount`): not a number, which str() would turn
    into the same MAC field."""
    if not isinstance(value, str):
        raise TypeError("not a string: %r" % (value,))
    return value


def fmt_minor(minor):
    return "%d.%02d" % divmod(minor, 100)


def check_password(password):
    """The reference client's rule (§7): at least 8 characters, at most 128 bytes of UTF-8,
    no control characters (Unicode category Cc, C1 controls included)."""
    if len(password) < 8 or len(password.encode("utf-8")) > 128:
        raise InvalidInput("the password must have at least 8 characters and at most 128 bytes")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise InvalidInput("the password must not contain control characters")


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    """Canonical padded base64 only (§4)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise IntegrityFailure("invalid base64 from the server: %r" % text)
    if b64(raw) != text:
        raise IntegrityFailure("non-canonical base64 from the server: %r" % text)
    return raw


# --- crypto (§7, §8, §9, §10) --------------------------------------------------------------


def hmac_sha256(key, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hmac.new(key, data, hashlib.sha256).digest()


def salted_password(password, salt, iterations):
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, 32)


def mac(key, kind, *fields):
    """HMAC over "txsock/1 <type>" followed by each field after one NUL byte (§10)."""
    text = "txsock/1 " + kind + "".join("\x00" + str(f) for f in fields)
    return hmac_sha256(key, text)


def tag_ok(expected, text):
    """Compares a hex tag in constant time."""
    return isinstance(text, str) and MAC_HEX.fullmatch(text) is not None and hmac.compare_digest(
        expected, bytes.fromhex(text)
    )


# --- the connection ----------------------------------------------------------------------


class Endpoint:
    """Where to connect: HOST:PORT, and the TLS context and name to check (None: plaintext)."""

    def __init__(self, server, tls=False, ca=None, tls_name=None):
        self.server = server
        host, _, self.port = server.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.context = None
        self.name = tls_name or self.host
        if tls:
            try:
                # The system's CAs unless --ca; certificate and host name checked (§16).
                self.context = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as e:
                raise ConnectionFailure("cannot read the CA file %s: %s" % (ca, e))
            self.context.minimum_version = ssl.TLSVersion.TLSv1_3

    def __str__(self):
        return self.server


def tls_reason(e, endpoint):
    """A readable reason for a failed TLS handshake."""
    if isinstance(e, ssl.SSLCertVerificationError):
        message = (e.verify_message or str(e)).lower()
        if "issuer" in message or "self-signed" in message or "self signed" in message:
            return ("the server's certificate is not signed by an authority this client trusts "
                    "(unknown CA): pass the CA that signed it with --ca FILE")
        if "hostname" in message or "ip address mismatch" in message:
            return ("the server's certificate is not valid for the name `%s` (wrong name): "
                    "connect by a name the certificate carries, or set --tls-name" % endpoint.name)
        if "expired" in message:
            return "the server's certificate has expired: the server must renew it"
        return "the server's certificate was refused: %s" % message
    if isinstance(e, (ssl.SSLEOFError, ConnectionResetError, ConnectionAbortedError)):
        return ("the server closed the connection during the TLS handshake: it may be serving "
                "plaintext (then leave out --tls)")
    if isinstance(e, socket.timeout):
        return ("no TLS handshake answer in time: the server may be serving plaintext (then "
                "leave out --tls)")
    if isinstance(e, ssl.SSLError) and "wrong version" in str(e).lower():
        return "the server did not answer in TLS: it may be serving plaintext (then leave out --tls)"
    return "TLS handshake: %s" % e


class Connection:
    """One TCP connection, plaintext or TLS: JSON lines out, JSON lines in (§2)."""

    def __init__(self, endpoint, timeout):
        try:
            sock = socket.create_connection((endpoint.host, int(endpoint.port)), timeout=timeout)
        except (OSError, ValueError) as e:
            raise ConnectionFailure("cannot connect to %s: %s" % (endpoint, e))
        if endpoint.context is not None:
            try:
                sock = endpoint.context.wrap_socket(sock, server_hostname=endpoint.name)
            except (OSError, ssl.SSLError) as e:
                sock.close()
                raise ConnectionFailure("%s: TLS failure: %s" % (endpoint, tls_reason(e, endpoint)))
        self.sock = sock
        self.sock.settimeout(timeout)
        self.pending = b""

    def send(self, message):
        line = json.dumps(message, separators=(",", ":")) + "\n"
        try:
            self.sock.sendall(line.encode("utf-8"))
        except OSError as e:
            raise ConnectionFailure("connection lost: %s" % e)

    def receive(self):
        while b"\n" not in self.pending:
            if len(self.pending) > MAX_RESPONSE:
                raise IntegrityFailure("response line longer than %d bytes" % MAX_RESPONSE)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                raise ConnectionFailure("no answer in time")
            except OSError as e:
                raise ConnectionFailure("connection lost: %s" % e)
            if not chunk:
                raise ConnectionFailure("the connection was closed")
            if not self.pending and chunk[:1] in (b"\x15", b"\x16") and chunk[1:2] == b"\x03":
                # A TLS record (alert or handshake), never a JSON line: a TLS server.
                raise ConnectionFailure("TLS failure: the server speaks TLS (it answered with a "
                                        "TLS record): add --tls (and --ca FILE)")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        if len(line) + 1 > MAX_RESPONSE:
            raise IntegrityFailure("response line longer than %d bytes" % MAX_RESPONSE)
        try:
            message = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise IntegrityFailure("the server sent a line that is not JSON")
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise IntegrityFailure("the server sent a frame without an op")
        return message

    def request(self, message, expect):
        """Sends `message` and returns the answer, whose op must be `expect` (or `error`)."""
        self.send(message)
        answer = self.receive()
        if answer["op"] == "error":
            raise Refused(str(answer.get("code")), str(answer.get("message", "")))
        if answer["op"] != expect:
            raise IntegrityFailure("expected %s, got %s" % (expect, answer["op"]))
        return answer

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Session:
    """A logged-in session: its keys, its sequence number and its unused nonces."""

    def __init__(self, conn, user, c2s, s2c):
        self.conn = conn
        self.user = user
        self.c2s = c2s
        self.s2c = s2c
        self.seq = 0  # §11: 0 after welcome; each authenticated answer must be the next
        self.nonces = []  # §12: FIFO of unused nonces, oldest first

    def next_seq(self, answer):
        seq = answer.get("seq")
        if not isinstance(seq, int) or seq != (self.seq + 1) % 2**32:
            raise IntegrityFailure(
                "an authenticated answer was dropped, replayed or reordered (seq %r, expected %d)"
                % (seq, self.seq + 1)
            )
        return seq

    def request_nonces(self, count):
        answer = self.conn.request({"op": "nonces", "count": count}, "nonces")
        fresh = answer.get("nonces")
        if not isinstance(fresh, list) or not all(
            isinstance(n, str) and NONCE_HEX.fullmatch(n) for n in fresh
        ):
            raise IntegrityFailure("malformed nonces")
        self.nonces.extend(fresh)
        del self.nonces[:-RING]  # the server's ring evicted its oldest too

    def transfer(self, transfer_id, to, minor):
        """Sends one transfer; returns (result, balance_minor) from a verified receipt."""
        if not self.nonces:
            self.request_nonces(1)
        nonce = self.nonces.pop(0)
        tag = mac(self.c2s, "transfer", self.user, transfer_id, to, minor, nonce)
        answer = self.conn.request(
            {
                "op": "transfer",
                "id": transfer_id,
                "to": to,
                "amount": fmt_minor(minor),
                "nonce": nonce,
                "mac": tag.hex(),
            },
            "receipt",
        )
        try:
            echoed = parse_minor(str(answer.get("amount")), allow_zero=False, limit=MAX_AMOUNT)
            balance = parse_minor(str(answer.get("balance")), allow_zero=True, limit=MAX_BALANCE)
        except ValueError:
            raise IntegrityFailure("the receipt's amount or balance is malformed")
        result = answer.get("result")
        seq = answer.get("seq")
        # §10: recompute from *our* request, plus the receipt's seq, result and balance.
        expected = mac(self.s2c, "receipt", seq, transfer_id, to, minor, result, balance, nonce)
        if (
            answer.get("id") != transfer_id
            or answer.get("to") != to
            or echoed != minor
            or not isinstance(result, str)
            or not tag_ok(expected, answer.get("mac"))
        ):
            raise IntegrityFailure(
                "the server's confirmation was forged or altered: its receipt MAC does not verify"
            )
        self.seq = self.next_seq(answer)
        return result, balance

    def balance(self):
        answer = self.conn.request({"op": "balance"}, "balance")
        try:
            balance = parse_minor(str(answer.get("balance")), allow_zero=True, limit=MAX_BALANCE)
        except ValueError:
            raise IntegrityFailure("malformed balance")
        if not tag_ok(mac(self.s2c, "balance", answer.get("seq"), balance), answer.get("mac")):
            raise IntegrityFailure("the balance was forged or altered: its MAC does not verify")
        self.seq = self.next_seq(answer)
        return balance

    def history(self, offset):
        answer = self.conn.request({"op": "history", "offset": offset}, "history")
        more = answer.get("more")
        entries = answer.get("entries")
        if not isinstance(more, bool) or not isinstance(entries, list):
            raise IntegrityFailure("malformed history page")
        fields = [answer.get("seq"), "1" if more else "0"]
        page = []
        for e in entries:
            try:
                amount = parse_minor(json_str(e["amount"]), allow_zero=False, limit=MAX_AMOUNT)
                entry = (json_str(e["id"]), json_str(e["from"]), json_str(e["to"]), amount,
                         json_uint(e["at"]))
            except (KeyError, TypeError, ValueError):
                raise IntegrityFailure("malformed history entry")
            fields.extend(entry)
            page.append(entry)
        if not tag_ok(mac(self.s2c, "history", *fields), answer.get("mac")):
            raise IntegrityFailure("the history was forged or altered: its MAC does not verify")
        self.seq = self.next_seq(answer)
        return page, more

    def statement(self, offset):
        """A statement page (§6 `statement`): transfers as (id, from, to, amount, at) and
        deposits as (None, None, to, amount, at), newest first, and whether more exist."""
        answer = self.conn.request({"op": "statement", "offset": offset}, "statement")
        more = answer.get("more")
        entries = answer.get("entries")
        if not isinstance(more, bool) or not isinstance(entries, list):
            raise IntegrityFailure("malformed statement page")
        fields = [answer.get("seq"), "1" if more else "0"]
        page = []
        for e in entries:
            try:
                kind = e["kind"]
                amount = parse_minor(json_str(e["amount"]), allow_zero=False, limit=MAX_AMOUNT)
                if kind == "transfer":
                    entry = (json_str(e["id"]), json_str(e["from"]), json_str(e["to"]), amount,
                             json_uint(e["at"]))
                elif kind == "deposit" and "id" not in e and "from" not in e:
                    entry = (None, None, json_str(e["to"]), amount, json_uint(e["at"]))
                else:
                    raise ValueError(kind)
            except (KeyError, TypeError, ValueError):
                raise IntegrityFailure("malformed statement entry")
            # A deposit's id and sender are empty fields in the MAC input (§10).
            fields.extend([kind, entry[0] or "", entry[1] or ""] + list(entry[2:]))
            page.append(entry)
        if not tag_ok(mac(self.s2c, "statement", *fields), answer.get("mac")):
            raise IntegrityFailure("the statement was forged or altered: its MAC does not verify")
        self.seq = self.next_seq(answer)
        return page, more

    def logout(self):
        try:
            self.conn.request({"op": "logout"}, "bye")
        except (Refused, IntegrityFailure, ConnectionFailure):
            pass
        self.conn.close()


def register(servers, timeout, user, password, iterations):
    """§7: the verifier is computed here; the password never crosses the wire."""
    salt = secrets.token_bytes(16)
    salted = salted_password(password, salt, iterations)
    client_key = hmac_sha256(salted, "Client Key")
    conn = servers.connect(timeout)
    try:
        conn.request(
            {
                "op": "register",
                "user": user,
                "salt": b64(salt),
                "iterations": iterations,
                "stored_key": b64(hashlib.sha256(client_key).digest()),
                "server_key": b64(hmac_sha256(salted, "Server Key")),
            },
            "registered",
        )
    finally:
        conn.close()


def login(servers, timeout, user, password, min_iterations):
    """§8 (SCRAM-SHA-256 without GS2 header) and §9 (session keys)."""
    conn = servers.connect(timeout)
    try:
        client_nonce = b64(secrets.token_bytes(18))  # 24 characters, none of , " \
        challenge = conn.request({"op": "login", "user": user, "nonce": client_nonce}, "challenge")
        full_nonce = challenge.get("nonce")
        salt_text = challenge.get("salt")
        iterations = challenge.get("iterations")
        if (
            not isinstance(full_nonce, str)
            or not full_nonce.startswith(client_nonce)
            or len(full_nonce) <= len(client_nonce)
            or not all(0x21 <= ord(c) <= 0x7E and c not in ',"\\' for c in full_nonce)
        ):
            raise IntegrityFailure("the login challenge does not belong to this login")
        if not isinstance(iterations, int) or iterations < min_iterations:
            raise IntegrityFailure(
                "the challenge asks for only %r PBKDF2 iterations (minimum %d): refusing to use "
                "the password" % (iterations, min_iterations)
            )
        if iterations > MAX_ITERATIONS:
            raise IntegrityFailure(
                "the challenge asks for %d PBKDF2 iterations (maximum %d): refusing to spend "
                "that long on it" % (iterations, MAX_ITERATIONS)
            )
        salt = unb64(salt_text)
        auth_message = "n=%s,r=%s,r=%s,s=%s,i=%d,c=biws,r=%s" % (
            user,
            client_nonce,
            full_nonce,
            salt_text,
            iterations,
            full_nonce,
        )
        salted = salted_password(password, salt, iterations)
        client_key = hmac_sha256(salted, "Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        proof = bytes(
            a ^ b for a, b in zip(client_key, hmac_sha256(stored_key, auth_message))
        )
        welcome = conn.request({"op": "proof", "proof": b64(proof)}, "welcome")
        expected = hmac_sha256(hmac_sha256(salted, "Server Key"), auth_message)
        try:
            signature = base64.b64decode(str(welcome.get("signature")), validate=True)
        except ValueError:
            signature = b""
        if not hmac.compare_digest(expected, signature):
            raise IntegrityFailure(
                "the server's signature does not verify: this is not the server the account "
                "was registered with"
            )
        auth = auth_message.encode("utf-8")
        c2s = hmac_sha256(client_key, b"txsock/1 session c2s\x00" + auth)
        s2c = hmac_sha256(client_key, b"txsock/1 session s2c\x00" + auth)
        return Session(conn, user, c2s, s2c)
    except BaseException:
        conn.close()
        raise


def committed_earlier(user, transfer_id, before, after):
    """Whether a transfer a receipt calls committed was committed before this run sent it.

    A re-sent id gets the original receipt (§13), which does not say it is a repeat; the
    authenticated history (newest first) tells: the id on the page fetched before sending, or
    older than that page's newest entry on the page fetched after. None if both fell off."""
    mine = [i for i, e in enumerate(after) if e[0] == transfer_id and e[1] == user]
    if any(e[0] == transfer_id and e[1] == user for e in before):
        return True
    if not before:
        return False
    marker = [i for i, e in enumerate(after) if e == before[0]]
    if mine and marker:
        return mine[0] > marker[0]
    if mine:
        return False
    if marker:
        return True
    return None


def transfer(args, user, password, to, minor, transfer_id):
    """§13: a transfer without a verified receipt is sent again with the same id and a fresh
    nonce on a new connection (on the next server if this one cannot serve); every server of
    the ledger answers a repeated id with the original result."""
    alerts = []
    last = None
    before = None
    # Refusals that mean the frame was altered on the way (so it moved nothing); not
    # unknown_nonce, where the genuine frame may have used the nonce first.
    altered_codes = ("bad_mac", "malformed", "invalid_name", "invalid_amount")
    altered = 0
    for attempt in range(1, ATTEMPTS + 1):
        session = None
        try:
            session = login(args.servers, args.timeout, user, password, args.min_iterations)
            if attempt == 1:
                before, _ = session.history(0)
            result, balance = session.transfer(transfer_id, to, minor)
            earlier, now = None, None
            if result == "committed" and before is not None:
                after, _ = session.history(0)
                earlier = committed_earlier(user, transfer_id, before, after)
                if earlier is not False:
                    now = session.balance()
            session.logout()
            return result, balance, alerts, attempt, earlier, now
        except Refused as e:
            moved = args.servers.leave(e)
            if session is None and moved is None:
                raise  # the login was refused: a definite answer
            # An error frame is not authenticated and proves nothing (§13): try again.
            last = e
            if e.code in altered_codes:
                altered += 1
            if e.code in ("bad_mac", "unknown_nonce", "malformed", "invalid_name", "invalid_amount"):
                alerts.append(
                    "the server refused a correctly built transfer (%s): it was altered on the way"
                    % e.code
                )
                print("WARNING: " + alerts[-1], file=sys.stderr)
        except IntegrityFailure as e:
            if session is None:
                raise  # a refused challenge or signature: retrying only hands out more proofs
            last = e
            moved = None
            alerts.append(str(e))
            print("WARNING: " + str(e), file=sys.stderr)
        except ConnectionFailure as e:
            last = e
            moved = args.servers.leave(e)
        if session is not None:
            session.conn.close()
        on = " on %s" % moved if moved else ""
        print(
            "transfer %s: no verified answer (%s); retrying with the same id%s"
            % (transfer_id, last, on),
            file=sys.stderr,
        )
    if altered == ATTEMPTS:
        # Every send refused as altered in transit: a frame the server could not verify moves
        # nothing. (Not unknown_nonce: the genuine frame may have used the nonce first.)
        raise IntegrityFailure(
            "NOT DONE, altered on the way: the server refused all %d attempts as altered in "
            "transit (%s), and an altered transfer moves no money. That refusal is not signed: "
            "to be certain, run it again with --id %s over a network you trust (a retry never "
            "moves money twice)" % (ATTEMPTS, last.code, transfer_id)
        )
    why = "no verified answer after %d attempts (last: %s); run again with --id %s to learn " \
        "its fate" % (ATTEMPTS, last, transfer_id)
    if alerts:
        raise IntegrityFailure("; ".join(alerts) + "; " + why)
    raise ConnectionFailure(why)


def main(argv=None):
    parser = argparse.ArgumentParser(description="txsock client (Python, standard library only)")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--user", required=True)
    parser.add_argument("--min-iterations", type=int, default=DEFAULT_ITERATIONS)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--tls", action="store_true", help="TLS 1.3, certificate checked")
    parser.add_argument("--ca", help="trust the CA certificates in this PEM file (with --tls)")
    parser.add_argument("--tls-name", help="the name the certificate must carry (with --tls)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("register")
    sub.add_parser("balance")
    sub.add_parser("history")
    t = sub.add_parser("transfer")
    t.add_argument("to")
    t.add_argument("amount")
    t.add_argument("--id")
    args = parser.parse_args(argv)
    if (args.ca or args.tls_name) and not args.tls:
        parser.error("--ca and --tls-name need --tls")

    try:
        args.servers = Servers(args.server, args.tls, args.ca, args.tls_name)
        user = normalise_user(args.user)
        if args.command == "transfer":
            to = normalise_user(args.to)
            minor = parse_amount(args.amount)
            transfer_id = check_id(args.id) if args.id else "py-" + secrets.token_hex(6)
            if to == user:
                raise InvalidInput("you cannot send money to yourself")
        password = os.environ.get("TXSOCK_PASSWORD")
        if password is None:
            # getpass falls back to echoing the password, or fails with a traceback, when
            # there is no terminal: say what to do instead (exit 2, as the Rust client).
            if not sys.stdin.isatty():
                raise InvalidInput("no terminal to ask for the password: set TXSOCK_PASSWORD")
            try:
                password = getpass.getpass("Password: ")
            except (EOFError, KeyboardInterrupt):
                raise InvalidInput("no password given")
        check_password(password)

        if args.command == "register":
            register(args.servers, args.timeout, user, password, args.min_iterations)
            print("registered %s" % user)
            return 0
        if args.command == "transfer":
            result, balance, alerts, attempt, earlier, now = transfer(
                args, user, password, to, minor, transfer_id
            )
            note = " (verified after: %s)" % "; ".join(alerts) if alerts else ""
            what = "%s -> %s %s (id %s)" % (user, to, fmt_minor(minor), transfer_id)
            now_text = "; your balance now is %s" % fmt_minor(now) if now is not None else ""
            if result == "committed" and earlier is False:
                print("committed: %s; your balance is now %s%s" % (what, fmt_minor(balance), note))
            elif result == "committed" and earlier:
                print("already committed earlier, nothing moved: %s; the balance recorded right "
                      "after it then was %s%s%s" % (what, fmt_minor(balance), now_text, note))
            elif result == "committed":
                print("committed (by this request or an earlier one with this id; money moved "
                      "once): %s; the balance recorded right after it was %s%s%s"
                      % (what, fmt_minor(balance), now_text, note))
            if result == "committed":
                return 4 if alerts else 0
            print("refused: %s: %s; nothing moved; your balance when it was refused: %s%s"
                  % (what, result, fmt_minor(balance), note))
            return 4 if alerts else 3
        session = login(args.servers, args.timeout, user, password, args.min_iterations)
        if args.command == "balance":
            print("balance of %s: %s" % (user, fmt_minor(session.balance())))
        else:
            entries, more, read = [], True, session.statement
            while more and len(entries) < 20:
                try:
                    page, more = read(len(entries))
                except Refused as e:
                    # A server older than statements: transfers only (§6 `statement`).
                    if e.code != "malformed" or read == session.history:
                        raise
                    print("(this server lists transfers only: deposits are not shown)")
                    read = session.history
                    continue
                if not page:
                    break
                entries.extend(page)
            for (tid, frm, to, amount, at) in entries:
                if tid is None:
                    print("deposit to %s %s at %d" % (to, fmt_minor(amount), at))
                else:
                    print("%s %s -> %s %s at %d" % (tid, frm, to, fmt_minor(amount), at))
        session.logout()
        return 0
    except (InvalidInput, Refused, IntegrityFailure, ConnectionFailure) as e:
        kind = {2: "invalid input", 3: "refused", 4: "INTEGRITY FAILURE", 5: "connection failure"}
        print("%s: %s" % (kind[e.exit_status], e), file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
