#!/usr/bin/env python3
"""Independent check of docs/vectors.json against the rules written in docs/PROTOCOL.md.

Standard library only. Recomputes every SCRAM value, session key and MAC from the documented
definitions (PBKDF2-HMAC-SHA256, HMAC-SHA256, the NUL-separated MAC inputs), re-derives the
documented value rules (amounts, usernames, transfer ids, framing, the byte rules of
request frames), and verifies every proof, signature and MAC in the example conversation.

Usage: python3 docs/check_vectors.py [path/to/vectors.json]
Exit status: 0 if every check passes, 1 otherwise.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import sys

NUL = "\x00"
MAX_AMOUNT_MINOR = 10**15

failures = []
checks = 0


def check(ok, what):
    global checks
    checks += 1
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def H(key, data):
    """HMAC-SHA256."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hmac.new(key, data, hashlib.sha256).digest()


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    """Canonical padded base64 only: decoding and re-encoding gives the same text."""
    raw = base64.b64decode(text, validate=True)
    if b64(raw) != text:
        raise ValueError("non-canonical base64: %r" % text)
    return raw


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


# --- SCRAM-SHA-256 and session keys (PROTOCOL.md "Login" and "Session keys") ---------------


def check_login(name, v):
    user, pw = v["user"], v["password"]
    salt = bytes.fromhex(v["salt_hex"])
    it = v["iterations"]
    cnonce, fnonce = v["client_nonce"], v["full_nonce"]
    check(b64(salt) == v["salt_b64"], name + ": salt_b64")
    check(unb64(v["salt_b64"]) == salt, name + ": salt_b64 canonical")
    check(fnonce.startswith(cnonce) and len(fnonce) > len(cnonce), name + ": nonce extends")

    client_first_bare = "n=%s,r=%s" % (user, cnonce)
    server_first = "r=%s,s=%s,i=%d" % (fnonce, v["salt_b64"], it)
    client_final_without_proof = "c=biws,r=%s" % fnonce
    auth_message = ",".join([client_first_bare, server_first, client_final_without_proof])
    check(client_first_bare == v["client_first_bare"], name + ": client-first-bare")
    check(server_first == v["server_first"], name + ": server-first")
    check(
        client_final_without_proof == v["client_final_without_proof"],
        name + ": client-final-without-proof",
    )
    check(auth_message == v["auth_message"], name + ": AuthMessage")
    check(base64.b64decode("biws") == b"n,,", name + ": c=biws is base64('n,,')")

    salted = hashlib.pbkdf2_hmac("sha256", pw.encode("utf-8"), salt, it, 32)
    client_key = H(salted, "Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = H(salted, "Server Key")
    client_signature = H(stored_key, auth_message)
    proof = xor(client_key, client_signature)
    server_signature = H(server_key, auth_message)
    check(salted.hex() == v["salted_password_hex"], name + ": SaltedPassword")
    check(client_key.hex() == v["client_key_hex"], name + ": ClientKey")
    check(b64(stored_key) == v["stored_key_b64"], name + ": StoredKey")
    check(b64(server_key) == v["server_key_b64"], name + ": ServerKey")
    check(b64(proof) == v["client_proof_b64"], name + ": ClientProof")
    check(b64(server_signature) == v["server_signature_b64"], name + ": ServerSignature")

    # What the server does: recover ClientKey from the proof and check it against StoredKey.
    recovered = xor(unb64(v["client_proof_b64"]), H(unb64(v["stored_key_b64"]), auth_message))
    check(
        hashlib.sha256(recovered).digest() == unb64(v["stored_key_b64"]),
        name + ": server recovers ClientKey",
    )

    c2s_label = "txsock/1 session c2s" + NUL
    s2c_label = "txsock/1 session s2c" + NUL
    check(v["session_key_c2s_label"] == c2s_label, name + ": c2s label")
    check(v["session_key_s2c_label"] == s2c_label, name + ": s2c label")
    c2s = H(client_key, c2s_label + auth_message)
    s2c = H(client_key, s2c_label + auth_message)
    check(c2s.hex() == v["session_key_c2s_hex"], name + ": c2s session key")
    check(s2c.hex() == v["session_key_s2c_hex"], name + ": s2c session key")
    return c2s, s2c


# --- MAC inputs (PROTOCOL.md "MAC inputs") ---------------------------------------------------


def transfer_input(user, id_, to, amount_minor, nonce_hex):
    return NUL.join(["txsock/1 transfer", user, id_, to, str(amount_minor), nonce_hex])


def receipt_input(seq, id_, to, amount_minor, result, balance_minor, nonce_hex):
    parts = [
        "txsock/1 receipt",
        str(seq),
        id_,
        to,
        str(amount_minor),
        result,
        str(balance_minor),
        nonce_hex,
    ]
    return NUL.join(parts)


def balance_input(seq, balance_minor):
    return NUL.join(["txsock/1 balance", str(seq), str(balance_minor)])


def history_input(seq, more, entries):
    parts = ["txsock/1 history", str(seq), "1" if more else "0"]
    for e in entries:
        parts += [e["id"], e["from"], e["to"], str(e["amount_minor"]), str(e["at"])]
    return NUL.join(parts)


def statement_input(seq, more, entries):
    """A deposit has no id and no sender: both are empty fields in the MAC input."""
    parts = ["txsock/1 statement", str(seq), "1" if more else "0"]
    for e in entries:
        kind = e["kind"]
        if kind == "transfer":
            id_, from_ = e["id"], e["from"]
        elif kind == "deposit" and "id" not in e and "from" not in e:
            id_, from_ = "", ""
        else:
            raise ValueError("bad statement entry %r" % (e,))
        parts += [kind, id_, from_, e["to"], str(e["amount_minor"]), str(e["at"])]
    return NUL.join(parts)


def mac_input(name, f):
    if name == "transfer":
        return transfer_input(f["user"], f["id"], f["to"], f["amount_minor"], f["nonce_hex"])
    if name == "receipt":
        return receipt_input(
            f["seq"],
            f["id"],
            f["to"],
            f["amount_minor"],
            f["result"],
            f["balance_minor"],
            f["nonce_hex"],
        )
    if name == "balance":
        return balance_input(f["seq"], f["balance_minor"])
    if name == "history":
        return history_input(f["seq"], f["more"], f["entries"])
    if name == "statement":
        return statement_input(f["seq"], f["more"], f["entries"])
    raise ValueError("unknown MAC vector " + name)


# --- Values (PROTOCOL.md "Value formats") ----------------------------------------------------


def parse_amount(text, allow_zero=False):
    """Returns minor units, or one of malformed / too_precise / zero / too_large."""
    m = re.fullmatch(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?", text)
    if not m:
        return "malformed"
    frac = m.group(2) or ""
    if len(frac) > 2:
        return "too_precise"
    minor = int(m.group(1)) * 100 + int((frac + "00")[:2])
    if minor > MAX_AMOUNT_MINOR:
        return "too_large"
    if minor == 0 and not allow_zero:
        return "zero"
    return minor


def parse_username(text):
    raw = text.encode("utf-8")
    if not raw:
        return ("err", "empty")
    if len(raw) > 32:
        return ("err", "too_long")
    lowered = "".join(c.lower() if "A" <= c <= "Z" else c for c in text)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.\-]*", lowered):
        return ("err", "bad_character")
    return ("ok", lowered)


def parse_transfer_id(text):
    raw = text.encode("utf-8")
    if not raw:
        return ("err", "empty")
    if len(raw) > 32:
        return ("err", "too_long")
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]+", text):
        return ("err", "bad_character")
    return ("ok", text)


def frames(max_frame, chunks):
    """The documented framing: lines end at LF; one CR right before the LF is dropped; a
    line whose bytes before the LF exceed max_frame is one frame_too_long, then skipped."""
    out, buf, discarding = [], b"", False
    for chunk in chunks:
        for byte in chunk.encode("utf-8"):
            if byte == 0x0A:
                if discarding:
                    discarding = False
                else:
                    line = buf[:-1] if buf.endswith(b"\r") else buf
                    out.append({"frame": line.decode("utf-8")})
                buf = b""
            elif not discarding:
                if len(buf) == max_frame:
                    out.append({"error": "frame_too_long"})
                    discarding, buf = True, b""
                else:
                    buf += bytes([byte])
    return out


def lexically_malformed(frame):
    """The documented byte rules of a frame (PROTOCOL.md sections 2 and 3), before any JSON
    parsing: a CR anywhere (the framing removed the one before the LF), a raw U+0000 to
    U+001F inside a string, or whitespace other than space and tab between tokens."""
    in_string = escaped = False
    for ch in frame:
        if ch == "\r":
            return True
        if in_string:
            if ord(ch) < 0x20:
                return True
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ord(ch) < 0x20 and ch != "\t":
            return True
    return False


# --- The example conversation ----------------------------------------------------------------


def check_conversation(conv, login, c2s, s2c):
    user = login["user"]
    last_nonce, last_seq = None, 0
    for step in conv:
        text = step["frame"]
        check("\n" not in text and "\\" not in text, "frame is one line without escapes")
        msg = json.loads(text)
        op = msg["op"]
        what = "conversation %s %s" % (step["from"], op)
        if step["from"] == "client":
            if op == "register":
                check(msg["salt"] == login["salt_b64"], what + ": salt")
                check(msg["stored_key"] == login["stored_key_b64"], what + ": StoredKey")
                check(msg["server_key"] == login["server_key_b64"], what + ": ServerKey")
            elif op == "login":
                check(msg["nonce"] == login["client_nonce"], what + ": nonce")
            elif op == "proof":
                check(msg["proof"] == login["client_proof_b64"], what + ": proof")
            elif op == "transfer":
                amount = parse_amount(msg["amount"])
                to = parse_username(msg["to"])[1]
                inp = transfer_input(user, msg["id"], to, amount, msg["nonce"])
                check(H(c2s, inp).hex() == msg["mac"], what + ": MAC " + msg["id"])
                last_nonce = msg["nonce"]
        else:
            if op == "challenge":
                check(msg["nonce"] == login["full_nonce"], what + ": nonce")
                check(msg["salt"] == login["salt_b64"], what + ": salt")
                check(msg["iterations"] == login["iterations"], what + ": iterations")
            elif op == "welcome":
                check(msg["signature"] == login["server_signature_b64"], what + ": signature")
            elif op == "receipt":
                check(msg["seq"] == last_seq + 1, what + ": seq")
                last_seq = msg["seq"]
                inp = receipt_input(
                    msg["seq"],
                    msg["id"],
                    msg["to"],
                    parse_amount(msg["amount"]),
                    msg["result"],
                    parse_amount(msg["balance"], allow_zero=True),
                    last_nonce,
                )
                check(H(s2c, inp).hex() == msg["mac"], what + ": MAC")
            elif op == "balance":
                check(msg["seq"] == last_seq + 1, what + ": seq")
                last_seq = msg["seq"]
                inp = balance_input(msg["seq"], parse_amount(msg["balance"], allow_zero=True))
                check(H(s2c, inp).hex() == msg["mac"], what + ": MAC")
            elif op == "history":
                check(msg["seq"] == last_seq + 1, what + ": seq")
                last_seq = msg["seq"]
                entries = [dict(e, amount_minor=parse_amount(e["amount"])) for e in msg["entries"]]
                inp = history_input(msg["seq"], msg["more"], entries)
                check(H(s2c, inp).hex() == msg["mac"], what + ": MAC")
            elif op == "statement":
                check(msg["seq"] == last_seq + 1, what + ": seq")
                last_seq = msg["seq"]
                entries = [dict(e, amount_minor=parse_amount(e["amount"])) for e in msg["entries"]]
                inp = statement_input(msg["seq"], msg["more"], entries)
                check(H(s2c, inp).hex() == msg["mac"], what + ": MAC")
            elif op == "nonces":
                for n in msg["nonces"]:
                    check(re.fullmatch(r"[0-9a-f]{32}", n) is not None, what + ": nonce hex")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "vectors.json")
    with open(path, encoding="utf-8") as f:
        v = json.load(f)

    c2s, s2c = check_login("login", v["login"])
    check_login("rfc7677", v["rfc7677"])
    keys = {"c2s": c2s, "s2c": s2c}

    for m in v["macs"]:
        name = m["name"]
        inp = mac_input(name, m["fields"])
        check(inp == m["input"], "mac %s: documented input string" % name)
        check(inp.startswith("txsock/1 %s\x00" % name), "mac %s: label" % name)
        check(H(keys[m["key"]], inp).hex() == m["mac_hex"], "mac %s: tag" % name)

    check_conversation(v["conversation"], v["login"], c2s, s2c)

    for section, zero in (("amounts", False), ("balances", True)):
        for ok in v[section]["valid"]:
            got = parse_amount(ok["text"], zero)
            check(got == ok["minor"], "%s %r -> %r" % (section, ok["text"], got))
            spelled = "%d.%02d" % divmod(ok["minor"], 100)
            check(parse_amount(spelled, zero) == ok["minor"], "%s spelled %s" % (section, spelled))
        for bad in v[section]["invalid"]:
            got = parse_amount(bad["text"], zero)
            check(got == bad["error"], "%s %r -> %r" % (section, bad["text"], got))
    for ok in v["usernames"]["valid"]:
        got = parse_username(ok["text"])
        check(got == ("ok", ok["normalised"]), "username %r -> %r" % (ok["text"], got))
    for bad in v["usernames"]["invalid"]:
        got = parse_username(bad["text"])
        check(got == ("err", bad["error"]), "username %r -> %r" % (bad["text"], got))
    # Requests: the byte rules alone (the JSON shapes are checked by core/tests/vectors.rs).
    # A frame they refuse must be listed as malformed (so never as valid).
    for r in v["requests"]:
        if "frame" in r and lexically_malformed(r["frame"]):
            check(r.get("error") == "malformed", "request %r is malformed" % r["frame"])
    for ok in v["transfer_ids"]["valid"]:
        check(parse_transfer_id(ok) == ("ok", ok), "transfer id %r" % ok)
    for bad in v["transfer_ids"]["invalid"]:
        got = parse_transfer_id(bad["text"])
        check(got == ("err", bad["error"]), "transfer id %r -> %r" % (bad["text"], got))
    for case in v["framing"]:
        got = frames(case["max_frame"], case["chunks"])
        check(got == case["expect"], "framing %r -> %r" % (case["chunks"], got))

    if failures:
        print("check_vectors: %d of %d checks FAILED" % (len(failures), checks))
        return 1
    print("check_vectors: all %d checks passed" % checks)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyError, ValueError, TypeError, binascii.Error) as e:
        print("check_vectors: malformed vectors file: %r" % (e,))
        sys.exit(1)
