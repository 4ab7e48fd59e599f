/*
 * tuxedo.c - a Tuxedo-style deployment: N worker processes do the work, one TM process
 * prepares and commits.
 *
 * Two banks, two mmxa stores (rmid 1 = bank A in DATA/bank-a, rmid 2 = bank B in DATA/bank-b),
 * as in bank.c. The difference is who does what:
 *   - the TM process forks N worker processes (before anyone opens a store), then opens both
 *     stores itself. Each process calls xa_open with the same open strings;
 *   - for each transfer the TM picks a worker and sends it the XID over a pipe. The worker
 *     xa_starts the branch on both stores, moves money with mmxa_get/mmxa_put, xa_ends
 *     (TMSUCCESS, or TMFAIL when told to fail) and answers "done";
 *   - the TM, a process that did none of the work, calls xa_prepare on both stores, prints the
 *     commit decision a real TM would force to its log, and calls xa_commit on both (or
 *     xa_rollback on both when a prepare answered XA_RB*).
 * At the end the TM checks the balances from its own process, asks xa_recover that nothing is
 * left in doubt, and tells the workers to close and exit.
 *
 * Usage: tuxedo [DATA_DIR] [WORKERS]     (default ./tuxedo-data and 3 workers)
 * Exit status: 0 when everything went as expected, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "xa.h"
#include "mmxa.h"

#define MAX_WORKERS 8
#define TRANSFERS 6

static struct xa_switch_t *const sw = &mmxa_switch;
static char info_a[MAXINFOSIZE], info_b[MAXINFOSIZE];

struct worker {
    pid_t pid;
    FILE *to;   /* TM -> worker: one command per line */
    FILE *from; /* worker -> TM: one answer per line */
};

static void fail(const char *who, const char *what, int rc)
{
    printf("FAIL %s: %s -> %d (%s)\n", who, what, rc, mmxa_last_error());
    exit(1);
}

static XID make_xid(int n)
{
    XID x;
    char gtrid[32];
    memset(&x, 0, sizeof x);
    snprintf(gtrid, sizeof gtrid, "tux-%d-%ld", n, (long)getpid());
    x.formatID = 0x4d4d5841; /* "MMXA" */
    x.gtrid_length = (long)strlen(gtrid);
    x.bqual_length = 1;
    memcpy(x.data, gtrid, strlen(gtrid));
    x.data[strlen(gtrid)] = 'b';
    return x;
}

/* The gtrid as text, for messages and for the pipe. */
static const char *xid_text(const XID *x)
{
    static char buf[80];
    snprintf(buf, sizeof buf, "%.*s", (int)x->gtrid_length, x->data);
    return buf;
}

/* Read to be written back changed: inside a branch, lock it exclusively at once. */
static int64_t balance(int rmid, const char *account)
{
    char buf[32];
    size_t len = 0;
    int rc = mmxa_get_for_update(rmid, account, strlen(account), buf, sizeof buf - 1, &len);
    if (rc == MMXA_NOTFOUND)
        return -1;
    if (rc != MMXA_OK)
        fail("get", account, rc);
    buf[len] = 0;
    return strtoll(buf, NULL, 10);
}

static void set_balance(int rmid, const char *account, int64_t v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    int rc = mmxa_put(rmid, account, strlen(account), buf, (size_t)n);
    if (rc != MMXA_OK)
        fail("put", account, rc);
}

static void open_both(const char *who)
{
    int rc;
    if ((rc = sw->xa_open_entry(info_a, 1, TMNOFLAGS)) != XA_OK)
        fail(who, "xa_open(bank A)", rc);
    if ((rc = sw->xa_open_entry(info_b, 2, TMNOFLAGS)) != XA_OK)
        fail(who, "xa_open(bank B)", rc);
}

/* ---- a worker process ------------------------------------------------------------------- */

/* Commands: "work GTRID AMOUNT OK|FAIL" moves AMOUNT from alice@A to bob@B in the branch
 * GTRID (a negative amount moves it back); "quit" closes and exits. */
static int worker_main(int n, FILE *in, FILE *out)
{
    char line[160], gtrid[64], how[8];
    char who[16];
    long amount;
    snprintf(who, sizeof who, "worker %d", n);
    open_both(who);
    while (fgets(line, sizeof line, in)) {
        XID x;
        int rc, rmid, end_flags;
        if (strncmp(line, "quit", 4) == 0)
            break;
        if (sscanf(line, "work %63s %ld %7s", gtrid, &amount, how) != 3)
            fail(who, "bad command", -1);
        memset(&x, 0, sizeof x);
        x.formatID = 0x4d4d5841;
        x.gtrid_length = (long)strlen(gtrid);
        x.bqual_length = 1;
        memcpy(x.data, gtrid, strlen(gtrid));
        x.data[strlen(gtrid)] = 'b';
        for (rmid = 1; rmid <= 2; rmid++)
            if ((rc = sw->xa_start_entry(&x, rmid, TMNOFLAGS)) != XA_OK)
                fail(who, "xa_start", rc);
        set_balance(1, "alice", balance(1, "alice") - amount);
        set_balance(2, "bob", balance(2, "bob") + amount);
        end_flags = strcmp(how, "FAIL") == 0 ? TMFAIL : TMSUCCESS;
        for (rmid = 1; rmid <= 2; rmid++) {
            rc = sw->xa_end_entry(&x, rmid, end_flags);
            if (rc != XA_OK && !(end_flags == TMFAIL && rc >= XA_RBBASE && rc <= XA_RBEND))
                fail(who, "xa_end", rc);
        }
        printf("  worker %d (pid %ld): %s moves %ld from %s, then xa_end(%s)\n", n,
               (long)getpid(), gtrid, amount < 0 ? -amount : amount,
               amount < 0 ? "bob@B to alice@A" : "alice@A to bob@B",
               end_flags == TMFAIL ? "TMFAIL" : "TMSUCCESS");
        fflush(stdout);
        fprintf(out, "done %s\n", gtrid);
        fflush(out);
    }
    sw->xa_close_entry(info_a, 1, TMNOFLAGS);
    sw->xa_close_entry(info_b, 2, TMNOFLAGS);
    return 0;
}

/* ---- the TM process --------------------------------------------------------------------- */

static int is_rb(int rc)
{
    return rc >= XA_RBBASE && rc <= XA_RBEND;
}

/* Prepares and commits (or rolls back) the branch a worker finished. Returns 1 if committed. */
static int tm_complete(XID *x)
{
    int rc[3] = {0, 0, 0}, rmid, all_ok = 1;
    for (rmid = 1; rmid <= 2; rmid++) {
        rc[rmid] = sw->xa_prepare_entry(x, rmid, TMNOFLAGS);
        if (rc[rmid] != XA_OK && !is_rb(rc[rmid]))
            fail("TM", "xa_prepare", rc[rmid]);
        if (rc[rmid] != XA_OK)
            all_ok = 0;
    }
    if (all_ok) {
        printf("  TM (pid %ld): both prepared %s; decision COMMIT (a TM forces this to its log)\n",
               (long)getpid(), xid_text(x));
        for (rmid = 1; rmid <= 2; rmid++)
            if ((rc[rmid] = sw->xa_commit_entry(x, rmid, TMNOFLAGS)) != XA_OK)
                fail("TM", "xa_commit", rc[rmid]);
        return 1;
    }
    printf("  TM (pid %ld): a prepare of %s answered rollback (%d, %d); decision ROLLBACK\n",
           (long)getpid(), xid_text(x), rc[1], rc[2]);
    for (rmid = 1; rmid <= 2; rmid++)
        if (rc[rmid] == XA_OK && (rc[rmid] = sw->xa_rollback_entry(x, rmid, TMNOFLAGS)) != XA_OK)
            fail("TM", "xa_rollback", rc[rmid]);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "./tuxedo-data";
    int workers = argc > 2 ? atoi(argv[2]) : 3;
    struct worker w[MAX_WORKERS];
    int i, rc, committed = 0, status, ok = 1;
    int64_t a, b, expect_a = 100, expect_b = 50;
    char line[160];
    XID scan[4];

    if (workers < 1 || workers > MAX_WORKERS) {
        fprintf(stderr, "tuxedo: WORKERS must be 1..%d\n", MAX_WORKERS);
        return 2;
    }
    mkdir(dir, 0700);
    snprintf(info_a, sizeof info_a, "dir=%s/bank-a", dir);
    snprintf(info_b, sizeof info_b, "dir=%s/bank-b", dir);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Fork the workers before this process opens anything. */
    for (i = 0; i < workers; i++) {
        int down[2], up[2];
        if (pipe(down) != 0 || pipe(up) != 0) {
            perror("pipe");
            return 1;
        }
        w[i].pid = fork();
        if (w[i].pid < 0) {
            perror("fork");
            return 1;
        }
        if (w[i].pid == 0) {
            close(down[1]);
            close(up[0]);
            exit(worker_main(i, fdopen(down[0], "r"), fdopen(up[1], "w")));
        }
        close(down[0]);
        close(up[1]);
        w[i].to = fdopen(down[1], "w");
        w[i].from = fdopen(up[0], "r");
        printf("TM (pid %ld): started worker %d, pid %ld\n", (long)getpid(), i, (long)w[i].pid);
    }
    open_both("TM");

    /* Opening balances, once: a one-phase transaction of the TM's own. */
    if (balance(1, "alice") < 0) {
        XID x = make_xid(0);
        for (i = 1; i <= 2; i++)
            if ((rc = sw->xa_start_entry(&x, i, TMNOFLAGS)) != XA_OK)
                fail("TM", "xa_start", rc);
        set_balance(1, "alice", 100);
        set_balance(2, "bob", 50);
        for (i = 1; i <= 2; i++) {
            if ((rc = sw->xa_end_entry(&x, i, TMSUCCESS)) != XA_OK)
                fail("TM", "xa_end", rc);
            if ((rc = sw->xa_commit_entry(&x, i, TMONEPHASE)) != XA_OK)
                fail("TM", "xa_commit", rc);
        }
    }
    a = balance(1, "alice");
    b = balance(2, "bob");
    expect_a = a;
    expect_b = b;
    printf("balances before: alice@A = %" PRId64 ", bob@B = %" PRId64 "\n", a, b);

    for (i = 1; i <= TRANSFERS; i++) {
        XID x = make_xid(i);
        struct worker *k = &w[i % workers];
        long amount = i % 2 ? 10 : -5;
        const char *how = i == 4 ? "FAIL" : "OK";
        fprintf(k->to, "work %s %ld %s\n", xid_text(&x), amount, how);
        fflush(k->to);
        if (!fgets(line, sizeof line, k->from)) {
            printf("FAIL worker %d did not answer\n", i % workers);
            return 1;
        }
        if (tm_complete(&x)) {
            committed++;
            expect_a -= amount;
            expect_b += amount;
        }
    }

    a = balance(1, "alice");
    b = balance(2, "bob");
    printf("balances after %d transfers (%d committed): alice@A = %" PRId64 ", bob@B = %" PRId64
           "\n", TRANSFERS, committed, a, b);
    if (a != expect_a || b != expect_b) {
        printf("FAIL expected alice@A = %" PRId64 ", bob@B = %" PRId64 "\n", expect_a, expect_b);
        ok = 0;
    }
    for (i = 1; i <= 2; i++) {
        rc = sw->xa_recover_entry(scan, 4, i, TMSTARTRSCAN | TMENDRSCAN);
        if (rc != 0) {
            printf("FAIL xa_recover(rmid %d) -> %d: something is left in doubt\n", i, rc);
            ok = 0;
        }
    }
    for (i = 0; i < workers; i++) {
        fprintf(w[i].to, "quit\n");
        fclose(w[i].to);
        if (waitpid(w[i].pid, &status, 0) != w[i].pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            printf("FAIL worker %d exited badly\n", i);
            ok = 0;
        }
    }
    sw->xa_close_entry(info_a, 1, TMNOFLAGS);
    sw->xa_close_entry(info_b, 2, TMNOFLAGS);
    printf(ok ? "tuxedo: all checks passed (total %" PRId64 " conserved)\n" : "tuxedo: FAILED\n",
           a + b);
    return ok ? 0 : 1;
}
