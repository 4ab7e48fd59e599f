/*
 * hostile.c - throws bad arguments and wrong-state calls at every entry point of mmxa_switch and
 * at every data call, and checks that each answers the code shared/xa-spec.md documents (or that
 * include/mmxa.h documents for the data API), without crashing or hanging.
 *
 * Covered (section functions below, in this order):
 *   switch_sanity     name, version, flags, pointers, getter
 *   strings           mmxa_strerror for every code (and unknown ones), mmxa_last_error
 *   unopened_rmids    every XA call on unopened and negative rmids -> XAER_PROTO (xa_close: XA_OK),
 *                     data calls -> MMXA_ENOTOPEN
 *   open_strings      NULL, "", unknown keys, bad values, 300 bytes without a NUL in the first 256,
 *                     256 bytes ending at an unreadable page, 255 bytes ending at one (accepted),
 *                     a dir that cannot be created -> XAER_RMERR; xa_close info checks
 *   open_close        reopen, rmid/store clashes, any int as rmid, open/close loop
 *   flag_bits         every single bit 0..63 and some combinations on each of the ten entries,
 *                     with the rmid open (R1) and not open (R0): TMASYNC -> XAER_ASYNC where
 *                     §2.2 accepts TMASYNC, any other bit outside the accepted set -> XAER_INVAL
 *   xid_validation    NULL XID, null XID, lengths -1/0/65/LONG_MAX/LONG_MIN -> XAER_INVAL on
 *                     every XID-taking entry; check order rmid before XID
 *   xid_identity      trailing garbage never matters, formatID kept in 64 bits, lengths part of the
 *                     identity, xa_recover output (tail zeroed, never more than count), the
 *                     caller's XID never written
 *   state_table       §5.2/§5.3 wrong-state calls: end/prepare/commit/rollback/forget of unknown
 *                     XIDs, DUPID, double prepare, commit of an unprepared branch, close while
 *                     associated or suspended, TMFAIL paths, read-only, recover scans,
 *                     xa_complete with guarded and NULL pointers
 *   threads           per-thread R state, rollback from another thread, TMJOIN, TMMIGRATE
 *   data_calls        NULL pointers, zero/huge/SIZE_MAX lengths, limits, MMXA_EBUFSIZE contract
 *   local_txns        mmxa_txn_* on unopened and odd rmids, twice, without a transaction, NULL
 *                     level_out; mmxa_txn_promote with NULL, null and malformed XIDs (the local
 *                     transaction stays open), a duplicate XID, the caller's XID never written;
 *                     xa_start inside a local transaction -> XAER_OUTSIDE
 *   cursors           mmxa_cursor_* on unopened rmids; NULL out-pointer, NULL bounds with lengths,
 *                     unknown flags, a prefix with hi or bound flags, oversized bounds (the id
 *                     never written on failure); NULL lengths, NULL buffers with capacities,
 *                     too small buffers (the entry stays next, buffers untouched); zero, unknown
 *                     and closed ids; a cursor of a branch after suspend/end/commit and in
 *                     another thread (unopened, outside the branch, joined); a closed rmid
 *
 * CHK(call, want) checks an XA call, CHKM a data call: on a mismatch they print file:line, the
 * call, got and expected, the context, and mmxa_last_error(). Both also check the last-error
 * contract: empty after a call that answered 0, non-empty after a failure. CHKV/CHKMV compare a
 * value obtained earlier or in another thread (no last-error check). SOFT() prints a NOTE for
 * behaviour that is debatable rather than specified, without failing.
 * A SIGALRM guard ends a hung run after 60 seconds (HOSTILE_ALARM overrides, e.g. for valgrind).
 *
 * Usage: hostile DIR   (an empty scratch directory; stores are created under it)
 * Exit status: 0 when every check passed, 1 otherwise.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xa.h"
#include "mmxa.h"

/* ---- checking ----------------------------------------------------------------------------- */

static int failures, checks, notes;
static char ctx[200]; /* extra context for failures inside loops */

static const char *xa_name(long rc)
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
    default: return "?";
    }
}

static const char *mm_name(long rc)
{
    switch (rc) {
    case MMXA_OK: return "MMXA_OK";
    case MMXA_NOTFOUND: return "MMXA_NOTFOUND";
    case MMXA_EINVAL: return "MMXA_EINVAL";
    case MMXA_ETOOBIG: return "MMXA_ETOOBIG";
    case MMXA_EBUFSIZE: return "MMXA_EBUFSIZE";
    case MMXA_ELOCKTIMEOUT: return "MMXA_ELOCKTIMEOUT";
    case MMXA_EDEADLOCK: return "MMXA_EDEADLOCK";
    case MMXA_EROLLBACK: return "MMXA_EROLLBACK";
    case MMXA_EIO: return "MMXA_EIO";
    case MMXA_ENOTOPEN: return "MMXA_ENOTOPEN";
    case MMXA_ENOSPC: return "MMXA_ENOSPC";
    case MMXA_EINTERNAL: return "MMXA_EINTERNAL";
    case MMXA_EREGISTER: return "MMXA_EREGISTER";
    case MMXA_EPROTO: return "MMXA_EPROTO";
    default: return "?";
    }
}

static int is_rb(long rc)
{
    return rc >= XA_RBBASE && rc <= XA_RBEND;
}

static void fail_header(const char *file, int line, const char *text)
{
    failures++;
    printf("%s:%d: FAIL %s", file, line, text);
    if (ctx[0] != '\0')
        printf("   [%s]", ctx);
    printf("\n");
}

#define XA_NAMES 1   /* name codes as XA codes, else as MMXA codes */
#define VALUE_ONLY 2 /* a value computed earlier or elsewhere: skip the last-error contract */

/*
 * One checked mmxa call. `got` is its answer, `want` the expected one (`want2` a second
 * acceptable one, or the same). `xa` selects the code names. The last-error message is read
 * before anything else can call into mmxa.
 */
static void check_call(const char *file, int line, const char *text, long got, long want,
                       long want2, int mode)
{
    const char *msg = mmxa_last_error();
    int xa = mode & XA_NAMES;
    const char *(*name)(long) = xa ? xa_name : mm_name;
    int failed = got < 0 || (xa && is_rb(got));
    checks++;
    if (got != want && got != want2) {
        fail_header(file, line, text);
        if (want2 != want)
            printf("    got %ld (%s), expected %ld (%s) or %ld (%s); last error: \"%s\"\n", got,
                   name(got), want, name(want), want2, name(want2), msg ? msg : "(NULL)");
        else
            printf("    got %ld (%s), expected %ld (%s); last error: \"%s\"\n", got, name(got),
                   want, name(want), msg ? msg : "(NULL)");
        return;
    }
    if (mode & VALUE_ONLY)
        return;
    if (msg == NULL) {
        fail_header(file, line, text);
        printf("    mmxa_last_error() returned NULL\n");
    } else if (failed && msg[0] == '\0') {
        fail_header(file, line, text);
        printf("    answered %ld (%s) but mmxa_last_error() is empty\n", got, name(got));
    } else if (got == 0 && msg[0] != '\0') {
        fail_header(file, line, text);
        printf("    answered 0 but mmxa_last_error() is \"%s\" (should be empty after success)\n",
               msg);
    }
}

#define CHK(call, want) check_call(__FILE__, __LINE__, #call, (long)(call), (want), (want), 1)
#define CHK2(call, want, want2)                                                                \
    check_call(__FILE__, __LINE__, #call, (long)(call), (want), (want2), 1)
#define CHKM(call, want) check_call(__FILE__, __LINE__, #call, (long)(call), (want), (want), 0)
/* Values, not fresh calls of this thread (results from another thread, lengths, counts). */
#define CHKV(v, want)                                                                          \
    check_call(__FILE__, __LINE__, #v, (long)(v), (want), (want), XA_NAMES | VALUE_ONLY)
#define CHKMV(v, want) check_call(__FILE__, __LINE__, #v, (long)(v), (want), (want), VALUE_ONLY)

/* A rollback code (XA_RB*) of any reason. */
#define CHK_RB(call)                                                                           \
    do {                                                                                       \
        long rc_ = (long)(call);                                                               \
        check_call(__FILE__, __LINE__, #call, rc_, is_rb(rc_) ? rc_ : XA_RBROLLBACK,           \
                   is_rb(rc_) ? rc_ : XA_RBEND, 1);                                            \
    } while (0)

static void expect_true(const char *file, int line, const char *text, int ok)
{
    checks++;
    if (!ok)
        fail_header(file, line, text);
}

#define EXPECT(cond) expect_true(__FILE__, __LINE__, #cond, (cond) ? 1 : 0)

/* Debatable behaviour: reported, not failed. */
#define SOFT(cond, what)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            notes++;                                                                           \
            printf("%s:%d: NOTE %s (%s)\n", __FILE__, __LINE__, what, #cond);                  \
        }                                                                                      \
    } while (0)

static void section(const char *name)
{
    static int last_checks, last_failures;
    static const char *current;
    if (current != NULL)
        printf("%-16s %5d checks, %d failed\n", current, checks - last_checks,
               failures - last_failures);
    current = name;
    last_checks = checks;
    last_failures = failures;
    ctx[0] = '\0';
}

static void on_alarm(int sig)
{
    static const char msg[] = "hostile: timed out (SIGALRM): a call hung\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    _exit(3);
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static struct xa_switch_t *sw;
static const char *base;

/*
 * A fresh info string per call site: "dir=<base>/<name>;sync=none;lock_timeout_ms=2000;
 * segment_mb=4<extra>". Small segments keep xa_open quick (it prepares and scans a segment),
 * which matters for a debug build under valgrind.
 */
static char *info_for(const char *name, const char *extra)
{
    static char bufs[8][MAXINFOSIZE];
    static int next;
    char *b = bufs[next++ % 8];
    int n = snprintf(b, MAXINFOSIZE, "dir=%s/%s;sync=none;lock_timeout_ms=2000;segment_mb=4%s",
                     base, name, extra);
    if (n < 0 || n >= MAXINFOSIZE) {
        fprintf(stderr, "hostile: scratch path too long\n");
        exit(2);
    }
    return b;
}

static XID mkxid(long fmt, const char *gtrid, const char *bqual, unsigned char fill)
{
    XID x;
    size_t g = strlen(gtrid), b = strlen(bqual);
    memset(&x, fill, sizeof x);
    x.formatID = fmt;
    x.gtrid_length = (long)g;
    x.bqual_length = (long)b;
    memcpy(x.data, gtrid, g);
    memcpy(x.data + g, bqual, b);
    return x;
}

/* Same branch? The XA rule: formatID, both lengths and the meaningful bytes. */
static int same_xid(const XID *a, const XID *b)
{
    return a->formatID == b->formatID && a->gtrid_length == b->gtrid_length &&
           a->bqual_length == b->bqual_length &&
           memcmp(a->data, b->data, (size_t)(a->gtrid_length + a->bqual_length)) == 0;
}

static int open_rm(const char *info, int rmid)
{
    return sw->xa_open_entry((char *)info, rmid, TMNOFLAGS);
}

static int close_rm(int rmid)
{
    return sw->xa_close_entry((char *)"", rmid, TMNOFLAGS);
}

static int put_s(int rmid, const char *key, const char *value)
{
    return mmxa_put(rmid, key, strlen(key), value, strlen(value));
}

/* MMXA_OK and the value matches, or the mmxa code / -100 for a mismatch. */
static int get_is(int rmid, const char *key, const char *want)
{
    char buf[256];
    size_t len = 0;
    int rc = mmxa_get(rmid, key, strlen(key), buf, sizeof buf, &len);
    if (rc != MMXA_OK)
        return rc;
    return len == strlen(want) && memcmp(buf, want, len) == 0 ? MMXA_OK : -100;
}

/* Memory whose first byte after `len` readable bytes is an unreadable page. */
static char *guarded(size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t span = ((len + (size_t)page - 1) / (size_t)page + 1) * (size_t)page;
    char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (mprotect(m + span - (size_t)page, (size_t)page, PROT_NONE) != 0) {
        perror("mprotect");
        exit(2);
    }
    return m + span - (size_t)page - len;
}

/* ---- the ten entry points, by number ----------------------------------------------------- */

enum entry { E_OPEN, E_CLOSE, E_START, E_END, E_ROLLBACK, E_PREPARE, E_COMMIT, E_RECOVER,
             E_FORGET, E_COMPLETE, E_COUNT };

static const char *const entry_names[E_COUNT] = {
    "xa_open", "xa_close", "xa_start", "xa_end", "xa_rollback",
    "xa_prepare", "xa_commit", "xa_recover", "xa_forget", "xa_complete"};

/* §2.2: the flags each entry accepts, TMASYNC aside. */
static long accepted(enum entry e)
{
    switch (e) {
    case E_START: return TMJOIN | TMRESUME | TMNOWAIT;
    case E_END: return TMSUSPEND | TMSUCCESS | TMFAIL | TMMIGRATE;
    case E_COMMIT: return TMONEPHASE | TMNOWAIT;
    case E_RECOVER: return TMSTARTRSCAN | TMENDRSCAN;
    case E_COMPLETE: return TMMULTIPLE | TMNOWAIT;
    default: return 0;
    }
}

/* §2.2: xa_recover and xa_complete do not take TMASYNC; the other eight do. */
static int takes_async(enum entry e)
{
    return e != E_RECOVER && e != E_COMPLETE;
}

/* The answer §2.3 prescribes for these flags, or 1 if the flags are valid. */
static long flag_verdict(enum entry e, long flags)
{
    if (takes_async(e) && (flags & TMASYNC))
        return XAER_ASYNC;
    if (flags & ~accepted(e))
        return XAER_INVAL;
    if (e == E_START && (flags & TMJOIN) && (flags & TMRESUME))
        return XAER_INVAL;
    if (e == E_END) {
        int kinds = !!(flags & TMSUSPEND) + !!(flags & TMSUCCESS) + !!(flags & TMFAIL);
        if (kinds != 1 || ((flags & TMMIGRATE) && !(flags & TMSUSPEND)))
            return XAER_INVAL;
    }
    return 1;
}

static int complete_handle, complete_retval;

/* Calls entry `e` with these flags; XID-taking entries get `xid`, xa_recover gets count 0. */
static int call_entry(enum entry e, long flags, int rmid, XID *xid, char *info)
{
    switch (e) {
    case E_OPEN: return sw->xa_open_entry(info, rmid, flags);
    case E_CLOSE: return sw->xa_close_entry(info, rmid, flags);
    case E_START: return sw->xa_start_entry(xid, rmid, flags);
    case E_END: return sw->xa_end_entry(xid, rmid, flags);
    case E_ROLLBACK: return sw->xa_rollback_entry(xid, rmid, flags);
    case E_PREPARE: return sw->xa_prepare_entry(xid, rmid, flags);
    case E_COMMIT: return sw->xa_commit_entry(xid, rmid, flags);
    case E_RECOVER: return sw->xa_recover_entry(NULL, 0, rmid, flags);
    case E_FORGET: return sw->xa_forget_entry(xid, rmid, flags);
    case E_COMPLETE: return sw->xa_complete_entry(&complete_handle, &complete_retval, rmid, flags);
    default: return -1000;
    }
}

/* ---- sections ----------------------------------------------------------------------------- */

static void switch_sanity(void)
{
    section("switch_sanity");
    sw = &mmxa_switch;
    EXPECT(mmxa_get_xa_switch() == &mmxa_switch);
    EXPECT(memchr(sw->name, '\0', RMNAMESZ) != NULL);
    EXPECT(strcmp(sw->name, "mmxa") == 0);
    EXPECT(sw->version == 0);
    EXPECT(sw->flags == TMNOFLAGS); /* static registration, migration allowed, no async */
    EXPECT(sw->xa_open_entry && sw->xa_close_entry && sw->xa_start_entry && sw->xa_end_entry &&
           sw->xa_rollback_entry && sw->xa_prepare_entry && sw->xa_commit_entry &&
           sw->xa_recover_entry && sw->xa_forget_entry && sw->xa_complete_entry);
}

static void strings(void)
{
    static const int known[] = {MMXA_OK, MMXA_NOTFOUND, MMXA_EINVAL, MMXA_ETOOBIG, MMXA_EBUFSIZE,
                                MMXA_ELOCKTIMEOUT, MMXA_EDEADLOCK, MMXA_EROLLBACK, MMXA_EIO,
                                MMXA_ENOTOPEN, MMXA_ENOSPC, MMXA_EINTERNAL, MMXA_EREGISTER,
                                MMXA_EPROTO};
    static const int odd[] = {INT_MIN, INT_MIN + 1, -1000, -13, 2, 3, 100, 1000, INT_MAX};
    const char *unknown = mmxa_strerror(12345);
    size_t i, j;
    section("strings");
    EXPECT(unknown != NULL && unknown[0] != '\0');
    for (i = 0; i < sizeof known / sizeof known[0]; i++) {
        const char *s = mmxa_strerror(known[i]);
        snprintf(ctx, sizeof ctx, "code %d", known[i]);
        EXPECT(s != NULL && s[0] != '\0');
        /* A known code has its own text, not the fallback. */
        EXPECT(s != NULL && unknown != NULL && strcmp(s, unknown) != 0);
        for (j = 0; j < i; j++)
            EXPECT(s != NULL && strcmp(s, mmxa_strerror(known[j])) != 0);
    }
    for (i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const char *s = mmxa_strerror(odd[i]);
        snprintf(ctx, sizeof ctx, "code %d", odd[i]);
        EXPECT(s != NULL && s[0] != '\0');
    }
    ctx[0] = '\0';
    EXPECT(mmxa_last_error() != NULL);
    /* A failure leaves a message, which survives mmxa_strerror and a second read. */
    CHKM(mmxa_put(424242, "k", 1, "v", 1), MMXA_ENOTOPEN);
    EXPECT(mmxa_last_error()[0] != '\0');
    EXPECT(mmxa_strerror(MMXA_ENOTOPEN) != NULL && mmxa_last_error()[0] != '\0');
    /* An XA success clears it. */
    CHK(close_rm(424242), XA_OK);
    EXPECT(mmxa_last_error()[0] == '\0');
}

static void unopened_rmids(void)
{
    static const int rmids[] = {0, 5, -1, -77, INT_MIN, INT_MAX};
    XID x = mkxid(1, "unopened", "b", 0);
    XID xs[2];
    size_t i, len = 0;
    char buf[8];
    uint64_t sp = 0;
    section("unopened_rmids");
    for (i = 0; i < sizeof rmids / sizeof rmids[0]; i++) {
        int r = rmids[i];
        snprintf(ctx, sizeof ctx, "rmid %d", r);
        CHK(sw->xa_start_entry(&x, r, TMNOFLAGS), XAER_PROTO);
        CHK(sw->xa_start_entry(&x, r, TMJOIN), XAER_PROTO);
        CHK(sw->xa_end_entry(&x, r, TMSUCCESS), XAER_PROTO);
        CHK(sw->xa_end_entry(&x, r, TMSUSPEND), XAER_PROTO);
        CHK(sw->xa_prepare_entry(&x, r, TMNOFLAGS), XAER_PROTO);
        CHK(sw->xa_commit_entry(&x, r, TMNOFLAGS), XAER_PROTO);
        CHK(sw->xa_commit_entry(&x, r, TMONEPHASE), XAER_PROTO);
        CHK(sw->xa_rollback_entry(&x, r, TMNOFLAGS), XAER_PROTO);
        CHK(sw->xa_forget_entry(&x, r, TMNOFLAGS), XAER_PROTO);
        CHK(sw->xa_recover_entry(xs, 2, r, TMSTARTRSCAN | TMENDRSCAN), XAER_PROTO);
        CHK(sw->xa_recover_entry(NULL, 0, r, TMENDRSCAN), XAER_PROTO);
        CHK(sw->xa_complete_entry(&complete_handle, &complete_retval, r, TMNOFLAGS), XAER_PROTO);
        /* §5.1: xa_close in R0 has no effect. */
        CHK(sw->xa_close_entry((char *)"", r, TMNOFLAGS), XA_OK);
        CHK(sw->xa_close_entry(info_for("never-opened", ""), r, TMNOFLAGS), XA_OK);
        CHKM(mmxa_put(r, "k", 1, "v", 1), MMXA_ENOTOPEN);
        CHKM(mmxa_get(r, "k", 1, buf, sizeof buf, &len), MMXA_ENOTOPEN);
        CHKM(mmxa_get(r, "k", 1, NULL, 0, &len), MMXA_ENOTOPEN);
        CHKM(mmxa_get_for_update(r, "k", 1, buf, sizeof buf, &len), MMXA_ENOTOPEN);
        CHKM(mmxa_get_for_update(r, NULL, 0, NULL, 0, NULL), MMXA_EINVAL);
        CHKM(mmxa_delete(r, "k", 1), MMXA_ENOTOPEN);
        CHKM(mmxa_savepoint(r, &sp), MMXA_ENOTOPEN);
        CHKM(mmxa_rollback_to_savepoint(r, 1), MMXA_ENOTOPEN);
        /* §2.3 rule 4: the rmid is checked before the XID. */
        CHK(sw->xa_start_entry(NULL, r, TMNOFLAGS), XAER_PROTO);
        CHK(sw->xa_prepare_entry(NULL, r, TMNOFLAGS), XAER_PROTO);
    }
}

static void open_strings(void)
{
    char *info300, *edge;
    char path[MAXINFOSIZE], long_info[2 * MAXINFOSIZE];
    size_t n;
    FILE *f;
    section("open_strings");
    /* §4.1 [P]: NULL, no NUL within 256 bytes, or unparsable -> XAER_INVAL. */
    CHK(sw->xa_open_entry(NULL, 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry((char *)"", 20, TMNOFLAGS), XAER_INVAL); /* no dir= */
    CHK(sw->xa_open_entry((char *)"   ", 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry((char *)";;,", 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry((char *)"dir=", 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry((char *)"sync=none", 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry((char *)"nonsense", 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry(info_for("bad", ";bogus=1"), 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry(info_for("bad", ";sync"), 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry(info_for("bad", ";sync=always"), 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry(info_for("bad", ";lock_timeout_ms=-1"), 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry(info_for("bad", ";lock_timeout_ms=99999999999999999999999"), 20,
                          TMNOFLAGS),
        XAER_INVAL);
    CHK(sw->xa_open_entry((char *)"dir=/tmp/x;segment_mb=0", 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry((char *)"dir=/tmp/x;segment_mb=1000000", 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry(info_for("bad", ";segment_mb=8"), 20, TMNOFLAGS), XAER_INVAL); /* twice */
    CHK(sw->xa_open_entry(info_for("bad", ";dir=/tmp"), 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_open_entry((char *)"dir=/tmp/\xff\xfe", 20, TMNOFLAGS), XAER_INVAL);

    /* 300 readable bytes, NUL only at 299: no NUL within MAXINFOSIZE. */
    info300 = malloc(300);
    if (info300 == NULL)
        exit(2);
    memset(info300, 'a', 300);
    memcpy(info300, "dir=", 4);
    info300[299] = '\0';
    CHK(sw->xa_open_entry(info300, 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_close_entry(info300, 20, TMNOFLAGS), XAER_INVAL);

    /* 256 non-NUL bytes followed by an unreadable page: a bounded scan never touches it. */
    edge = guarded(MAXINFOSIZE);
    memset(edge, 'b', MAXINFOSIZE);
    memcpy(edge, "dir=", 4);
    CHK(sw->xa_open_entry(edge, 20, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_close_entry(edge, 20, TMNOFLAGS), XAER_INVAL);

    /* None of the failed opens opened anything. */
    CHKM(mmxa_put(20, "k", 1, "v", 1), MMXA_ENOTOPEN);
    CHK(sw->xa_prepare_entry(NULL, 20, TMNOFLAGS), XAER_PROTO);

    /* 255 characters and the NUL, the NUL being the last readable byte: accepted. */
    snprintf(path, sizeof path, "dir=%s/long-", base);
    n = strlen(path);
    memset(long_info, 'c', sizeof long_info);
    memcpy(long_info, path, n);
    memcpy(long_info + MAXINFOSIZE - 1 - strlen(";segment_mb=4"), ";segment_mb=4",
           strlen(";segment_mb=4"));
    long_info[MAXINFOSIZE - 1] = '\0';
    edge = guarded(MAXINFOSIZE);
    memcpy(edge, long_info, MAXINFOSIZE);
    CHK(sw->xa_open_entry(edge, 21, TMNOFLAGS), XA_OK);
    CHKM(put_s(21, "k", "v"), MMXA_OK);
    CHK(sw->xa_close_entry(edge, 21, TMNOFLAGS), XA_OK);

    /* Parsable, but the store cannot be created or opened: XAER_RMERR. */
    snprintf(path, sizeof path, "%s/a-file", base);
    f = fopen(path, "w");
    if (f != NULL)
        fclose(f);
    snprintf(long_info, sizeof long_info, "dir=%s;sync=none", path);
    CHK(sw->xa_open_entry(long_info, 22, TMNOFLAGS), XAER_RMERR);
    snprintf(long_info, sizeof long_info, "dir=%s/under-a-file;sync=none", path);
    CHK(sw->xa_open_entry(long_info, 22, TMNOFLAGS), XAER_RMERR);
    CHK(sw->xa_open_entry((char *)"dir=/proc/self/no/such/dir", 22, TMNOFLAGS), XAER_RMERR);
    CHKM(mmxa_put(22, "k", 1, "v", 1), MMXA_ENOTOPEN);

    /* xa_close checks its string like xa_open does, and a refused close leaves the RM open. */
    CHK(open_rm(info_for("close-info", ""), 23), XA_OK);
    CHK(sw->xa_close_entry(NULL, 23, TMNOFLAGS), XAER_INVAL);
    CHK(sw->xa_close_entry(info300, 23, TMNOFLAGS), XAER_INVAL);
    CHKM(put_s(23, "still", "open"), MMXA_OK);
    /* The close string is otherwise free-form (Tuxedo CLOSEINFO, LIXA's often empty one). */
    CHK(sw->xa_close_entry((char *)"anything at all", 23, TMNOFLAGS), XA_OK);
    CHKM(put_s(23, "k", "v"), MMXA_ENOTOPEN);
    free(info300);
}

static void open_close(void)
{
    char *a = info_for("oc-a", ""), *a_again = info_for("oc-a", "");
    char *b = info_for("oc-b", "");
    char *a_other = info_for("oc-a", ";lock_timeout_ms=0");
    char a_slash[MAXINFOSIZE];
    int i;
    section("open_close");
    CHK(open_rm(a, 1), XA_OK);
    CHK(open_rm(a_again, 1), XA_OK);           /* §5.1: R1 -> R1, no effect */
    CHK(open_rm(b, 1), XAER_INVAL);            /* rmid 1 already names another store */
    CHK(open_rm(a, 2), XAER_INVAL);            /* one store under two rmids */
    snprintf(a_slash, sizeof a_slash, "dir=%s/./oc-a/;sync=none;lock_timeout_ms=2000;segment_mb=4",
             base);
    CHK(open_rm(a_slash, 2), XAER_INVAL);      /* the same store, spelled differently */
    CHK(open_rm(a_other, 1), XAER_INVAL);      /* same store, other settings */
    CHKM(put_s(1, "k", "v"), MMXA_OK);         /* still open after the refusals */
    CHK(open_rm(b, 2), XA_OK);
    CHKM(get_is(2, "k", "v"), MMXA_NOTFOUND);  /* a different store */
    CHK(close_rm(2), XA_OK);
    CHK(close_rm(1), XA_OK);
    CHK(close_rm(1), XA_OK);                   /* R0: no effect */
    CHKM(put_s(1, "k", "v"), MMXA_ENOTOPEN);
    /* Once closed, the store may be opened under another rmid. */
    CHK(open_rm(a, 2), XA_OK);
    CHKM(get_is(2, "k", "v"), MMXA_OK);
    CHK(close_rm(2), XA_OK);
    /* §4.1 [P]: any int is an rmid. */
    CHK(open_rm(info_for("oc-neg", ""), INT_MIN), XA_OK);
    CHKM(put_s(INT_MIN, "neg", "1"), MMXA_OK);
    CHKM(get_is(INT_MIN, "neg", "1"), MMXA_OK);
    CHK(close_rm(INT_MIN), XA_OK);
    CHK(open_rm(info_for("oc-neg", ""), -1), XA_OK);
    CHKM(get_is(-1, "neg", "1"), MMXA_OK);
    CHK(close_rm(-1), XA_OK);
    CHK(open_rm(info_for("oc-neg", ""), INT_MAX), XA_OK);
    CHK(close_rm(INT_MAX), XA_OK);
    /* Enduro/X reconnects with close+open: it must work in a loop. */
    for (i = 0; i < 25; i++) {
        snprintf(ctx, sizeof ctx, "loop %d", i);
        CHK(open_rm(a, 3), XA_OK);
        CHKM(get_is(3, "k", "v"), MMXA_OK);
        CHK(close_rm(3), XA_OK);
    }
}

/* The answer an entry gives to valid flags in the flag_bits fixture (unknown XID, count 0). */
static long valid_flags_answer(enum entry e, long flags, int open)
{
    if (!open)
        return e == E_CLOSE ? XA_OK : XAER_PROTO;
    switch (e) {
    case E_START: return flags & (TMJOIN | TMRESUME) ? XAER_NOTA : XA_OK;
    case E_RECOVER: return 0;
    case E_COMPLETE: return XAER_PROTO;
    case E_OPEN: case E_CLOSE: return XA_OK;
    default: return XAER_NOTA;
    }
}

/* One flag value on one entry, open or not; cleans up a branch it happened to start. */
static void flag_case(enum entry e, long flags, int rmid, int open, XID *x, char *info)
{
    long verdict = flag_verdict(e, flags);
    long want = verdict == 1 ? valid_flags_answer(e, flags, open) : verdict;
    int rc;
    complete_handle = 0x5a5a;
    complete_retval = 0x6b6b;
    rc = call_entry(e, flags, rmid, x, info);
    check_call(__FILE__, __LINE__, entry_names[e], rc, want, want, XA_NAMES);
    if (e == E_COMPLETE)
        EXPECT(complete_handle == 0x5a5a && complete_retval == 0x6b6b);
    if (e == E_START && rc == XA_OK) {
        CHK(sw->xa_end_entry(x, rmid, TMSUCCESS), XA_OK);
        CHK(sw->xa_rollback_entry(x, rmid, TMNOFLAGS), XA_OK);
    }
    if (e == E_OPEN && rc == XA_OK && open == 0)
        close_rm(rmid); /* should not happen: no single flag is valid for xa_open */
}

static void flag_bits(void)
{
    XID x = mkxid(7, "flag-bits", "b", 0x33);
    char *info = info_for("flags", "");
    char *info_open_target = info_for("flags-open", "");
    /* Values a careless TM could send: everything, the sign bit, an int-extended TMASYNC. */
    static const long extra[] = {-1L, LONG_MIN, LONG_MAX, (long)0xFFFFFFFF80000000UL,
                                 TMJOIN | TMRESUME, TMJOIN | TMNOWAIT, TMRESUME | TMNOWAIT,
                                 TMSUCCESS | TMFAIL, TMSUSPEND | TMSUCCESS, TMSUSPEND | TMFAIL,
                                 TMSUCCESS | TMMIGRATE, TMFAIL | TMMIGRATE, TMSUSPEND | TMMIGRATE,
                                 TMSUCCESS | TMFAIL | TMSUSPEND, TMMIGRATE,
                                 TMONEPHASE | TMNOWAIT, TMSTARTRSCAN | TMENDRSCAN,
                                 TMMULTIPLE | TMNOWAIT, TMASYNC | TMJOIN, TMASYNC | TMSUCCESS,
                                 TMREGISTER, TMNOMIGRATE, TMUSEASYNC};
    int e, bit, open;
    size_t i;
    section("flag_bits");
    for (open = 1; open >= 0; open--) {
        int rmid = open ? 40 : 41;
        if (open)
            CHK(open_rm(info, rmid), XA_OK);
        for (e = 0; e < E_COUNT; e++) {
            /* xa_open is exercised on an unopened rmid: a bad flag must not open anything. */
            int r = e == E_OPEN ? 42 : rmid;
            char *inf = e == E_OPEN ? info_open_target : info;
            if (e == E_OPEN && !open)
                continue;
            for (bit = 0; bit < 64; bit++) {
                long flags = (long)(1UL << bit);
                snprintf(ctx, sizeof ctx, "%s flags 1<<%d (%#lx), rmid %s", entry_names[e], bit,
                         (unsigned long)flags, open ? "open" : "not open");
                flag_case((enum entry)e, flags, r, e == E_OPEN ? 1 : open, &x, inf);
            }
            for (i = 0; i < sizeof extra / sizeof extra[0]; i++) {
                long flags = extra[i];
                if (flags == (long)0xFFFFFFFF80000000UL) {
                    /* §2.3 rule 5: XAER_ASYNC or XAER_INVAL are both acceptable. */
                    if (e == E_OPEN)
                        continue;
                    snprintf(ctx, sizeof ctx, "%s int-extended TMASYNC", entry_names[e]);
                    CHK2(call_entry((enum entry)e, flags, r, &x, inf),
                         takes_async((enum entry)e) ? XAER_ASYNC : XAER_INVAL, XAER_INVAL);
                    continue;
                }
                snprintf(ctx, sizeof ctx, "%s flags %#lx, rmid %s", entry_names[e],
                         (unsigned long)flags, open ? "open" : "not open");
                flag_case((enum entry)e, flags, r, e == E_OPEN ? 1 : open, &x, inf);
            }
        }
        ctx[0] = '\0';
        if (open) {
            /* The bad xa_open flags opened nothing, the bad xa_close flags closed nothing. */
            CHKM(put_s(42, "k", "v"), MMXA_ENOTOPEN);
            CHKM(put_s(rmid, "k", "v"), MMXA_OK);
            CHK(close_rm(rmid), XA_OK);
        }
    }
}

static void xid_validation(void)
{
    static const long bad_lengths[] = {-1, 0, 65, 128, 129, LONG_MAX, LONG_MIN, -65};
    enum { START, END, PREPARE, COMMIT, COMMIT1, ROLLBACK, FORGET, N_OPS };
    static const char *const op_names[N_OPS] = {"xa_start", "xa_end(TMSUCCESS)", "xa_prepare",
                                                "xa_commit", "xa_commit(TMONEPHASE)",
                                                "xa_rollback", "xa_forget"};
    XID good = mkxid(3, "valid", "b", 0), bad, big;
    int op, rmid = 50;
    size_t i;
    section("xid_validation");
    CHK(open_rm(info_for("xid", ""), rmid), XA_OK);
    for (op = 0; op < N_OPS; op++) {
        for (i = 0; i < 3 + 2 * (sizeof bad_lengths / sizeof bad_lengths[0]); i++) {
            int rc;
            bad = good;
            if (i == 0) {
                snprintf(ctx, sizeof ctx, "%s with a NULL XID", op_names[op]);
            } else if (i == 1) {
                bad.formatID = NULLXID;
                snprintf(ctx, sizeof ctx, "%s with the null XID", op_names[op]);
            } else if (i == 2) {
                bad.gtrid_length = 64;
                bad.bqual_length = 65;
                snprintf(ctx, sizeof ctx, "%s with 64+65 bytes", op_names[op]);
            } else if (i - 3 < sizeof bad_lengths / sizeof bad_lengths[0]) {
                bad.gtrid_length = bad_lengths[i - 3];
                snprintf(ctx, sizeof ctx, "%s with gtrid_length %ld", op_names[op],
                         bad.gtrid_length);
            } else {
                bad.bqual_length = bad_lengths[i - 3 - sizeof bad_lengths / sizeof bad_lengths[0]];
                snprintf(ctx, sizeof ctx, "%s with bqual_length %ld", op_names[op],
                         bad.bqual_length);
            }
            {
                XID *p = i == 0 ? NULL : &bad;
                switch (op) {
                case START: rc = sw->xa_start_entry(p, rmid, TMNOFLAGS); break;
                case END: rc = sw->xa_end_entry(p, rmid, TMSUCCESS); break;
                case PREPARE: rc = sw->xa_prepare_entry(p, rmid, TMNOFLAGS); break;
                case COMMIT: rc = sw->xa_commit_entry(p, rmid, TMNOFLAGS); break;
                case COMMIT1: rc = sw->xa_commit_entry(p, rmid, TMONEPHASE); break;
                case ROLLBACK: rc = sw->xa_rollback_entry(p, rmid, TMNOFLAGS); break;
                default: rc = sw->xa_forget_entry(p, rmid, TMNOFLAGS); break;
                }
            }
            check_call(__FILE__, __LINE__, op_names[op], rc, XAER_INVAL, XAER_INVAL, XA_NAMES);
        }
    }
    /* Also with the TMJOIN/TMRESUME forms, and start's invalid XID wins over its state. */
    ctx[0] = '\0';
    bad = good;
    bad.formatID = NULLXID;
    CHK(sw->xa_start_entry(&bad, rmid, TMJOIN), XAER_INVAL);
    CHK(sw->xa_start_entry(&bad, rmid, TMRESUME), XAER_INVAL);
    CHK(sw->xa_end_entry(&bad, rmid, TMSUSPEND), XAER_INVAL);
    CHK(sw->xa_end_entry(NULL, rmid, TMFAIL), XAER_INVAL);
    /* The largest valid XID: 64 + 64 bytes, any formatID but -1. */
    memset(&big, 0x41, sizeof big);
    big.formatID = LONG_MIN;
    big.gtrid_length = MAXGTRIDSIZE;
    big.bqual_length = MAXBQUALSIZE;
    CHK(sw->xa_start_entry(&big, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "big", "1"), MMXA_OK);
    CHK(sw->xa_end_entry(&big, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_prepare_entry(&big, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_commit_entry(&big, rmid, TMNOFLAGS), XA_OK);
    /* The smallest: 1 + 1 bytes, formatID 0 (OSI CCR) and LONG_MAX. */
    good = mkxid(0, "g", "b", 0);
    CHK(sw->xa_start_entry(&good, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_end_entry(&good, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_rollback_entry(&good, rmid, TMNOFLAGS), XA_OK);
    good.formatID = LONG_MAX;
    CHK(sw->xa_start_entry(&good, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_end_entry(&good, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_prepare_entry(&good, rmid, TMNOFLAGS), XA_RDONLY); /* wrote nothing */
    CHK(sw->xa_recover_entry(NULL, 0, rmid, TMSTARTRSCAN | TMENDRSCAN), 0);
    CHK(close_rm(rmid), XA_OK);
}

static void xid_identity(void)
{
    int rmid = 51, n, i;
    XID a = mkxid(9, "gtrid-one", "bq", 0xAA);
    XID a_copy, other;
    XID out[4];
    XID wide = mkxid((1L << 40) + 7, "wide-format", "b", 0x11);
    section("xid_identity");
    CHK(open_rm(info_for("identity", ""), rmid), XA_OK);
    a_copy = a;
    CHK(sw->xa_start_entry(&a, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "id-k", "v1"), MMXA_OK);
    /* Same branch, different bytes after gtrid+bqual. */
    other = mkxid(9, "gtrid-one", "bq", 0x55);
    CHK(sw->xa_end_entry(&other, rmid, TMSUCCESS), XA_OK);
    other = mkxid(9, "gtrid-one", "bq", 0x00);
    CHK(sw->xa_start_entry(&other, rmid, TMNOFLAGS), XAER_DUPID);
    /* Not the same branch: another formatID, another split of the same bytes, a formatID that
     * differs only above bit 31 (a 32-bit truncation would confuse them). */
    other = mkxid(10, "gtrid-one", "bq", 0xAA);
    CHK(sw->xa_prepare_entry(&other, rmid, TMNOFLAGS), XAER_NOTA);
    other = mkxid(9, "gtrid-on", "ebq", 0xAA);
    CHK(sw->xa_prepare_entry(&other, rmid, TMNOFLAGS), XAER_NOTA);
    other = mkxid(9 + (1L << 32), "gtrid-one", "bq", 0xAA);
    CHK(sw->xa_prepare_entry(&other, rmid, TMNOFLAGS), XAER_NOTA);
    other = mkxid(9, "gtrid-one", "bQ", 0xAA);
    CHK(sw->xa_prepare_entry(&other, rmid, TMNOFLAGS), XAER_NOTA);
    other = mkxid(9, "gtrid-one", "bq", 0x00);
    CHK(sw->xa_prepare_entry(&other, rmid, TMNOFLAGS), XA_OK);
    /* The RM never writes through the caller's XID. */
    EXPECT(memcmp(&a, &a_copy, sizeof a) == 0);

    CHK(sw->xa_start_entry(&wide, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "wide-k", "w"), MMXA_OK);
    CHK(sw->xa_end_entry(&wide, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_prepare_entry(&wide, rmid, TMNOFLAGS), XA_OK);

    /* xa_recover: exactly the two prepared XIDs, all 64 bits of formatID, data tail zeroed,
     * and nothing written past what it returns. */
    memset(out, 0xEE, sizeof out);
    n = sw->xa_recover_entry(out, 4, rmid, TMSTARTRSCAN | TMENDRSCAN);
    CHKV(n, 2);
    for (i = 0; i < n && i < 4; i++) {
        long used = out[i].gtrid_length + out[i].bqual_length;
        long j;
        int zero_tail = 1;
        snprintf(ctx, sizeof ctx, "recovered XID %d", i);
        EXPECT(same_xid(&out[i], &a) || same_xid(&out[i], &wide));
        EXPECT(used >= 2 && used <= XIDDATASIZE);
        for (j = used; j >= 0 && j < XIDDATASIZE; j++)
            zero_tail &= out[i].data[j] == 0;
        EXPECT(zero_tail);
    }
    ctx[0] = '\0';
    EXPECT(n == 2 && !same_xid(&out[0], &out[1]));
    {
        unsigned char guard[sizeof(XID)];
        memset(guard, 0xEE, sizeof guard);
        EXPECT(memcmp(&out[2], guard, sizeof guard) == 0 && memcmp(&out[3], guard, sizeof guard) == 0);
    }
    /* count 1: one XID written, out[1] untouched. */
    memset(out, 0xEE, sizeof out);
    CHK(sw->xa_recover_entry(out, 1, rmid, TMSTARTRSCAN), 1);
    EXPECT(((unsigned char *)&out[1])[0] == 0xEE && ((unsigned char *)&out[1])[151] == 0xEE);
    CHK(sw->xa_recover_entry(out, 1, rmid, TMNOFLAGS), 1);
    CHK(sw->xa_recover_entry(out, 1, rmid, TMNOFLAGS), 0); /* fewer than count: scan over */
    CHK(sw->xa_recover_entry(out, 1, rmid, TMNOFLAGS), XAER_INVAL);

    other = mkxid(9, "gtrid-one", "bq", 0x77);
    CHK(sw->xa_commit_entry(&other, rmid, TMNOFLAGS), XA_OK);
    CHKM(get_is(rmid, "id-k", "v1"), MMXA_OK);
    other = wide;
    memset(other.data + 12, 0x99, XIDDATASIZE - 12);
    CHK(sw->xa_rollback_entry(&other, rmid, TMNOFLAGS), XA_OK);
    CHKM(get_is(rmid, "wide-k", "w"), MMXA_NOTFOUND);
    CHK(sw->xa_recover_entry(out, 4, rmid, TMSTARTRSCAN | TMENDRSCAN), 0);
    CHK(close_rm(rmid), XA_OK);
}

static void state_table(void)
{
    int rmid = 60, i, n;
    XID a = mkxid(1, "st-a", "b", 0), b = mkxid(1, "st-b", "b", 0), c = mkxid(1, "st-c", "b", 0);
    XID d = mkxid(1, "st-d", "b", 0), u = mkxid(1, "st-unknown", "b", 0);
    XID fail[4], many[5], out[8];
    int seen[5];
    size_t len;
    char buf[16];
    section("state_table");
    CHK(open_rm(info_for("state", ""), rmid), XA_OK);

    /* S0: unknown XIDs. */
    CHK(sw->xa_end_entry(&u, rmid, TMSUCCESS), XAER_NOTA);
    CHK(sw->xa_end_entry(&u, rmid, TMFAIL), XAER_NOTA);
    CHK(sw->xa_end_entry(&u, rmid, TMSUSPEND), XAER_NOTA);
    CHK(sw->xa_prepare_entry(&u, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(sw->xa_commit_entry(&u, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(sw->xa_commit_entry(&u, rmid, TMONEPHASE), XAER_NOTA);
    CHK(sw->xa_rollback_entry(&u, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(sw->xa_forget_entry(&u, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(sw->xa_start_entry(&u, rmid, TMJOIN), XAER_NOTA);
    CHK(sw->xa_start_entry(&u, rmid, TMRESUME), XAER_NOTA);

    /* S1, this thread T1. */
    CHK(sw->xa_start_entry(&a, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_start_entry(&a, rmid, TMNOFLAGS), XAER_DUPID);
    CHK(sw->xa_start_entry(&a, rmid, TMJOIN), XAER_PROTO);
    CHK(sw->xa_start_entry(&a, rmid, TMRESUME), XAER_PROTO);
    CHK(sw->xa_start_entry(&b, rmid, TMNOFLAGS), XAER_PROTO); /* one association per ToC */
    CHK(sw->xa_prepare_entry(&a, rmid, TMNOFLAGS), XAER_PROTO);
    CHK(sw->xa_commit_entry(&a, rmid, TMNOFLAGS), XAER_PROTO);
    CHK(sw->xa_commit_entry(&a, rmid, TMONEPHASE), XAER_PROTO);
    CHK(sw->xa_rollback_entry(&a, rmid, TMNOFLAGS), XAER_PROTO); /* from the associated ToC */
    CHK(sw->xa_forget_entry(&a, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(close_rm(rmid), XAER_PROTO);
    CHKM(put_s(rmid, "a1", "x"), MMXA_OK); /* still open and associated after the refusals */

    /* T2: suspended. */
    CHK(sw->xa_end_entry(&a, rmid, TMSUSPEND), XA_OK);
    CHK(sw->xa_end_entry(&a, rmid, TMSUSPEND), XAER_PROTO);
    CHK(sw->xa_start_entry(&a, rmid, TMJOIN), XAER_PROTO); /* resume, don't join */
    CHK(sw->xa_start_entry(&a, rmid, TMNOFLAGS), XAER_DUPID);
    CHK(sw->xa_prepare_entry(&a, rmid, TMNOFLAGS), XAER_PROTO); /* suspended = not ended */
    CHK(sw->xa_commit_entry(&a, rmid, TMONEPHASE), XAER_PROTO);
    CHK(close_rm(rmid), XAER_PROTO);
    /* A suspended association leaves the thread outside any branch: a put is a durable
     * one-operation transaction (README, "data API"), invisible to the suspended branch's
     * rollback. */
    CHKM(put_s(rmid, "while-suspended", "x"), MMXA_OK);
    /* While A is suspended this ToC may start another branch. */
    CHK(sw->xa_start_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_end_entry(&a, rmid, TMSUSPEND), XAER_PROTO);
    CHK(sw->xa_end_entry(&b, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_rollback_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_start_entry(&a, rmid, TMRESUME), XA_OK);
    CHKM(get_is(rmid, "a1", "x"), MMXA_OK); /* the branch sees its own write */
    CHK(sw->xa_end_entry(&a, rmid, TMSUCCESS), XA_OK);

    /* Ending a suspended association directly (LIXA's xa_5_37_suspended), and the XID given to
     * xa_end must be the associated one. */
    CHK(sw->xa_start_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHK(open_rm(info_for("state", ""), rmid), XA_OK); /* R1 -> R1, association kept */
    CHK(sw->xa_end_entry(&u, rmid, TMSUCCESS), XAER_NOTA);
    CHK(sw->xa_end_entry(&a, rmid, TMSUCCESS), XAER_PROTO); /* A is idle, B is associated */
    CHK(sw->xa_end_entry(&b, rmid, TMSUSPEND), XA_OK);
    CHK(sw->xa_rollback_entry(&b, rmid, TMNOFLAGS), XAER_PROTO); /* T2 is still associated */
    CHK(sw->xa_end_entry(&b, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_start_entry(&b, rmid, TMRESUME), XAER_PROTO);
    CHK(sw->xa_start_entry(&b, rmid, TMJOIN | TMNOWAIT), XA_OK);
    CHKM(put_s(rmid, "b0", "x"), MMXA_OK);
    CHK(sw->xa_end_entry(&b, rmid, TMSUSPEND), XA_OK);
    CHK_RB(sw->xa_end_entry(&b, rmid, TMFAIL));
    CHK(sw->xa_end_entry(&b, rmid, TMSUCCESS), XAER_PROTO);
    CHK_RB(sw->xa_prepare_entry(&b, rmid, TMNOFLAGS));
    CHKM(get_is(rmid, "b0", "x"), MMXA_NOTFOUND);

    /* S2: idle. */
    CHK(sw->xa_end_entry(&a, rmid, TMSUCCESS), XAER_PROTO);
    CHK(sw->xa_end_entry(&a, rmid, TMFAIL), XAER_PROTO);
    CHK(sw->xa_end_entry(&a, rmid, TMSUSPEND), XAER_PROTO);
    CHK(sw->xa_start_entry(&a, rmid, TMRESUME), XAER_PROTO); /* nothing suspended here */
    CHK(sw->xa_commit_entry(&a, rmid, TMNOFLAGS), XAER_PROTO); /* not prepared */
    CHK(sw->xa_forget_entry(&a, rmid, TMNOFLAGS), XAER_NOTA);
    CHKM(get_is(rmid, "a1", "x"), MMXA_NOTFOUND); /* no association: committed data only */
    CHK(sw->xa_start_entry(&a, rmid, TMJOIN), XA_OK); /* S2 join is legal */
    CHK(sw->xa_end_entry(&a, rmid, TMSUCCESS), XA_OK);

    /* S3: prepared. */
    CHK(sw->xa_prepare_entry(&a, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_prepare_entry(&a, rmid, TMNOFLAGS), XAER_PROTO);
    CHK(sw->xa_commit_entry(&a, rmid, TMONEPHASE), XAER_PROTO);
    CHK(sw->xa_start_entry(&a, rmid, TMNOFLAGS), XAER_DUPID);
    CHK(sw->xa_start_entry(&a, rmid, TMJOIN), XAER_PROTO);
    CHK(sw->xa_start_entry(&a, rmid, TMRESUME), XAER_PROTO);
    CHK(sw->xa_end_entry(&a, rmid, TMSUCCESS), XAER_PROTO);
    CHK(sw->xa_forget_entry(&a, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(close_rm(rmid), XA_OK); /* prepared branches survive close */
    CHK(open_rm(info_for("state", ""), rmid), XA_OK);
    CHK(sw->xa_recover_entry(out, 8, rmid, TMSTARTRSCAN | TMENDRSCAN), 1);
    EXPECT(same_xid(&out[0], &a));
    CHK(sw->xa_commit_entry(&a, rmid, TMNOWAIT), XA_OK);
    CHK(sw->xa_commit_entry(&a, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(sw->xa_rollback_entry(&a, rmid, TMNOFLAGS), XAER_NOTA);
    CHKM(get_is(rmid, "a1", "x"), MMXA_OK);

    /* Read-only branch: XA_RDONLY, then forgotten. */
    CHK(sw->xa_start_entry(&c, rmid, TMNOFLAGS), XA_OK);
    CHKM(get_is(rmid, "a1", "x"), MMXA_OK);
    CHK(sw->xa_end_entry(&c, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_prepare_entry(&c, rmid, TMNOFLAGS), XA_RDONLY);
    CHK(sw->xa_commit_entry(&c, rmid, TMNOFLAGS), XAER_NOTA);
    CHK(sw->xa_start_entry(&c, rmid, TMNOFLAGS), XA_OK); /* a forgotten XID is reusable */
    CHK(sw->xa_end_entry(&c, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_commit_entry(&c, rmid, TMONEPHASE), XA_OK);

    /* One-phase commit. */
    CHK(sw->xa_start_entry(&d, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "d1", "y"), MMXA_OK);
    CHK(sw->xa_end_entry(&d, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_commit_entry(&d, rmid, TMONEPHASE | TMNOWAIT), XA_OK);
    CHKM(get_is(rmid, "d1", "y"), MMXA_OK);

    /* S4: rollback-only after TMFAIL, then every way out. */
    for (i = 0; i < 4; i++) {
        char g[16], key[16];
        snprintf(g, sizeof g, "st-fail-%d", i);
        snprintf(key, sizeof key, "f%d", i);
        fail[i] = mkxid(1, g, "b", 0);
        snprintf(ctx, sizeof ctx, "TMFAIL branch %d", i);
        CHK(sw->xa_start_entry(&fail[i], rmid, TMNOFLAGS), XA_OK);
        CHKM(put_s(rmid, key, "z"), MMXA_OK);
        CHK_RB(sw->xa_end_entry(&fail[i], rmid, TMFAIL));
    }
    ctx[0] = '\0';
    CHK_RB(sw->xa_prepare_entry(&fail[0], rmid, TMNOFLAGS));
    CHK(sw->xa_rollback_entry(&fail[0], rmid, TMNOFLAGS), XAER_NOTA); /* already gone */
    CHK_RB(sw->xa_commit_entry(&fail[1], rmid, TMONEPHASE));
    CHK(sw->xa_commit_entry(&fail[2], rmid, TMNOFLAGS), XAER_PROTO); /* S4: 2PC commit */
    CHK_RB(sw->xa_start_entry(&fail[2], rmid, TMJOIN));
    CHK(sw->xa_start_entry(&fail[2], rmid, TMNOFLAGS), XAER_DUPID);
    {
        int rc = sw->xa_rollback_entry(&fail[2], rmid, TMNOFLAGS);
        CHK2(rc, XA_OK, is_rb(rc) ? rc : XA_OK);
        rc = sw->xa_rollback_entry(&fail[3], rmid, TMNOFLAGS);
        CHK2(rc, XA_OK, is_rb(rc) ? rc : XA_OK);
    }
    for (i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "f%d", i);
        snprintf(ctx, sizeof ctx, "TMFAIL branch %d", i);
        CHKM(get_is(rmid, key, "z"), MMXA_NOTFOUND);
        CHK(sw->xa_rollback_entry(&fail[i], rmid, TMNOFLAGS), XAER_NOTA);
    }
    ctx[0] = '\0';

    /* Rollback of an idle branch and of a prepared one. */
    CHK(sw->xa_start_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "b1", "q"), MMXA_OK);
    CHK(sw->xa_end_entry(&b, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_rollback_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_start_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "b1", "q"), MMXA_OK);
    CHK(sw->xa_end_entry(&b, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_prepare_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_rollback_entry(&b, rmid, TMNOFLAGS), XA_OK);
    CHKM(get_is(rmid, "b1", "q"), MMXA_NOTFOUND);

    /* xa_recover argument and scan rules (§4.8). */
    CHK(sw->xa_recover_entry(out, 8, rmid, TMNOFLAGS), XAER_INVAL);    /* no open scan */
    CHK(sw->xa_recover_entry(out, 8, rmid, TMENDRSCAN), XAER_INVAL);   /* no open scan */
    CHK(sw->xa_recover_entry(NULL, 0, rmid, TMENDRSCAN), 0);           /* LIXA's trailing call */
    CHK(sw->xa_recover_entry(out, 0, rmid, TMENDRSCAN), 0);
    CHK(sw->xa_recover_entry(NULL, 1, rmid, TMSTARTRSCAN), XAER_INVAL);
    CHK(sw->xa_recover_entry(NULL, LONG_MAX, rmid, TMSTARTRSCAN), XAER_INVAL);
    CHK(sw->xa_recover_entry(out, -1, rmid, TMSTARTRSCAN), XAER_INVAL);
    CHK(sw->xa_recover_entry(out, LONG_MIN, rmid, TMSTARTRSCAN | TMENDRSCAN), XAER_INVAL);
    CHK(sw->xa_recover_entry(NULL, -1, rmid, TMSTARTRSCAN), XAER_INVAL);
    CHK(sw->xa_recover_entry(NULL, 0, rmid, TMSTARTRSCAN | TMENDRSCAN), 0);

    /* Paging through 5 prepared branches two at a time: each exactly once. */
    for (i = 0; i < 5; i++) {
        char g[16], key[16];
        snprintf(g, sizeof g, "st-many-%d", i);
        snprintf(key, sizeof key, "m%d", i);
        many[i] = mkxid(2, g, "b", 0);
        seen[i] = 0;
        CHK(sw->xa_start_entry(&many[i], rmid, TMNOFLAGS), XA_OK);
        CHKM(put_s(rmid, key, "m"), MMXA_OK);
        CHK(sw->xa_end_entry(&many[i], rmid, TMSUCCESS), XA_OK);
        CHK(sw->xa_prepare_entry(&many[i], rmid, TMNOFLAGS), XA_OK);
    }
    {
        long flags = TMSTARTRSCAN;
        int total = 0, calls = 0;
        do {
            int j, k;
            n = sw->xa_recover_entry(out, 2, rmid, flags);
            EXPECT(n >= 0 && n <= 2);
            for (j = 0; j < n; j++)
                for (k = 0; k < 5; k++)
                    if (same_xid(&out[j], &many[k]))
                        seen[k]++;
            total += n > 0 ? n : 0;
            flags = TMNOFLAGS;
        } while (n == 2 && ++calls < 10);
        CHKV(total, 5);
        for (i = 0; i < 5; i++)
            EXPECT(seen[i] == 1);
        CHK(sw->xa_recover_entry(out, 2, rmid, TMNOFLAGS), XAER_INVAL); /* scan ended */
        /* TMSTARTRSCAN restarts an open scan. */
        CHK(sw->xa_recover_entry(out, 2, rmid, TMSTARTRSCAN), 2);
        CHK(sw->xa_recover_entry(out, 8, rmid, TMSTARTRSCAN | TMENDRSCAN), 5);
        CHK(sw->xa_recover_entry(out, 2, rmid, TMNOFLAGS), XAER_INVAL); /* ended explicitly */
    }
    for (i = 0; i < 5; i++)
        CHK(sw->xa_commit_entry(&many[i], rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_recover_entry(out, 8, rmid, TMSTARTRSCAN | TMENDRSCAN), 0);

    /* xa_complete: nothing is ever asynchronous; never touch handle/retval. */
    complete_handle = 0x5a5a;
    complete_retval = 0x6b6b;
    CHK(sw->xa_complete_entry(&complete_handle, &complete_retval, rmid, TMNOFLAGS), XAER_PROTO);
    CHK(sw->xa_complete_entry(&complete_handle, &complete_retval, rmid, TMMULTIPLE), XAER_PROTO);
    CHK(sw->xa_complete_entry(&complete_handle, &complete_retval, rmid, TMNOWAIT), XAER_PROTO);
    CHK(sw->xa_complete_entry(&complete_handle, &complete_retval, rmid, TMJOIN), XAER_INVAL);
    EXPECT(complete_handle == 0x5a5a && complete_retval == 0x6b6b);
    CHK(sw->xa_complete_entry(NULL, NULL, rmid, TMNOFLAGS), XAER_PROTO);
    CHK(sw->xa_complete_entry(NULL, NULL, rmid, TMMULTIPLE | TMNOWAIT), XAER_PROTO);
    CHK(sw->xa_complete_entry(NULL, &complete_retval, rmid, TMNOFLAGS), XAER_PROTO);
    CHK(sw->xa_complete_entry(&complete_handle, NULL, rmid, TMNOFLAGS), XAER_PROTO);
    CHK(sw->xa_complete_entry(NULL, NULL, 999, TMNOFLAGS), XAER_PROTO);
    EXPECT(complete_handle == 0x5a5a && complete_retval == 0x6b6b);

    /* An XA success after a failure clears the last error; so does a data success. */
    CHK(sw->xa_prepare_entry(&u, rmid, TMNOFLAGS), XAER_NOTA);
    EXPECT(mmxa_last_error()[0] != '\0');
    CHK(sw->xa_recover_entry(NULL, 0, rmid, TMENDRSCAN), 0);
    EXPECT(mmxa_last_error()[0] == '\0');
    CHKM(mmxa_get(rmid, "nope", 4, buf, sizeof buf, &len), MMXA_NOTFOUND);
    CHK(close_rm(rmid), XA_OK);
}

/* ---- threads of control ------------------------------------------------------------------ */

struct tctx {
    int rmid;
    XID xid;
    const char *info;
    int rc[8];
};

static void run_thread(void *(*fn)(void *), void *t)
{
    pthread_t th;
    if (pthread_create(&th, NULL, fn, t) != 0 || pthread_join(th, NULL) != 0) {
        fprintf(stderr, "hostile: pthread failed\n");
        exit(2);
    }
}

/* A thread that never opened the rmid is in R0, even though the process has it open. */
static void *t_unopened(void *arg)
{
    struct tctx *t = arg;
    size_t len;
    char buf[8];
    t->rc[0] = sw->xa_start_entry(&t->xid, t->rmid, TMNOFLAGS);
    t->rc[1] = sw->xa_start_entry(&t->xid, t->rmid, TMJOIN);
    t->rc[2] = sw->xa_rollback_entry(&t->xid, t->rmid, TMNOFLAGS);
    t->rc[3] = sw->xa_recover_entry(NULL, 0, t->rmid, TMSTARTRSCAN | TMENDRSCAN);
    t->rc[4] = mmxa_put(t->rmid, "k", 1, "v", 1);
    t->rc[5] = mmxa_get(t->rmid, "k", 1, buf, sizeof buf, &len);
    t->rc[6] = sw->xa_close_entry((char *)"", t->rmid, TMNOFLAGS);
    t->rc[7] = mmxa_last_error()[0] == '\0'; /* cleared by the successful close */
    return NULL;
}

/* Another ToC: cannot end or prepare the main thread's active branch, may roll it back. */
static void *t_rollback_other(void *arg)
{
    struct tctx *t = arg;
    t->rc[0] = sw->xa_open_entry((char *)t->info, t->rmid, TMNOFLAGS);
    t->rc[1] = sw->xa_end_entry(&t->xid, t->rmid, TMSUCCESS);
    t->rc[2] = sw->xa_prepare_entry(&t->xid, t->rmid, TMNOFLAGS);
    t->rc[3] = sw->xa_commit_entry(&t->xid, t->rmid, TMONEPHASE);
    t->rc[4] = sw->xa_start_entry(&t->xid, t->rmid, TMRESUME); /* not suspended by anybody */
    t->rc[5] = sw->xa_rollback_entry(&t->xid, t->rmid, TMNOFLAGS);
    t->rc[6] = sw->xa_close_entry((char *)"", t->rmid, TMNOFLAGS);
    return NULL;
}

/* Tightly coupled: join the main thread's branch, write, end. */
static void *t_join(void *arg)
{
    struct tctx *t = arg;
    t->rc[0] = sw->xa_open_entry((char *)t->info, t->rmid, TMNOFLAGS);
    t->rc[1] = sw->xa_start_entry(&t->xid, t->rmid, TMJOIN);
    t->rc[2] = get_is(t->rmid, "j-main", "1"); /* sees the sibling's uncommitted write */
    t->rc[3] = put_s(t->rmid, "j-thread", "2");
    t->rc[4] = sw->xa_end_entry(&t->xid, t->rmid, TMSUCCESS);
    t->rc[5] = sw->xa_close_entry((char *)"", t->rmid, TMNOFLAGS);
    return NULL;
}

/* Migration: resume an association another thread suspended with TMMIGRATE. */
static void *t_resume(void *arg)
{
    struct tctx *t = arg;
    t->rc[0] = sw->xa_open_entry((char *)t->info, t->rmid, TMNOFLAGS);
    t->rc[1] = sw->xa_start_entry(&t->xid, t->rmid, TMRESUME);
    t->rc[2] = put_s(t->rmid, "mig-thread", "2");
    t->rc[3] = sw->xa_end_entry(&t->xid, t->rmid, TMSUCCESS);
    t->rc[4] = sw->xa_close_entry((char *)"", t->rmid, TMNOFLAGS);
    return NULL;
}

static void threads(void)
{
    int rmid = 70;
    const char *info = info_for("threads", "");
    struct tctx t;
    section("threads");
    CHK(open_rm(info, rmid), XA_OK);

    memset(&t, 0, sizeof t);
    t.rmid = rmid;
    t.info = info;
    t.xid = mkxid(4, "thr-unopened", "b", 0);
    run_thread(t_unopened, &t);
    CHKV(t.rc[0], XAER_PROTO);
    CHKV(t.rc[1], XAER_PROTO);
    CHKV(t.rc[2], XAER_PROTO);
    CHKV(t.rc[3], XAER_PROTO);
    CHKMV(t.rc[4], MMXA_ENOTOPEN);
    CHKMV(t.rc[5], MMXA_ENOTOPEN);
    CHKV(t.rc[6], XA_OK);
    EXPECT(t.rc[7]);
    CHKM(put_s(rmid, "main", "still open"), MMXA_OK); /* the thread's close did not close ours */

    /* §4.7 [P] (BDB): rollback from a non-associated ToC; the associated one learns at its
     * next data call and at xa_end. */
    t.xid = mkxid(4, "thr-rollback", "b", 0);
    CHK(sw->xa_start_entry(&t.xid, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "rb-main", "1"), MMXA_OK);
    run_thread(t_rollback_other, &t);
    CHKV(t.rc[0], XA_OK);
    CHKV(t.rc[1], XAER_PROTO);
    CHKV(t.rc[2], XAER_PROTO);
    CHKV(t.rc[3], XAER_PROTO);
    CHKV(t.rc[4], XAER_PROTO);
    CHKV(t.rc[5], XA_OK);
    CHKV(t.rc[6], XA_OK);
    CHKM(put_s(rmid, "rb-main2", "1"), MMXA_EROLLBACK);
    CHK_RB(sw->xa_end_entry(&t.xid, rmid, TMSUCCESS));
    CHK(sw->xa_prepare_entry(&t.xid, rmid, TMNOFLAGS), XAER_NOTA);
    CHKM(get_is(rmid, "rb-main", "1"), MMXA_NOTFOUND);
    CHKM(get_is(rmid, "rb-main2", "1"), MMXA_NOTFOUND);

    /* TMJOIN from another thread: one branch, both writes. */
    t.xid = mkxid(4, "thr-join", "b", 0);
    CHK(sw->xa_start_entry(&t.xid, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "j-main", "1"), MMXA_OK);
    run_thread(t_join, &t);
    CHKV(t.rc[0], XA_OK);
    CHKV(t.rc[1], XA_OK);
    CHKMV(t.rc[2], MMXA_OK);
    CHKMV(t.rc[3], MMXA_OK);
    CHKV(t.rc[4], XA_OK);
    CHKV(t.rc[5], XA_OK);
    CHK(sw->xa_end_entry(&t.xid, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_prepare_entry(&t.xid, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_commit_entry(&t.xid, rmid, TMNOFLAGS), XA_OK);
    CHKM(get_is(rmid, "j-main", "1"), MMXA_OK);
    CHKM(get_is(rmid, "j-thread", "2"), MMXA_OK);

    /* TMSUSPEND|TMMIGRATE here, TMRESUME there (the switch lacks TMNOMIGRATE). */
    t.xid = mkxid(4, "thr-migrate", "b", 0);
    CHK(sw->xa_start_entry(&t.xid, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "mig-main", "1"), MMXA_OK);
    CHK(sw->xa_end_entry(&t.xid, rmid, TMSUSPEND | TMMIGRATE), XA_OK);
    {
        /* Migrated away: this thread (T0 again) is free for another branch. */
        XID other = mkxid(4, "thr-other", "b", 0);
        CHK(sw->xa_start_entry(&other, rmid, TMNOFLAGS), XA_OK);
        CHK(sw->xa_end_entry(&other, rmid, TMSUCCESS), XA_OK);
        CHK(sw->xa_rollback_entry(&other, rmid, TMNOFLAGS), XA_OK);
        CHK(sw->xa_prepare_entry(&t.xid, rmid, TMNOFLAGS), XAER_PROTO); /* still suspended */
    }
    run_thread(t_resume, &t);
    CHKV(t.rc[0], XA_OK);
    CHKV(t.rc[1], XA_OK);
    CHKMV(t.rc[2], MMXA_OK);
    CHKV(t.rc[3], XA_OK);
    CHKV(t.rc[4], XA_OK);
    CHK(sw->xa_commit_entry(&t.xid, rmid, TMONEPHASE), XA_OK);
    CHKM(get_is(rmid, "mig-main", "1"), MMXA_OK);
    CHKM(get_is(rmid, "mig-thread", "2"), MMXA_OK);
    CHK(close_rm(rmid), XA_OK);
}

/* ---- the data API ------------------------------------------------------------------------- */

static void data_calls(void)
{
    int rmid = 80, i;
    char *bigkey, *bigval, *back;
    char buf[16], small[4];
    size_t len;
    uint64_t sp = 0;
    static const char bin_key[] = {'a', '\0', 'b', '\0'};
    section("data_calls");
    CHK(open_rm(info_for("data", ""), rmid), XA_OK);
    bigkey = malloc(MMXA_MAX_KEY + 1);
    bigval = malloc(MMXA_MAX_VALUE + 1);
    back = malloc(MMXA_MAX_VALUE + 1);
    if (!bigkey || !bigval || !back)
        exit(2);
    memset(bigkey, 'K', MMXA_MAX_KEY + 1);
    for (i = 0; i < MMXA_MAX_VALUE + 1; i++)
        bigval[i] = (char)(i * 7 + 3);

    /* mmxa_put */
    CHKM(mmxa_put(rmid, NULL, 5, "v", 1), MMXA_EINVAL);
    CHKM(mmxa_put(rmid, NULL, 0, "v", 1), MMXA_EINVAL);  /* empty key */
    CHKM(mmxa_put(rmid, "k", 0, "v", 1), MMXA_EINVAL);   /* empty key */
    CHKM(mmxa_put(rmid, "k", 1, NULL, 3), MMXA_EINVAL);
    CHKM(mmxa_put(rmid, NULL, SIZE_MAX, NULL, SIZE_MAX), MMXA_EINVAL);
    CHKM(mmxa_put(rmid, "k", SIZE_MAX, "v", 1), MMXA_ETOOBIG);
    CHKM(mmxa_put(rmid, "k", SIZE_MAX / 2, "v", 1), MMXA_ETOOBIG);
    CHKM(mmxa_put(rmid, "k", SIZE_MAX / 2 + 1, "v", 1), MMXA_ETOOBIG);
    CHKM(mmxa_put(rmid, "k", 1, "v", SIZE_MAX), MMXA_ETOOBIG);
    CHKM(mmxa_put(rmid, "k", 1, "v", SIZE_MAX / 2 + 1), MMXA_ETOOBIG);
    CHKM(mmxa_put(rmid, bigkey, MMXA_MAX_KEY + 1, "v", 1), MMXA_ETOOBIG);
    CHKM(mmxa_put(rmid, "k", 1, bigval, MMXA_MAX_VALUE + 1), MMXA_ETOOBIG);
    CHKM(mmxa_get(rmid, "k", 1, buf, sizeof buf, &len), MMXA_NOTFOUND); /* nothing was written */
    CHKM(mmxa_put(rmid, "empty", 5, NULL, 0), MMXA_OK);  /* empty value */
    CHKM(mmxa_put(rmid, "empty2", 6, "x", 0), MMXA_OK);
    CHKM(mmxa_put(rmid, bigkey, MMXA_MAX_KEY, "max-key", 7), MMXA_OK);
    CHKM(mmxa_put(rmid, "bigval", 6, bigval, MMXA_MAX_VALUE), MMXA_OK);
    CHKM(mmxa_put(rmid, bin_key, sizeof bin_key, "bin", 3), MMXA_OK);
    CHKM(mmxa_put(rmid, "ab", 2, "text", 4), MMXA_OK); /* not the same key as "a\0b\0" */

    /* mmxa_get */
    len = 12345;
    CHKM(mmxa_get(rmid, "empty", 5, NULL, 0, &len), MMXA_OK);
    CHKV(len, 0);
    CHKM(mmxa_get(rmid, "empty2", 6, buf, sizeof buf, &len), MMXA_OK);
    CHKV(len, 0);
    CHKM(mmxa_get(rmid, NULL, 3, buf, sizeof buf, &len), MMXA_EINVAL);
    CHKM(mmxa_get(rmid, "k", 0, buf, sizeof buf, &len), MMXA_EINVAL);
    CHKM(mmxa_get(rmid, "ab", 2, NULL, 5, &len), MMXA_EINVAL);
    CHKM(mmxa_get(rmid, "ab", 2, buf, sizeof buf, NULL), MMXA_EINVAL);
    CHKM(mmxa_get(rmid, "ab", 2, NULL, 0, NULL), MMXA_EINVAL);
    CHKM(mmxa_get(rmid, "ab", SIZE_MAX, buf, sizeof buf, &len), MMXA_ETOOBIG);
    CHKM(mmxa_get(rmid, bigkey, MMXA_MAX_KEY + 1, buf, sizeof buf, &len), MMXA_ETOOBIG);
    CHKM(mmxa_get(rmid, "absent", 6, buf, sizeof buf, &len), MMXA_NOTFOUND);
    /* mmxa_get_for_update takes the same arguments, checked the same way. */
    CHKM(mmxa_get_for_update(rmid, NULL, 3, buf, sizeof buf, &len), MMXA_EINVAL);
    CHKM(mmxa_get_for_update(rmid, "k", 0, buf, sizeof buf, &len), MMXA_EINVAL);
    CHKM(mmxa_get_for_update(rmid, "ab", 2, NULL, 5, &len), MMXA_EINVAL);
    CHKM(mmxa_get_for_update(rmid, "ab", 2, buf, sizeof buf, NULL), MMXA_EINVAL);
    CHKM(mmxa_get_for_update(rmid, "ab", SIZE_MAX, buf, sizeof buf, &len), MMXA_ETOOBIG);
    CHKM(mmxa_get_for_update(rmid, bigkey, MMXA_MAX_KEY + 1, buf, sizeof buf, &len), MMXA_ETOOBIG);
    CHKM(mmxa_get_for_update(rmid, "absent", 6, buf, sizeof buf, &len), MMXA_NOTFOUND);
    len = 0;
    CHKM(mmxa_get_for_update(rmid, "ab", 2, NULL, 0, &len), MMXA_EBUFSIZE);
    CHKV(len, 4);
    /* Too small: MMXA_EBUFSIZE, the needed length, and the buffer untouched. */
    memset(small, '#', sizeof small);
    len = 0;
    CHKM(mmxa_get(rmid, "ab", 2, small, 3, &len), MMXA_EBUFSIZE);
    CHKV(len, 4);
    EXPECT(memcmp(small, "####", 4) == 0);
    len = 0;
    CHKM(mmxa_get(rmid, "ab", 2, NULL, 0, &len), MMXA_EBUFSIZE); /* ask for the length */
    CHKV(len, 4);
    len = 0;
    CHKM(mmxa_get(rmid, "ab", 2, small, 4, &len), MMXA_OK); /* exactly big enough */
    CHKV(len, 4);
    EXPECT(memcmp(small, "text", 4) == 0);
    len = 0;
    CHKM(mmxa_get(rmid, bin_key, sizeof bin_key, buf, sizeof buf, &len), MMXA_OK);
    EXPECT(len == 3 && memcmp(buf, "bin", 3) == 0);
    CHKM(get_is(rmid, "a", "bin"), MMXA_NOTFOUND); /* keys are bytes, not C strings */
    CHKM(mmxa_get(rmid, bigkey, MMXA_MAX_KEY, buf, sizeof buf, &len), MMXA_OK);
    EXPECT(len == 7 && memcmp(buf, "max-key", 7) == 0);
    len = 0;
    CHKM(mmxa_get(rmid, "bigval", 6, NULL, 0, &len), MMXA_EBUFSIZE);
    CHKV(len, MMXA_MAX_VALUE);
    len = 0;
    CHKM(mmxa_get(rmid, "bigval", 6, back, MMXA_MAX_VALUE + 1, &len), MMXA_OK);
    EXPECT(len == MMXA_MAX_VALUE && memcmp(back, bigval, MMXA_MAX_VALUE) == 0);

    /* mmxa_delete */
    CHKM(mmxa_delete(rmid, NULL, 1), MMXA_EINVAL);
    CHKM(mmxa_delete(rmid, NULL, 0), MMXA_EINVAL);
    CHKM(mmxa_delete(rmid, "ab", 0), MMXA_EINVAL);
    CHKM(mmxa_delete(rmid, "ab", SIZE_MAX), MMXA_ETOOBIG);
    CHKM(mmxa_delete(rmid, bigkey, MMXA_MAX_KEY + 1), MMXA_ETOOBIG);
    CHKM(mmxa_delete(rmid, "absent", 6), MMXA_NOTFOUND);
    CHKM(mmxa_delete(rmid, "ab", 2), MMXA_OK);
    CHKM(mmxa_delete(rmid, "ab", 2), MMXA_NOTFOUND);
    CHKM(mmxa_get(rmid, "ab", 2, buf, sizeof buf, &len), MMXA_NOTFOUND);

    /* savepoints: only inside a branch; NULL out-pointer; unknown ids of any value */
    CHKM(mmxa_savepoint(rmid, NULL), MMXA_EINVAL);
    CHKM(mmxa_savepoint(rmid, &sp), MMXA_EINVAL); /* not associated with a branch */
    CHKM(mmxa_rollback_to_savepoint(rmid, 0), MMXA_EINVAL);
    CHKM(mmxa_rollback_to_savepoint(rmid, UINT64_MAX), MMXA_EINVAL);
    CHKM(mmxa_delete(rmid, bin_key, sizeof bin_key), MMXA_OK);

    /* The same rules inside a branch; a refused call leaves the branch usable. */
    {
        XID x = mkxid(5, "data-branch", "b", 0);
        CHK(sw->xa_start_entry(&x, rmid, TMNOFLAGS), XA_OK);
        CHKM(mmxa_put(rmid, NULL, 1, "v", 1), MMXA_EINVAL);
        CHKM(mmxa_put(rmid, "k", SIZE_MAX, "v", 1), MMXA_ETOOBIG);
        CHKM(mmxa_put(rmid, "k", 1, bigval, MMXA_MAX_VALUE + 1), MMXA_ETOOBIG);
        CHKM(mmxa_get(rmid, "k", 1, buf, sizeof buf, NULL), MMXA_EINVAL);
        CHKM(mmxa_put(rmid, "in-branch", 9, "1", 1), MMXA_OK);
        CHKM(mmxa_delete(rmid, "empty", 5), MMXA_OK);
        CHKM(mmxa_delete(rmid, "empty", 5), MMXA_NOTFOUND); /* as the branch sees it */
        len = 0;
        CHKM(mmxa_get(rmid, "in-branch", 9, NULL, 0, &len), MMXA_EBUFSIZE);
        CHKV(len, 1);
        CHK(sw->xa_end_entry(&x, rmid, TMSUCCESS), XA_OK);
        CHKM(mmxa_get(rmid, "empty", 5, NULL, 0, &len), MMXA_OK); /* not committed yet */
        CHK(sw->xa_commit_entry(&x, rmid, TMONEPHASE), XA_OK);
        CHKM(mmxa_get(rmid, "empty", 5, NULL, 0, &len), MMXA_NOTFOUND);
        CHKM(get_is(rmid, "in-branch", "1"), MMXA_OK);
    }
    CHK(close_rm(rmid), XA_OK);
    /* Reopen: the 1 MiB value and the binary key survived the log round trip. */
    CHK(open_rm(info_for("data", ""), rmid), XA_OK);
    len = 0;
    CHKM(mmxa_get(rmid, "bigval", 6, back, MMXA_MAX_VALUE, &len), MMXA_OK);
    EXPECT(len == MMXA_MAX_VALUE && memcmp(back, bigval, MMXA_MAX_VALUE) == 0);
    CHKM(mmxa_get(rmid, bin_key, sizeof bin_key, buf, sizeof buf, &len), MMXA_NOTFOUND);
    CHK(close_rm(rmid), XA_OK);

    /* Values of 1 MiB through 4 MiB segments: records cross into new segment files. */
    rmid = 81;
    CHK(open_rm(info_for("rollover", ""), rmid), XA_OK);
    for (i = 0; i < 9; i++) {
        char key[8];
        snprintf(key, sizeof key, "v%d", i);
        bigval[0] = (char)i;
        snprintf(ctx, sizeof ctx, "value %d", i);
        CHKM(mmxa_put(rmid, key, strlen(key), bigval, MMXA_MAX_VALUE), MMXA_OK);
    }
    CHK(close_rm(rmid), XA_OK);
    CHK(open_rm(info_for("rollover", ""), rmid), XA_OK);
    for (i = 0; i < 9; i++) {
        char key[8];
        snprintf(key, sizeof key, "v%d", i);
        bigval[0] = (char)i;
        len = 0;
        snprintf(ctx, sizeof ctx, "value %d", i);
        CHKM(mmxa_get(rmid, key, strlen(key), back, MMXA_MAX_VALUE, &len), MMXA_OK);
        EXPECT(len == MMXA_MAX_VALUE && memcmp(back, bigval, MMXA_MAX_VALUE) == 0);
    }
    ctx[0] = '\0';
    CHK(close_rm(rmid), XA_OK);
    free(bigkey);
    free(bigval);
    free(back);
}

static void local_txns(void)
{
    static const int odd_rmids[] = {90, -1, INT_MIN, INT_MAX};
    static const long bad_len[] = {-1, 0, 65, LONG_MAX, LONG_MIN};
    int rmid = 90;
    size_t i;
    uint64_t level = 77;
    XID x, copy, other;
    section("local_txns");
    for (i = 0; i < sizeof odd_rmids / sizeof odd_rmids[0]; i++) {
        int r = odd_rmids[i];
        x = mkxid(9, "local-unopened", "b", 0);
        snprintf(ctx, sizeof ctx, "rmid %d not open", r);
        CHKM(mmxa_txn_begin(r), MMXA_ENOTOPEN);
        CHKM(mmxa_txn_commit(r), MMXA_ENOTOPEN);
        CHKM(mmxa_txn_commit_and_chain(r), MMXA_ENOTOPEN);
        CHKM(mmxa_txn_rollback(r), MMXA_ENOTOPEN);
        CHK(mmxa_txn_promote(r, &x), XAER_PROTO);
        CHK(mmxa_txn_promote(r, NULL), XAER_PROTO); /* rmid before XID */
        CHKM(mmxa_txn_begin_nested(r, &level), MMXA_ENOTOPEN);
        CHKM(mmxa_txn_begin_nested(r, NULL), MMXA_EINVAL); /* pointers first, as the data API */
        CHKM(mmxa_txn_commit_nested(r), MMXA_ENOTOPEN);
        CHKM(mmxa_txn_rollback_nested(r), MMXA_ENOTOPEN);
        CHKV(level, 77); /* never written on failure */
    }
    ctx[0] = '\0';
    CHK(open_rm(info_for("local", ""), rmid), XA_OK);
    /* No transaction open. */
    x = mkxid(9, "local-none", "b", 0);
    CHKM(mmxa_txn_commit(rmid), MMXA_EPROTO);
    CHKM(mmxa_txn_commit_and_chain(rmid), MMXA_EPROTO);
    CHKM(mmxa_txn_rollback(rmid), MMXA_EPROTO);
    CHK(mmxa_txn_promote(rmid, &x), XAER_PROTO);
    CHK(mmxa_txn_promote(rmid, NULL), XAER_INVAL);
    CHKM(mmxa_txn_begin_nested(rmid, &level), MMXA_EPROTO);
    CHKM(mmxa_txn_commit_nested(rmid), MMXA_EPROTO);
    CHKM(mmxa_txn_rollback_nested(rmid), MMXA_EPROTO);
    CHKV(level, 77);
    /* One open: twice, NULL level_out, no nested level, xa_start, xa_close. */
    CHKM(mmxa_txn_begin(rmid), MMXA_OK);
    CHKM(mmxa_txn_begin(rmid), MMXA_EPROTO);
    CHKM(mmxa_txn_begin_nested(rmid, NULL), MMXA_EINVAL);
    CHKM(mmxa_txn_commit_nested(rmid), MMXA_EPROTO);
    CHKM(mmxa_txn_rollback_nested(rmid), MMXA_EPROTO);
    CHK(sw->xa_start_entry(&x, rmid, TMNOFLAGS), XAER_OUTSIDE);
    CHK(close_rm(rmid), XAER_PROTO);
    CHKM(put_s(rmid, "lk", "1"), MMXA_OK);
    CHKM(mmxa_txn_begin_nested(rmid, &level), MMXA_OK);
    CHKV(level, 1);
    CHKM(mmxa_txn_begin_nested(rmid, &level), MMXA_OK);
    CHKV(level, 2);
    CHKM(mmxa_txn_rollback_nested(rmid), MMXA_OK);
    CHKM(mmxa_txn_commit_nested(rmid), MMXA_OK);
    /* Bad XIDs: XAER_INVAL, and the transaction stays open. */
    CHK(mmxa_txn_promote(rmid, NULL), XAER_INVAL);
    x = mkxid(-1, "g", "b", 0);
    CHK(mmxa_txn_promote(rmid, &x), XAER_INVAL);
    for (i = 0; i < sizeof bad_len / sizeof bad_len[0]; i++) {
        snprintf(ctx, sizeof ctx, "length %ld", bad_len[i]);
        x = mkxid(9, "local-bad", "b", 0);
        x.gtrid_length = bad_len[i];
        CHK(mmxa_txn_promote(rmid, &x), XAER_INVAL);
        x = mkxid(9, "local-bad", "b", 0);
        x.bqual_length = bad_len[i];
        CHK(mmxa_txn_promote(rmid, &x), XAER_INVAL);
    }
    ctx[0] = '\0';
    CHKM(get_is(rmid, "lk", "1"), MMXA_OK); /* still in it */
    /* A duplicate XID (another branch exists): XAER_DUPID, still open. */
    other = mkxid(9, "local-taken", "b", 0);
    CHKM(mmxa_txn_commit(rmid), MMXA_OK);
    CHK(sw->xa_start_entry(&other, rmid, TMNOFLAGS), XA_OK);
    CHK(sw->xa_end_entry(&other, rmid, TMSUCCESS), XA_OK);
    CHKM(mmxa_txn_begin(rmid), MMXA_OK);
    CHKM(put_s(rmid, "lk", "2"), MMXA_OK);
    CHK(mmxa_txn_promote(rmid, &other), XAER_DUPID);
    CHKM(get_is(rmid, "lk", "2"), MMXA_OK);
    /* Promoted: the caller's XID is not written (trailing bytes included). */
    x = mkxid(9, "local-promoted", "b", 0xA5);
    copy = x;
    CHK(mmxa_txn_promote(rmid, &x), XA_OK);
    EXPECT(memcmp(&x, &copy, sizeof x) == 0);
    CHK(mmxa_txn_promote(rmid, &x), XAER_PROTO); /* no local transaction any more */
    CHKM(mmxa_txn_begin(rmid), MMXA_EPROTO);    /* associated with the branch */
    CHK(sw->xa_end_entry(&x, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_commit_entry(&x, rmid, TMONEPHASE), XA_OK);
    CHK(sw->xa_rollback_entry(&other, rmid, TMNOFLAGS), XA_OK);
    CHKM(get_is(rmid, "lk", "2"), MMXA_OK);
    /* Chained: the next one is open at once. */
    CHKM(mmxa_txn_begin(rmid), MMXA_OK);
    CHKM(mmxa_txn_commit_and_chain(rmid), MMXA_OK);
    CHKM(mmxa_txn_begin(rmid), MMXA_EPROTO);
    CHKM(mmxa_txn_rollback(rmid), MMXA_OK);
    CHK(close_rm(rmid), XA_OK);
}

/* ---- cursors ------------------------------------------------------------------------------ */

/* The cursor's next entry: MMXA_OK if it is key=value, -100 for another one, else the code. */
static int next_is(uint64_t c, const char *key, const char *value)
{
    char k[64], v[64];
    size_t kl = 0, vl = 0;
    int rc = mmxa_cursor_next(c, k, sizeof k, &kl, v, sizeof v, &vl);
    if (rc != MMXA_OK)
        return rc;
    return kl == strlen(key) && memcmp(k, key, kl) == 0 && vl == strlen(value) &&
                   memcmp(v, value, vl) == 0
               ? MMXA_OK
               : -100;
}

struct cctx {
    int rmid;
    const char *info;
    XID xid;
    uint64_t outside, inside; /* opened by the main thread outside and inside its branch */
    int rc[8];
};

/* Another thread: needs the rmid open; reads a cursor of committed data, not a branch's unless
 * it joins the branch. */
static void *t_cursor(void *arg)
{
    struct cctx *c = arg;
    c->rc[0] = next_is(c->outside, "b", "22");
    c->rc[1] = sw->xa_open_entry((char *)c->info, c->rmid, TMNOFLAGS);
    c->rc[2] = next_is(c->outside, "b", "22");
    c->rc[3] = next_is(c->inside, "m", "in-branch");
    c->rc[4] = sw->xa_start_entry(&c->xid, c->rmid, TMJOIN);
    c->rc[5] = next_is(c->inside, "m", "in-branch");
    c->rc[6] = sw->xa_end_entry(&c->xid, c->rmid, TMSUCCESS);
    c->rc[7] = sw->xa_close_entry((char *)"", c->rmid, TMNOFLAGS);
    return NULL;
}

static void cursors(void)
{
    static const int odd_rmids[] = {100, 0, -1, INT_MIN, INT_MAX};
    static const long bad_flags[] = {0x10, 0x100, 1L << 40, -1, LONG_MIN, LONG_MAX};
    int rmid = 100;
    const char *info = info_for("cursors", ""), *other_info = info_for("cursors-other", "");
    size_t i, kl, vl;
    char key[8], val[8], *bigkey;
    uint64_t c = 0, c2 = 0;
    XID x;
    struct cctx t;
    section("cursors");
    bigkey = malloc(MMXA_MAX_KEY + 1);
    if (bigkey == NULL)
        exit(2);
    memset(bigkey, 0xff, MMXA_MAX_KEY + 1); /* after every key of this store */

    /* Not open: MMXA_ENOTOPEN, pointers checked first (as the data API), id never written. */
    for (i = 0; i < sizeof odd_rmids / sizeof odd_rmids[0]; i++) {
        snprintf(ctx, sizeof ctx, "rmid %d not open", odd_rmids[i]);
        CHKM(mmxa_cursor_open(odd_rmids[i], NULL, 0, NULL, 0, 0, &c), MMXA_ENOTOPEN);
        CHKM(mmxa_cursor_open(odd_rmids[i], "a", 1, "b", 1, MMXA_SCAN_REVERSE, &c),
             MMXA_ENOTOPEN);
        CHKM(mmxa_cursor_open(odd_rmids[i], NULL, 0, NULL, 0, 0, NULL), MMXA_EINVAL);
        CHKMV(c, 0);
    }
    ctx[0] = '\0';

    CHK(open_rm(info, rmid), XA_OK);
    CHKM(put_s(rmid, "a", "1"), MMXA_OK);
    CHKM(put_s(rmid, "b", "22"), MMXA_OK);
    CHKM(put_s(rmid, "c", ""), MMXA_OK);
    CHKM(put_s(rmid, "d", "4444"), MMXA_OK);

    /* mmxa_cursor_open: bad arguments, the id never written. */
    CHKM(mmxa_cursor_open(rmid, NULL, 0, NULL, 0, 0, NULL), MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, NULL, 1, NULL, 0, 0, &c), MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, NULL, 0, NULL, 3, 0, &c), MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, NULL, SIZE_MAX, NULL, 0, 0, &c), MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, NULL, 1, NULL, 0, MMXA_SCAN_PREFIX, &c), MMXA_EINVAL);
    for (i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        snprintf(ctx, sizeof ctx, "flags %#lx", bad_flags[i]);
        CHKM(mmxa_cursor_open(rmid, NULL, 0, NULL, 0, bad_flags[i], &c), MMXA_EINVAL);
        CHKM(mmxa_cursor_open(rmid, NULL, 0, NULL, 0, bad_flags[i] | MMXA_SCAN_REVERSE, &c),
             MMXA_EINVAL);
    }
    ctx[0] = '\0';
    CHKM(mmxa_cursor_open(rmid, "a", 1, "b", 1, MMXA_SCAN_PREFIX, &c), MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, NULL, 0, "b", 1, MMXA_SCAN_PREFIX, &c), MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, "a", 1, NULL, 0, MMXA_SCAN_PREFIX | MMXA_SCAN_LO_EXCL, &c),
         MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, "a", 1, NULL, 0, MMXA_SCAN_PREFIX | MMXA_SCAN_HI_INCL, &c),
         MMXA_EINVAL);
    CHKM(mmxa_cursor_open(rmid, bigkey, MMXA_MAX_KEY + 1, NULL, 0, 0, &c), MMXA_ETOOBIG);
    CHKM(mmxa_cursor_open(rmid, NULL, 0, bigkey, MMXA_MAX_KEY + 1, 0, &c), MMXA_ETOOBIG);
    CHKM(mmxa_cursor_open(rmid, bigkey, MMXA_MAX_KEY + 1, NULL, 0, MMXA_SCAN_PREFIX, &c),
         MMXA_ETOOBIG);
    CHKM(mmxa_cursor_open(rmid, "a", SIZE_MAX, NULL, 0, 0, &c), MMXA_ETOOBIG);
    CHKM(mmxa_cursor_open(rmid, "a", 1, "b", SIZE_MAX, 0, &c), MMXA_ETOOBIG);
    CHKMV(c, 0);
    /* The longest bound is a bound; a bound past the last key reads nothing. */
    CHKM(mmxa_cursor_open(rmid, bigkey, MMXA_MAX_KEY, NULL, 0, 0, &c), MMXA_OK);
    EXPECT(c != 0);
    kl = vl = 77;
    CHKM(mmxa_cursor_next(c, NULL, 0, &kl, NULL, 0, &vl), MMXA_NOTFOUND);
    CHKM(mmxa_cursor_next(c, NULL, 0, &kl, NULL, 0, &vl), MMXA_NOTFOUND); /* and stays there */
    CHKM(mmxa_cursor_close(c), MMXA_OK);
    /* lo above hi: empty, not an error; a prefix with a non-NULL empty hi is accepted. */
    CHKM(mmxa_cursor_open(rmid, "d", 1, "a", 1, MMXA_SCAN_REVERSE, &c), MMXA_OK);
    CHKM(next_is(c, "x", "x"), MMXA_NOTFOUND);
    CHKM(mmxa_cursor_close(c), MMXA_OK);
    CHKM(mmxa_cursor_open(rmid, "c", 1, "", 0, MMXA_SCAN_PREFIX | MMXA_SCAN_REVERSE, &c),
         MMXA_OK);
    CHKM(next_is(c, "c", ""), MMXA_OK);
    CHKM(next_is(c, "c", ""), MMXA_NOTFOUND);
    CHKM(mmxa_cursor_close(c), MMXA_OK);

    /* mmxa_cursor_next: bad arguments never consume the entry. */
    CHKM(mmxa_cursor_open(rmid, NULL, 0, NULL, 0, 0, &c), MMXA_OK);
    CHKM(mmxa_cursor_next(c, key, sizeof key, NULL, val, sizeof val, &vl), MMXA_EINVAL);
    CHKM(mmxa_cursor_next(c, key, sizeof key, &kl, val, sizeof val, NULL), MMXA_EINVAL);
    CHKM(mmxa_cursor_next(c, NULL, 0, NULL, NULL, 0, NULL), MMXA_EINVAL);
    CHKM(mmxa_cursor_next(c, NULL, 5, &kl, val, sizeof val, &vl), MMXA_EINVAL);
    CHKM(mmxa_cursor_next(c, key, sizeof key, &kl, NULL, 5, &vl), MMXA_EINVAL);
    CHKM(mmxa_cursor_next(c, NULL, SIZE_MAX, &kl, NULL, SIZE_MAX, &vl), MMXA_EINVAL);
    /* Asking the lengths, and buffers one byte short: MMXA_EBUFSIZE, the lengths, buffers
     * untouched, the entry still next. */
    kl = vl = 77;
    CHKM(mmxa_cursor_next(c, NULL, 0, &kl, NULL, 0, &vl), MMXA_EBUFSIZE);
    CHKMV(kl, 1);
    CHKMV(vl, 1);
    CHKM(next_is(c, "a", "1"), MMXA_OK);
    memset(key, '#', sizeof key);
    memset(val, '#', sizeof val);
    kl = vl = 77;
    CHKM(mmxa_cursor_next(c, key, sizeof key, &kl, val, 1, &vl), MMXA_EBUFSIZE);
    CHKMV(kl, 1);
    CHKMV(vl, 2);
    CHKM(mmxa_cursor_next(c, key, 0, &kl, val, sizeof val, &vl), MMXA_EBUFSIZE);
    EXPECT(memcmp(key, "########", 8) == 0 && memcmp(val, "########", 8) == 0);
    kl = vl = 77;
    CHKM(mmxa_cursor_next(c, key, 1, &kl, val, 2, &vl), MMXA_OK); /* exactly big enough */
    EXPECT(kl == 1 && vl == 2 && memcmp(key, "b#", 2) == 0 && memcmp(val, "22#", 3) == 0);
    /* An empty value fits a NULL buffer of capacity 0. */
    kl = vl = 77;
    CHKM(mmxa_cursor_next(c, key, sizeof key, &kl, NULL, 0, &vl), MMXA_OK);
    EXPECT(kl == 1 && vl == 0 && key[0] == 'c');
    CHKM(next_is(c, "d", "4444"), MMXA_OK);
    CHKM(next_is(c, "d", "4444"), MMXA_NOTFOUND);
    CHKM(next_is(c, "d", "4444"), MMXA_NOTFOUND);

    /* Zero, unknown and closed ids. */
    CHKM(mmxa_cursor_close(c), MMXA_OK);
    CHKM(next_is(c, "a", "1"), MMXA_EINVAL);
    CHKM(mmxa_cursor_close(c), MMXA_EINVAL);
    CHKM(next_is(0, "a", "1"), MMXA_EINVAL);
    CHKM(next_is(UINT64_MAX, "a", "1"), MMXA_EINVAL);
    CHKM(next_is(c + 1000, "a", "1"), MMXA_EINVAL);
    CHKM(mmxa_cursor_close(0), MMXA_OK); /* 0 is never a cursor: nothing to close */
    CHKM(mmxa_cursor_close(UINT64_MAX), MMXA_EINVAL);
    CHKM(mmxa_cursor_next(c, NULL, 0, NULL, NULL, 0, NULL), MMXA_EINVAL);

    /* A branch's cursor: sees its write; not usable while suspended or after the end. */
    x = mkxid(11, "cursor-branch", "b", 0);
    CHK(sw->xa_start_entry(&x, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "m", "in-branch"), MMXA_OK);
    CHKM(mmxa_cursor_open(rmid, "m", 1, NULL, 0, MMXA_SCAN_PREFIX, &c), MMXA_OK);
    CHKM(mmxa_cursor_open(rmid, "b", 1, "c", 1, MMXA_SCAN_HI_INCL, &c2), MMXA_OK);
    CHK(sw->xa_end_entry(&x, rmid, TMSUSPEND), XA_OK);
    CHKM(next_is(c, "m", "in-branch"), MMXA_EPROTO);
    CHKM(mmxa_cursor_open(rmid, "m", 1, NULL, 0, MMXA_SCAN_PREFIX, &t.inside), MMXA_OK);
    CHKM(next_is(t.inside, "m", "in-branch"), MMXA_NOTFOUND); /* outside: committed data */
    CHKM(mmxa_cursor_close(t.inside), MMXA_OK);
    CHK(sw->xa_start_entry(&x, rmid, TMRESUME), XA_OK);
    CHKM(next_is(c, "m", "in-branch"), MMXA_OK);
    CHKM(next_is(c, "m", "in-branch"), MMXA_NOTFOUND);
    CHKM(next_is(c2, "b", "22"), MMXA_OK);
    CHK(sw->xa_end_entry(&x, rmid, TMSUCCESS), XA_OK);
    CHKM(next_is(c2, "c", ""), MMXA_EPROTO);
    CHK(sw->xa_commit_entry(&x, rmid, TMONEPHASE), XA_OK);
    CHKM(next_is(c2, "c", ""), MMXA_EPROTO);
    CHKM(mmxa_cursor_close(c), MMXA_OK);
    CHKM(mmxa_cursor_close(c2), MMXA_OK);

    /* Other threads: the rmid must be open there; a branch's cursor needs the branch. */
    memset(&t, 0, sizeof t);
    t.rmid = rmid;
    t.info = info;
    t.xid = mkxid(11, "cursor-thread", "b", 0);
    CHKM(mmxa_cursor_open(rmid, "b", 1, NULL, 0, 0, &t.outside), MMXA_OK);
    CHK(sw->xa_start_entry(&t.xid, rmid, TMNOFLAGS), XA_OK);
    CHKM(put_s(rmid, "m", "in-branch"), MMXA_OK);
    CHKM(mmxa_cursor_open(rmid, "m", 1, "n", 1, 0, &t.inside), MMXA_OK);
    run_thread(t_cursor, &t);
    CHKMV(t.rc[0], MMXA_ENOTOPEN);
    CHKV(t.rc[1], XA_OK);
    CHKMV(t.rc[2], MMXA_OK);
    CHKMV(t.rc[3], MMXA_EPROTO);
    CHKV(t.rc[4], XA_OK);
    CHKMV(t.rc[5], MMXA_OK);
    CHKV(t.rc[6], XA_OK);
    CHKV(t.rc[7], XA_OK);
    CHKM(next_is(t.inside, "m", "in-branch"), MMXA_NOTFOUND); /* the thread read it */
    CHKM(next_is(t.outside, "c", ""), MMXA_OK);
    CHK(sw->xa_end_entry(&t.xid, rmid, TMSUCCESS), XA_OK);
    CHK(sw->xa_rollback_entry(&t.xid, rmid, TMNOFLAGS), XA_OK);
    CHKM(mmxa_cursor_close(t.inside), MMXA_OK);

    /* A closed rmid: MMXA_ENOTOPEN, and the cursor still has to be closed. */
    CHK(close_rm(rmid), XA_OK);
    CHKM(next_is(t.outside, "d", "4444"), MMXA_ENOTOPEN);
    CHKM(mmxa_cursor_open(rmid, NULL, 0, NULL, 0, 0, &c), MMXA_ENOTOPEN);
    /* The same rmid reopened on another store: the cursor was the first store's. */
    CHK(open_rm(other_info, rmid), XA_OK);
    CHKM(put_s(rmid, "e-other", "5"), MMXA_OK);
    CHKM(next_is(t.outside, "d", "4444"), MMXA_EINVAL);
    CHK(close_rm(rmid), XA_OK);
    CHKM(mmxa_cursor_close(t.outside), MMXA_OK);
    CHKM(mmxa_cursor_close(t.outside), MMXA_EINVAL);
    free(bigkey);
}

int main(int argc, char **argv)
{
    const char *alarm_env = getenv("HOSTILE_ALARM");
    unsigned secs = alarm_env != NULL ? (unsigned)strtoul(alarm_env, NULL, 10) : 60;
    struct stat st;
    if (argc != 2 || stat(argv[1], &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "usage: %s SCRATCH_DIR (an existing directory)\n", argv[0]);
        return 2;
    }
    base = argv[1];
    signal(SIGALRM, on_alarm);
    alarm(secs > 0 ? secs : 60);
    setvbuf(stdout, NULL, _IOLBF, 0);

    switch_sanity();
    strings();
    unopened_rmids();
    open_strings();
    open_close();
    flag_bits();
    xid_validation();
    xid_identity();
    state_table();
    threads();
    data_calls();
    local_txns();
    cursors();
    section(NULL);

    printf("hostile: %d checks, %d failed, %d notes\n", checks, failures, notes);
    return failures == 0 ? 0 : 1;
}
