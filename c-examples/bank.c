/*
 * bank.c - two banks, two mmxa stores, one global transaction with two-phase commit.
 *
 * This program plays all three XA roles at once:
 *   - the resource managers (RMs) are two mmxa stores: bank A's accounts live in DATA/bank-a,
 *     bank B's in DATA/bank-b. Both are driven through the one switch libmmxa.so exports,
 *     mmxa_switch, opened under two rmids (1 = bank A, 2 = bank B), as a monitor would;
 *   - the transaction manager (TM) is the handful of functions named tm_*: they send the XA
 *     calls (xa_start, xa_end, xa_prepare, xa_commit, xa_rollback) to both RMs with the SAME XID,
 *     as LIXA does, and print the commit decision a real TM would force to its log;
 *   - the application program (AP) reads and writes balances with mmxa_get/mmxa_put while the
 *     thread is associated with the branch, so the writes belong to the global transaction.
 *
 * Storage of a balance: the key is the account name ("alice", "bob"), the value the balance as
 * a decimal ASCII string without a terminating NUL (for example the 3 bytes "100"), so any tool
 * that dumps values shows it to a person. Amounts are whole units; parse_balance() rejects
 * anything that is not an optional '-' and 1..18 digits.
 *
 * Concurrency note: mmxa reads do not lock (a branch sees committed data plus its own writes)
 * while a write locks its key until the branch completes. This example is single-threaded; an
 * application running concurrent transfers must guard the read-modify-write of a balance itself.
 *
 * Usage: bank [DATA_DIR]        (default ./bank-data; created if missing)
 * Exit status: 0 when everything went as expected, 1 on any unexpected XA or mmxa result.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "xa.h"
#include "mmxa.h"

/* One bank = one resource manager instance. */
struct bank {
    const char *name;       /* "A" or "B", for messages */
    int rmid;               /* the TM's number for this RM, passed on every XA call */
    const char *account;    /* the one account this example uses at the bank */
    int64_t seed;           /* its opening balance */
    char info[MAXINFOSIZE]; /* the xa_open string: "dir=DATA/bank-x" */
};

static struct bank bank_a = {"A", 1, "alice", 100, ""};
static struct bank bank_b = {"B", 2, "bob", 50, ""};
static struct bank *const banks[2] = {&bank_a, &bank_b};

/* The switch, taken by name the way a monitor links it (Tuxedo's RM file names this symbol). */
static struct xa_switch_t *const sw = &mmxa_switch;

/* ---- messages --------------------------------------------------------------------------- */

static const char *xa_name(int rc)
{
    switch (rc) {
    case XA_OK: return "XA_OK";
    case XA_RDONLY: return "XA_RDONLY";
    case XA_RETRY: return "XA_RETRY";
    case XA_HEURMIX: return "XA_HEURMIX";
    case XA_HEURRB: return "XA_HEURRB";
    case XA_HEURCOM: return "XA_HEURCOM";
    case XA_HEURHAZ: return "XA_HEURHAZ";
    case XA_NOMIGRATE: return "XA_NOMIGRATE";
    case XA_RBROLLBACK: return "XA_RBROLLBACK";
    case XA_RBCOMMFAIL: return "XA_RBCOMMFAIL";
    case XA_RBDEADLOCK: return "XA_RBDEADLOCK";
    case XA_RBINTEGRITY: return "XA_RBINTEGRITY";
    case XA_RBOTHER: return "XA_RBOTHER";
    case XA_RBPROTO: return "XA_RBPROTO";
    case XA_RBTIMEOUT: return "XA_RBTIMEOUT";
    case XA_RBTRANSIENT: return "XA_RBTRANSIENT";
    case XAER_ASYNC: return "XAER_ASYNC";
    case XAER_RMERR: return "XAER_RMERR";
    case XAER_NOTA: return "XAER_NOTA";
    case XAER_INVAL: return "XAER_INVAL";
    case XAER_PROTO: return "XAER_PROTO";
    case XAER_RMFAIL: return "XAER_RMFAIL";
    case XAER_DUPID: return "XAER_DUPID";
    case XAER_OUTSIDE: return "XAER_OUTSIDE";
    default: return "unknown XA code";
    }
}

static int is_rollback_code(int rc)
{
    return rc >= XA_RBBASE && rc <= XA_RBEND;
}

/* mmxa_last_error() describes the last failed call of this thread; it is empty after a success. */
static const char *detail(void)
{
    const char *msg = mmxa_last_error();
    return msg[0] != '\0' ? msg : "(no detail)";
}

/* Stops the program after an XA result the TM did not expect. */
static void xa_unexpected(const char *call, const struct bank *b, int rc, const char *wanted)
{
    fprintf(stderr, "bank: %s at bank %s (rmid %d) returned %s (%d), expected %s: %s\n", call,
            b->name, b->rmid, xa_name(rc), rc, wanted, detail());
    exit(1);
}

static void xa_expect(const char *call, const struct bank *b, int rc, int want)
{
    if (rc != want)
        xa_unexpected(call, b, rc, xa_name(want));
}

/* Stops the program after an mmxa data call failed. */
static void mm_failed(const char *call, const struct bank *b, const char *key, int rc)
{
    fprintf(stderr, "bank: %s(\"%s\") at bank %s returned %d (%s): %s\n", call, key, b->name, rc,
            mmxa_strerror(rc), detail());
    exit(1);
}

/* ---- balances (AP side) ----------------------------------------------------------------- */

/* Parses a stored balance; returns 0 and sets *out, or -1 if the bytes are not a balance. */
static int parse_balance(const char *bytes, size_t len, int64_t *out)
{
    size_t i = 0;
    int64_t v = 0;
    int neg = 0;
    if (len > 0 && bytes[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (len == i || len - i > 18)
        return -1;
    for (; i < len; i++) {
        if (bytes[i] < '0' || bytes[i] > '9')
            return -1;
        v = v * 10 + (bytes[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

/*
 * Reads the account's balance: inside a branch the thread sees the branch's own writes,
 * outside it sees committed data. Returns 1 and sets *balance, or 0 if the account is absent.
 * The balance is read to be written back changed, so inside a branch the read locks it
 * exclusively at once (mmxa_get_for_update): a plain read would lock it shared, and two
 * transfers that both read it and then write it would deadlock on the upgrade.
 */
static int read_balance(const struct bank *b, int64_t *balance)
{
    char buf[32];
    size_t len = 0;
    int rc = mmxa_get_for_update(b->rmid, b->account, strlen(b->account), buf, sizeof buf, &len);
    if (rc == MMXA_NOTFOUND)
        return 0;
    if (rc != MMXA_OK)
        mm_failed("mmxa_get_for_update", b, b->account, rc);
    if (parse_balance(buf, len, balance) != 0) {
        fprintf(stderr, "bank: the balance of %s at bank %s is not a number: \"%.*s\"\n",
                b->account, b->name, (int)len, buf);
        exit(1);
    }
    return 1;
}

static int64_t balance_of(const struct bank *b)
{
    int64_t v;
    if (!read_balance(b, &v)) {
        fprintf(stderr, "bank: account %s at bank %s does not exist\n", b->account, b->name);
        exit(1);
    }
    return v;
}

static void write_balance(const struct bank *b, int64_t balance)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%" PRId64, balance);
    int rc = mmxa_put(b->rmid, b->account, strlen(b->account), buf, (size_t)len);
    if (rc != MMXA_OK)
        mm_failed("mmxa_put", b, b->account, rc);
}

static void print_balances(const char *when)
{
    int64_t a = balance_of(&bank_a), b = balance_of(&bank_b);
    printf("balances %s: %s@A = %" PRId64 ", %s@B = %" PRId64 " (total %" PRId64 ")\n", when,
           bank_a.account, a, bank_b.account, b, a + b);
}

/* ---- the transaction manager ------------------------------------------------------------ */

static void tm_open(struct bank *b, const char *data_dir)
{
    int n = snprintf(b->info, sizeof b->info, "dir=%s/bank-%c", data_dir, b->name[0] + 'a' - 'A');
    int rc;
    if (n < 0 || (size_t)n >= sizeof b->info) {
        fprintf(stderr, "bank: data directory path too long for an open string (%d bytes max)\n",
                MAXINFOSIZE - 1);
        exit(1);
    }
    rc = sw->xa_open_entry(b->info, b->rmid, TMNOFLAGS);
    xa_expect("xa_open", b, rc, XA_OK);
    printf("  bank %s: xa_open(\"%s\", rmid %d) -> %s\n", b->name, b->info, b->rmid, xa_name(rc));
}

static void tm_close(struct bank *b)
{
    int rc = sw->xa_close_entry(b->info, b->rmid, TMNOFLAGS);
    xa_expect("xa_close", b, rc, XA_OK);
    printf("  bank %s: xa_close(rmid %d) -> %s\n", b->name, b->rmid, xa_name(rc));
}

/* One global transaction id, used for the branches at both banks. */
static XID make_xid(const char *gtrid, const char *bqual)
{
    XID x;
    memset(&x, 0, sizeof x);
    x.formatID = 0x4d4d5841; /* "MMXA": this TM's private format */
    x.gtrid_length = (long)strlen(gtrid);
    x.bqual_length = (long)strlen(bqual);
    memcpy(x.data, gtrid, (size_t)x.gtrid_length);
    memcpy(x.data + x.gtrid_length, bqual, (size_t)x.bqual_length);
    return x;
}

static void print_xid(const XID *x)
{
    printf("%lx:%.*s:%.*s", x->formatID, (int)x->gtrid_length, x->data, (int)x->bqual_length,
           x->data + x->gtrid_length);
}

/* xa_start on both RMs: from here on this thread's mmxa calls belong to the branches. */
static void tm_begin(XID *xid)
{
    int i;
    printf("  TM: xa_start(TMNOFLAGS)  ");
    for (i = 0; i < 2; i++) {
        int rc = sw->xa_start_entry(xid, banks[i]->rmid, TMNOFLAGS);
        xa_expect("xa_start", banks[i], rc, XA_OK);
        printf("  %s: %s", banks[i]->name, xa_name(rc));
    }
    printf("\n");
}

/* Two-phase commit: end, prepare both, log the decision, commit both. */
static void tm_commit(XID *xid)
{
    int i, rc;
    printf("  TM: xa_end(TMSUCCESS)    ");
    for (i = 0; i < 2; i++) {
        rc = sw->xa_end_entry(xid, banks[i]->rmid, TMSUCCESS);
        xa_expect("xa_end(TMSUCCESS)", banks[i], rc, XA_OK);
        printf("  %s: %s", banks[i]->name, xa_name(rc));
    }
    printf("\n  TM: xa_prepare           ");
    for (i = 0; i < 2; i++) {
        rc = sw->xa_prepare_entry(xid, banks[i]->rmid, TMNOFLAGS);
        /*
         * Both branches wrote, so both must vote XA_OK. A real TM would roll back the other
         * branches on any other vote; this example treats it as a failure of the example.
         */
        xa_expect("xa_prepare", banks[i], rc, XA_OK);
        printf("  %s: %s", banks[i]->name, xa_name(rc));
    }
    printf("\n  TM: both voted yes; decision logged: COMMIT ");
    print_xid(xid);
    printf("\n      (a real TM forces this record to its log before the first xa_commit)\n");
    printf("  TM: xa_commit(TMNOFLAGS) ");
    for (i = 0; i < 2; i++) {
        rc = sw->xa_commit_entry(xid, banks[i]->rmid, TMNOFLAGS);
        xa_expect("xa_commit", banks[i], rc, XA_OK);
        printf("  %s: %s", banks[i]->name, xa_name(rc));
    }
    printf("\n");
}

/* The AP failed: end both associations with TMFAIL and roll both branches back. */
static void tm_rollback(XID *xid)
{
    int i, rc;
    printf("  TM: xa_end(TMFAIL)       ");
    for (i = 0; i < 2; i++) {
        rc = sw->xa_end_entry(xid, banks[i]->rmid, TMFAIL);
        /* mmxa marks a branch ended with TMFAIL rollback-only and answers XA_RBROLLBACK. */
        if (rc != XA_OK && !is_rollback_code(rc))
            xa_unexpected("xa_end(TMFAIL)", banks[i], rc, "XA_OK or an XA_RB* code");
        printf("  %s: %s", banks[i]->name, xa_name(rc));
    }
    printf("\n  TM: decision: ROLLBACK (nothing to log: a TM presumes abort)\n");
    printf("  TM: xa_rollback          ");
    for (i = 0; i < 2; i++) {
        rc = sw->xa_rollback_entry(xid, banks[i]->rmid, TMNOFLAGS);
        /* For a rollback-only branch the RM may answer XA_OK or an XA_RB* code. */
        if (rc != XA_OK && !is_rollback_code(rc))
            xa_unexpected("xa_rollback", banks[i], rc, "XA_OK or an XA_RB* code");
        printf("  %s: %s", banks[i]->name, xa_name(rc));
    }
    printf("\n");
}

/* ---- the application -------------------------------------------------------------------- */

/*
 * Moves `amount` from alice@A to bob@B in one global transaction. Bob is credited first, so a
 * failed transfer has work to undo at bank B. Returns 1 if committed, 0 if rolled back.
 */
static int transfer(int number, int64_t amount)
{
    char gtrid[32];
    XID xid;
    int64_t from, to;
    snprintf(gtrid, sizeof gtrid, "transfer-%d", number);
    xid = make_xid(gtrid, "bank");
    printf("\ntransfer %d: %" PRId64 " from %s@A to %s@B, XID ", number, amount, bank_a.account,
           bank_b.account);
    print_xid(&xid);
    printf("\n");

    tm_begin(&xid);
    to = balance_of(&bank_b);
    write_balance(&bank_b, to + amount);
    printf("  AP: %s@B %" PRId64 " -> %" PRId64 " (in the branch, not yet visible to others)\n",
           bank_b.account, to, to + amount);
    from = balance_of(&bank_a);
    if (from < amount) {
        printf("  AP: %s@A has %" PRId64 ", less than %" PRId64 ": insufficient funds, abort\n",
               bank_a.account, from, amount);
        tm_rollback(&xid);
        return 0;
    }
    write_balance(&bank_a, from - amount);
    printf("  AP: %s@A %" PRId64 " -> %" PRId64 " (in the branch, not yet visible to others)\n",
           bank_a.account, from, from - amount);
    tm_commit(&xid);
    return 1;
}

/* Creates the account with its opening balance, outside any branch, unless it exists. */
static void seed(const struct bank *b)
{
    int64_t v;
    if (read_balance(b, &v)) {
        printf("  %s@%s exists (balance %" PRId64 ")\n", b->account, b->name, v);
        return;
    }
    /* Outside a branch, mmxa_put is a durable transaction of its own (a "local" write). */
    write_balance(b, b->seed);
    printf("  %s@%s created with %" PRId64 " (local write, outside any branch)\n", b->account,
           b->name, b->seed);
}

static void expect_balances(int64_t a, int64_t b, const char *why)
{
    int64_t got_a = balance_of(&bank_a), got_b = balance_of(&bank_b);
    if (got_a != a || got_b != b) {
        fprintf(stderr,
                "bank: %s: expected %s@A = %" PRId64 ", %s@B = %" PRId64 ", found %" PRId64
                " and %" PRId64 "\n",
                why, bank_a.account, a, bank_b.account, b, got_a, got_b);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *data_dir = argc > 1 ? argv[1] : "./bank-data";
    int64_t a0, b0;

    if (argc > 2) {
        fprintf(stderr, "usage: %s [DATA_DIR]\n", argv[0]);
        return 2;
    }
    /* mmxa creates the store directories, but not a missing parent of both. */
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "bank: cannot create %s: %s\n", data_dir, strerror(errno));
        return 1;
    }

    printf("mmxa bank example: one TM, two RMs (bank A = rmid 1, bank B = rmid 2), switch \"%s\"\n",
           sw->name);
    printf("opening the resource managers:\n");
    tm_open(&bank_a, data_dir);
    tm_open(&bank_b, data_dir);

    printf("opening accounts:\n");
    seed(&bank_a);
    seed(&bank_b);
    a0 = balance_of(&bank_a);
    b0 = balance_of(&bank_b);
    print_balances("before");

    if (a0 < 30) {
        fprintf(stderr, "bank: %s@A has only %" PRId64 "; remove %s to start over\n",
                bank_a.account, a0, data_dir);
        return 1;
    }
    if (!transfer(1, 30)) {
        fprintf(stderr, "bank: transfer 1 was rolled back, expected a commit\n");
        return 1;
    }
    expect_balances(a0 - 30, b0 + 30, "after transfer 1");
    print_balances("after transfer 1 (committed)");

    /* More than alice has: the AP aborts, both branches roll back, nothing changes. */
    if (transfer(2, 1000)) {
        fprintf(stderr, "bank: transfer 2 committed, expected a rollback\n");
        return 1;
    }
    expect_balances(a0 - 30, b0 + 30, "after the rolled-back transfer 2");
    print_balances("after transfer 2 (rolled back, unchanged)");

    printf("\nclosing the resource managers:\n");
    tm_close(&bank_a);
    tm_close(&bank_b);
    printf("done: money is conserved (total %" PRId64 " before and after)\n", a0 + b0);
    return 0;
}
