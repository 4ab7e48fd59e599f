#!/usr/bin/env python3
"""A two-store bank transfer through libmmxa.so from Python (ctypes), with two-phase commit.

Two stores (bank A under rmid 1, bank B under rmid 2) take part in one global transaction: the
same XID is started on both, both are prepared, and both are committed only if both voted
XA_OK; otherwise both are rolled back. The script plays the transaction monitor itself, through
the function pointers of `mmxa_switch`, and the application, through mmxa_put / mmxa_get.
Last, a local transaction (mmxa_txn_begin) on bank A is promoted to a global transaction
(mmxa_txn_promote) once it turns out to need bank B too, and is committed on both the same way.
Bank A's accounts are listed in key order with a cursor (mmxa_cursor_open/next/close): over
committed data, and inside the branch of a transfer, where the branch's own writes show.

Usage: python3 bank.py DATA_DIR [LIBRARY]
LIBRARY defaults to $MMXA_LIB, then to "libmmxa.so.0" (an installed library).
"""

import ctypes
import os
import sys
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char, c_char_p, c_int, c_long,
                    c_size_t, c_uint64, c_void_p, create_string_buffer, sizeof)

# ---- the ABI of xa.h and mmxa.h -------------------------------------------------------------

XIDDATASIZE = 128
TMNOFLAGS, TMSUCCESS, TMFAIL = 0, 0x04000000, 0x20000000
XA_OK, XA_RDONLY = 0, 3
MMXA_OK, MMXA_NOTFOUND, MMXA_EBUFSIZE = 0, 1, -3
MMXA_SCAN_REVERSE, MMXA_SCAN_LO_EXCL, MMXA_SCAN_HI_INCL, MMXA_SCAN_PREFIX = 1, 2, 4, 8
XA_NAMES = {0: "XA_OK", 3: "XA_RDONLY", 100: "XA_RBROLLBACK", 104: "XA_RBOTHER",
            -3: "XAER_RMERR", -4: "XAER_NOTA", -5: "XAER_INVAL", -6: "XAER_PROTO",
            -7: "XAER_RMFAIL", -8: "XAER_DUPID"}


class XID(Structure):
    _fields_ = [("formatID", c_long), ("gtrid_length", c_long), ("bqual_length", c_long),
                ("data", c_char * XIDDATASIZE)]


INFO_ENTRY = CFUNCTYPE(c_int, c_char_p, c_int, c_long)
XID_ENTRY = CFUNCTYPE(c_int, POINTER(XID), c_int, c_long)
RECOVER_ENTRY = CFUNCTYPE(c_int, POINTER(XID), c_long, c_int, c_long)
COMPLETE_ENTRY = CFUNCTYPE(c_int, POINTER(c_int), POINTER(c_int), c_int, c_long)


class XaSwitch(Structure):
    # Note the standard order: rollback comes before prepare and commit.
    _fields_ = [("name", c_char * 32), ("flags", c_long), ("version", c_long),
                ("xa_open_entry", INFO_ENTRY), ("xa_close_entry", INFO_ENTRY),
                ("xa_start_entry", XID_ENTRY), ("xa_end_entry", XID_ENTRY),
                ("xa_rollback_entry", XID_ENTRY), ("xa_prepare_entry", XID_ENTRY),
                ("xa_commit_entry", XID_ENTRY), ("xa_recover_entry", RECOVER_ENTRY),
                ("xa_forget_entry", XID_ENTRY), ("xa_complete_entry", COMPLETE_ENTRY)]


assert sizeof(XID) == 152 and sizeof(XaSwitch) == 128, "this script assumes LP64"


def load(path):
    lib = ctypes.CDLL(path)
    lib.mmxa_get_xa_switch.restype = POINTER(XaSwitch)
    lib.mmxa_put.argtypes = [c_int, c_void_p, c_size_t, c_void_p, c_size_t]
    lib.mmxa_get.argtypes = [c_int, c_void_p, c_size_t, c_void_p, c_size_t, POINTER(c_size_t)]
    lib.mmxa_get_for_update.argtypes = lib.mmxa_get.argtypes
    lib.mmxa_last_error.restype = c_char_p
    lib.mmxa_txn_begin.argtypes = [c_int]
    lib.mmxa_txn_promote.argtypes = [c_int, POINTER(XID)]
    lib.mmxa_cursor_open.argtypes = [c_int, c_void_p, c_size_t, c_void_p, c_size_t, c_long,
                                     POINTER(c_uint64)]
    lib.mmxa_cursor_next.argtypes = [c_uint64, c_void_p, c_size_t, POINTER(c_size_t),
                                     c_void_p, c_size_t, POINTER(c_size_t)]
    lib.mmxa_cursor_close.argtypes = [c_uint64]
    return lib


def make_xid(gtrid, bqual):
    x = XID()
    x.formatID = 0x50594D4D  # "PYMM"
    x.gtrid_length, x.bqual_length = len(gtrid), len(bqual)
    ctypes.memmove(x.data, gtrid + bqual, len(gtrid) + len(bqual))
    return x


def xa_name(rc):
    return XA_NAMES.get(rc, str(rc))


# ---- the bank ---------------------------------------------------------------------------------

class Bank:
    """One store under one rmid, opened in the calling thread."""

    def __init__(self, lib, sw, rmid, directory, owner):
        self.lib, self.sw, self.rmid, self.owner = lib, sw, rmid, owner
        self.info = ("dir=%s" % directory).encode()
        rc = sw.xa_open_entry(self.info, rmid, TMNOFLAGS)
        if rc != XA_OK:
            raise RuntimeError("xa_open(%s): %s: %s" % (directory, xa_name(rc), self.error()))

    def error(self):
        return self.lib.mmxa_last_error().decode(errors="replace")

    def balance(self):
        # Read to be written back changed: inside a branch, lock the key exclusively at once.
        key = self.owner.encode()
        buf = create_string_buffer(32)
        length = c_size_t(0)
        rc = self.lib.mmxa_get_for_update(self.rmid, key, len(key), buf, sizeof(buf), byref(length))
        if rc == MMXA_NOTFOUND:
            return None
        if rc != MMXA_OK:
            raise RuntimeError("mmxa_get_for_update: %d: %s" % (rc, self.error()))
        return int(buf.raw[:length.value])

    def set_balance(self, value, owner=None):
        key, val = (owner or self.owner).encode(), str(value).encode()
        rc = self.lib.mmxa_put(self.rmid, key, len(key), val, len(val))
        if rc != MMXA_OK:
            raise RuntimeError("mmxa_put: %d: %s" % (rc, self.error()))

    def scan(self, lo=b"", hi=b"", flags=0):
        """Yields (key, value) in byte order from lo (inclusive) to hi (exclusive), an empty bound
        being open; flags as mmxa_cursor_open takes them. Inside the thread's branch the cursor
        sees the branch's writes; outside, committed data. Closed when the loop ends."""
        cursor = c_uint64(0)
        rc = self.lib.mmxa_cursor_open(self.rmid, lo, len(lo), hi, len(hi), flags, byref(cursor))
        if rc != MMXA_OK:
            raise RuntimeError("mmxa_cursor_open: %d: %s" % (rc, self.error()))
        # Small buffers, grown when an entry does not fit: MMXA_EBUFSIZE stores the lengths it
        # needs and leaves the entry next.
        key, value = create_string_buffer(4), create_string_buffer(2)
        key_len, value_len = c_size_t(0), c_size_t(0)
        try:
            while True:
                rc = self.lib.mmxa_cursor_next(cursor, key, sizeof(key), byref(key_len),
                                               value, sizeof(value), byref(value_len))
                if rc == MMXA_NOTFOUND:
                    return
                if rc == MMXA_EBUFSIZE:
                    key = create_string_buffer(max(key_len.value, sizeof(key)))
                    value = create_string_buffer(max(value_len.value, sizeof(value)))
                    continue
                if rc != MMXA_OK:
                    raise RuntimeError("mmxa_cursor_next: %d: %s" % (rc, self.error()))
                yield key.raw[:key_len.value], value.raw[:value_len.value]
        finally:
            self.lib.mmxa_cursor_close(cursor)

    def accounts(self, **scan):
        return ", ".join("%s = %s" % (k.decode(), v.decode()) for k, v in self.scan(**scan))

    def close(self):
        self.sw.xa_close_entry(self.info, self.rmid, TMNOFLAGS)


def transfer(sw, a, b, amount, xid):
    """Moves `amount` from a's owner to b's owner in one global transaction (same XID on both
    stores). Returns True if it committed."""
    for bank in (a, b):
        rc = sw.xa_start_entry(byref(xid), bank.rmid, TMNOFLAGS)
        if rc != XA_OK:
            raise RuntimeError("xa_start: %s: %s" % (xa_name(rc), bank.error()))
    ok = True
    try:
        new_a = a.balance() - amount
        a.set_balance(new_a)
        b.set_balance(b.balance() + amount)
        print("  accounts@A in the branch: %s" % a.accounts())
        if new_a < 0:
            print("  %s would be overdrawn: rolling back" % a.owner)
            ok = False
    except RuntimeError as e:
        print("  data call failed (%s): rolling back" % e)
        ok = False
    for bank in (a, b):
        rc = sw.xa_end_entry(byref(xid), bank.rmid, TMSUCCESS if ok else TMFAIL)
        ok = ok and rc == XA_OK
    if ok:
        # Phase 1: every store votes. A read-only vote needs no second phase.
        votes = [sw.xa_prepare_entry(byref(xid), bank.rmid, TMNOFLAGS) for bank in (a, b)]
        print("  prepare  A: %s  B: %s" % tuple(xa_name(v) for v in votes))
        ok = all(v in (XA_OK, XA_RDONLY) for v in votes)
        # Phase 2: commit everywhere, or roll back what was prepared.
        for bank, vote in zip((a, b), votes):
            if vote == XA_OK:
                entry = sw.xa_commit_entry if ok else sw.xa_rollback_entry
                rc = entry(byref(xid), bank.rmid, TMNOFLAGS)
                print("  %s %s: %s" % ("commit  " if ok else "rollback", bank.owner, xa_name(rc)))
    else:
        for bank in (a, b):
            rc = sw.xa_rollback_entry(byref(xid), bank.rmid, TMNOFLAGS)
            print("  rollback %s: %s" % (bank.owner, xa_name(rc)))
    return ok


def promoted_transfer(lib, sw, a, b, amount, xid):
    """Begins locally on a's store (no XID, no TM), then promotes the local transaction to
    `xid` and finishes it as a two-store global transaction. Returns True if it committed."""
    rc = lib.mmxa_txn_begin(a.rmid)
    if rc != MMXA_OK:
        raise RuntimeError("mmxa_txn_begin: %d: %s" % (rc, a.error()))
    a.set_balance(a.balance() - amount)
    # Bank B must take part: the local transaction becomes the branch `xid` on A (same writes,
    # same locks; the thread is associated with it as after xa_start), and B joins with xa_start.
    rc = lib.mmxa_txn_promote(a.rmid, byref(xid))
    if rc != XA_OK:
        lib.mmxa_txn_rollback(a.rmid)
        raise RuntimeError("mmxa_txn_promote: %s: %s" % (xa_name(rc), a.error()))
    print("  promoted on A: %s" % xa_name(rc))
    rc = sw.xa_start_entry(byref(xid), b.rmid, TMNOFLAGS)
    if rc != XA_OK:
        raise RuntimeError("xa_start: %s: %s" % (xa_name(rc), b.error()))
    b.set_balance(b.balance() + amount)
    ends = [sw.xa_end_entry(byref(xid), bank.rmid, TMSUCCESS) for bank in (a, b)]
    ok = all(rc == XA_OK for rc in ends)
    votes = [sw.xa_prepare_entry(byref(xid), bank.rmid, TMNOFLAGS) if ok else -1
             for bank in (a, b)]
    print("  prepare  A: %s  B: %s" % tuple(xa_name(v) for v in votes))
    ok = all(v == XA_OK for v in votes)
    for bank in (a, b):
        entry = sw.xa_commit_entry if ok else sw.xa_rollback_entry
        rc = entry(byref(xid), bank.rmid, TMNOFLAGS)
        print("  %s %s: %s" % ("commit  " if ok else "rollback", bank.owner, xa_name(rc)))
    return ok


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    data = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) == 3 else os.environ.get("MMXA_LIB", "libmmxa.so.0")
    try:
        lib = load(path)
    except OSError as e:
        print("bank.py: cannot load the mmxa library %s (%s).\n"
              "Give its path as the second argument (after `cargo build --release`: "
              "target/release/libmmxa.so), or set MMXA_LIB to it, or install mmxa "
              "(`make install`, then `ldconfig`) so that the loader finds libmmxa.so.0."
              % (path, e), file=sys.stderr)
        return 2
    sw = lib.mmxa_get_xa_switch().contents
    print("switch %r from %s" % (sw.name.decode(), path))
    a = Bank(lib, sw, 1, os.path.join(data, "bank-a"), "alice")
    b = Bank(lib, sw, 2, os.path.join(data, "bank-b"), "bob")
    try:
        if a.balance() is None:  # first run: one-operation writes, durable at once
            a.set_balance(100)
            a.set_balance(40, "carol")
            b.set_balance(50)
        print("balances before: alice@A = %d, bob@B = %d" % (a.balance(), b.balance()))
        print("accounts@A: %s" % a.accounts())
        run = os.getpid()
        committed = transfer(sw, a, b, 30, make_xid(b"py-30-%d" % run, b"1"))
        print("transfer of 30 %s: alice@A = %d, bob@B = %d"
              % ("committed" if committed else "rolled back", a.balance(), b.balance()))
        committed = transfer(sw, a, b, 1000, make_xid(b"py-1000-%d" % run, b"1"))
        print("transfer of 1000 %s: alice@A = %d, bob@B = %d"
              % ("committed" if committed else "rolled back", a.balance(), b.balance()))
        committed = promoted_transfer(lib, sw, a, b, 5, make_xid(b"py-5-%d" % run, b"1"))
        print("promoted transfer of 5 %s: alice@A = %d, bob@B = %d"
              % ("committed" if committed else "rolled back", a.balance(), b.balance()))
        print("accounts@A, last first: %s" % a.accounts(flags=MMXA_SCAN_REVERSE))
        print("accounts@A from b: %s" % a.accounts(lo=b"b"))
    finally:
        a.close()
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
