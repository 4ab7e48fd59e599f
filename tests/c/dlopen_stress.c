/*
 * dlopen_stress.c - load and unload libmmxa.so many times in one process, as monitors do, with
 * threads doing transactions in between, and check that nothing acknowledged is lost.
 *
 * Each of ITERATIONS rounds:
 *   1. dlopen(LIB, RTLD_NOW | RTLD_LOCAL); dlsym mmxa_switch, mmxa_put, mmxa_get, mmxa_last_error;
 *   2. the main thread opens the store (same rmid as everybody) and checks it against what was
 *      acknowledged so far: xa_recover lists exactly the prepared branches, each once; every
 *      committed key reads back its value; rolled-back, prepared and abandoned keys are absent.
 *      In round RECOVER_ROUND it also resolves part of the in-doubt set, as a recovering TM does;
 *   3. THREADS threads each xa_open the store under the same rmid and run BRANCHES branches of
 *      six kinds: two-phase commit, one-phase commit, prepare-and-leave (odd threads only; even
 *      threads commit it), TMFAIL + rollback, prepare + rollback, and an idle branch abandoned
 *      after xa_end (never prepared, so it must vanish);
 *   4. the threads call xa_close in some rounds and not in others (some rounds only half of them),
 *      and the library is dlclose'd either way, as LIXA does after failures.
 * Finally the library is loaded once more: the same checks, then every in-doubt branch is
 * committed and the whole store is checked again.
 *
 * An outcome counts as acknowledged only when the RM answered it (XA_OK from commit or prepare,
 * a rollback code or XA_OK from rollback). Any unexpected answer is printed and fails the run.
 *
 * Second mode, --two-copies: two copies of libmmxa.so (two paths, so RTLD_LOCAL loads two
 * independent instances, as when an application links one copy and a monitor dlopens another)
 * in one process. The second copy attaches to the store as a peer of the first, as a second
 * process would; either way no acknowledged write may be lost: each instance writes a key
 * outside any branch (MMXA_OK = durable), both close, a fresh open must read both keys.
 *
 * Usage: dlopen_stress /abs/path/libmmxa.so DATA_DIR
 *        dlopen_stress --two-copies /abs/path/libmmxa.so /abs/path/copy-of-libmmxa.so DATA_DIR
 * Exit status: 0 when every check passed; 1 otherwise. A 120-second alarm ends a hung run.
 * Build: cc -std=c99 ... dlopen_stress.c -pthread -ldl (not linked against libmmxa).
 */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xa.h"
#include "mmxa.h"

#define ITERATIONS 20
#define THREADS 4
#define BRANCHES 6
#define RMID 7
#define RECOVER_ROUND 10
#define FORMAT_ID 0x53545253L /* "STRS" */

typedef int (*put_fn)(int, const void *, size_t, const void *, size_t);
typedef int (*get_fn)(int, const void *, size_t, void *, size_t, size_t *);
typedef const char *(*last_error_fn)(void);

/* The library as loaded in the current round. */
static struct xa_switch_t *sw;
static put_fn put;
static get_fn get;
static last_error_fn last_error;

static char info[MAXINFOSIZE];

enum outcome { NONE, COMMITTED, PREPARED, ROLLED_BACK, ABANDONED };
static const char *const outcome_names[] = {"none", "committed", "prepared", "rolled back",
                                            "abandoned"};

/* What the RM acknowledged, per (round, thread, branch); each slot has one writer at a time. */
static enum outcome acked[ITERATIONS][THREADS][BRANCHES];

static int errors;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static void report(const char *fmt_where, int it, int t, int b, const char *call, int got,
                   const char *want)
{
    pthread_mutex_lock(&print_lock);
    errors++;
    printf("FAIL %s round %d thread %d branch %d: %s returned %d, expected %s: %s\n", fmt_where,
           it, t, b, call, got, want, last_error ? last_error() : "");
    pthread_mutex_unlock(&print_lock);
}

static void on_alarm(int sig)
{
    static const char msg[] = "dlopen_stress: timed out (SIGALRM)\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    _exit(3);
}

/* ---- names and values --------------------------------------------------------------------- */

static XID branch_xid(int it, int t, int b)
{
    XID x;
    char g[32];
    int n = snprintf(g, sizeof g, "it%02d-t%d-b%d", it, t, b);
    memset(&x, 0x5c, sizeof x); /* garbage after gtrid+bqual, as a sloppy TM leaves */
    x.formatID = FORMAT_ID;
    x.gtrid_length = n;
    x.bqual_length = 1;
    memcpy(x.data, g, (size_t)n);
    x.data[n] = 'q';
    return x;
}

/* Returns 1 and the ids if `x` is one of ours. */
static int parse_xid(const XID *x, int *it, int *t, int *b)
{
    char g[65];
    char tail;
    if (x->formatID != FORMAT_ID || x->gtrid_length < 1 || x->gtrid_length > 64 ||
        x->bqual_length != 1)
        return 0;
    memcpy(g, x->data, (size_t)x->gtrid_length);
    g[x->gtrid_length] = '\0';
    if (sscanf(g, "it%d-t%d-b%d%c", it, t, b, &tail) != 3)
        return 0;
    return *it >= 0 && *it < ITERATIONS && *t >= 0 && *t < THREADS && *b >= 0 && *b < BRANCHES;
}

static size_t key_of(int it, int t, int b, char *buf)
{
    return (size_t)sprintf(buf, "key-%02d-%d-%d", it, t, b);
}

/* A value of 1..400 bytes, different for every branch. */
static size_t value_of(int it, int t, int b, char *buf)
{
    size_t n = 1 + (size_t)((it * 131 + t * 37 + b * 11) % 400), i;
    for (i = 0; i < n; i++)
        buf[i] = (char)('A' + (it * 7 + t * 3 + b + (int)i) % 26);
    return n;
}

/* ---- the worker threads ------------------------------------------------------------------- */

struct worker {
    int it, t;
    int do_close;
};

/* Runs one branch of kind (it + t + b) % 6 and records what the RM acknowledged. */
static void run_branch(int it, int t, int b)
{
    XID x = branch_xid(it, t, b);
    char key[32], value[512];
    size_t klen = key_of(it, t, b, key), vlen = value_of(it, t, b, value);
    int kind = (it + t + b) % 6, rc;

    rc = sw->xa_start_entry(&x, RMID, TMNOFLAGS);
    if (rc != XA_OK) {
        report("worker", it, t, b, "xa_start", rc, "XA_OK");
        return;
    }
    rc = put(RMID, key, klen, value, vlen);
    if (rc != MMXA_OK) {
        report("worker", it, t, b, "mmxa_put", rc, "MMXA_OK");
        sw->xa_end_entry(&x, RMID, TMFAIL);
        sw->xa_rollback_entry(&x, RMID, TMNOFLAGS);
        return;
    }
    if (kind == 3) { /* the AP fails */
        rc = sw->xa_end_entry(&x, RMID, TMFAIL);
        if (rc < XA_RBBASE || rc > XA_RBEND)
            report("worker", it, t, b, "xa_end(TMFAIL)", rc, "XA_RB*");
        rc = sw->xa_rollback_entry(&x, RMID, TMNOFLAGS);
        if (rc == XA_OK || (rc >= XA_RBBASE && rc <= XA_RBEND))
            acked[it][t][b] = ROLLED_BACK;
        else
            report("worker", it, t, b, "xa_rollback", rc, "XA_OK or XA_RB*");
        return;
    }
    rc = sw->xa_end_entry(&x, RMID, TMSUCCESS);
    if (rc != XA_OK) {
        report("worker", it, t, b, "xa_end(TMSUCCESS)", rc, "XA_OK");
        return;
    }
    switch (kind) {
    case 1: /* one-phase */
        rc = sw->xa_commit_entry(&x, RMID, TMONEPHASE);
        if (rc == XA_OK)
            acked[it][t][b] = COMMITTED;
        else
            report("worker", it, t, b, "xa_commit(TMONEPHASE)", rc, "XA_OK");
        return;
    case 5: /* abandoned idle: never prepared, so never in doubt and never committed */
        acked[it][t][b] = ABANDONED;
        return;
    default:
        break;
    }
    rc = sw->xa_prepare_entry(&x, RMID, TMNOFLAGS);
    if (rc != XA_OK) {
        report("worker", it, t, b, "xa_prepare", rc, "XA_OK");
        return;
    }
    acked[it][t][b] = PREPARED;
    if (kind == 2 && t % 2 == 1)
        return; /* left in doubt for the recovery checks */
    if (kind == 4) {
        rc = sw->xa_rollback_entry(&x, RMID, TMNOFLAGS);
        if (rc == XA_OK)
            acked[it][t][b] = ROLLED_BACK;
        else
            report("worker", it, t, b, "xa_rollback of a prepared branch", rc, "XA_OK");
        return;
    }
    rc = sw->xa_commit_entry(&x, RMID, TMNOFLAGS);
    if (rc == XA_OK)
        acked[it][t][b] = COMMITTED;
    else
        report("worker", it, t, b, "xa_commit", rc, "XA_OK");
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int b, rc = sw->xa_open_entry(info, RMID, TMNOFLAGS);
    if (rc != XA_OK) {
        report("worker", w->it, w->t, -1, "xa_open", rc, "XA_OK");
        return NULL;
    }
    for (b = 0; b < BRANCHES; b++)
        run_branch(w->it, w->t, b);
    if (w->do_close) {
        rc = sw->xa_close_entry(info, RMID, TMNOFLAGS);
        if (rc != XA_OK)
            report("worker", w->it, w->t, -1, "xa_close", rc, "XA_OK");
    }
    return NULL; /* without xa_close in some rounds: the thread just ends */
}

/* ---- loading ------------------------------------------------------------------------------ */

static void *sym(void *h, const char *name)
{
    void *p;
    dlerror();
    p = dlsym(h, name);
    if (p == NULL) {
        const char *e = dlerror();
        fprintf(stderr, "dlopen_stress: dlsym(%s): %s\n", name, e ? e : "NULL");
        exit(1);
    }
    return p;
}

static void *load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL), *p;
    if (h == NULL) {
        fprintf(stderr, "dlopen_stress: dlopen: %s\n", dlerror());
        exit(1);
    }
    sw = (struct xa_switch_t *)sym(h, "mmxa_switch");
    /* Object pointer to function pointer: copy the bits (quiet under -pedantic). */
    p = sym(h, "mmxa_put");
    memcpy(&put, &p, sizeof put);
    p = sym(h, "mmxa_get");
    memcpy(&get, &p, sizeof get);
    p = sym(h, "mmxa_last_error");
    memcpy(&last_error, &p, sizeof last_error);
    if (strcmp(sw->name, "mmxa") != 0) {
        fprintf(stderr, "dlopen_stress: unexpected switch name\n");
        exit(1);
    }
    return h;
}

/* Returns 1 if dlclose really unloaded the library. */
static int unload(void *h, const char *path)
{
    void *again;
    if (dlclose(h) != 0) {
        fprintf(stderr, "dlopen_stress: dlclose: %s\n", dlerror());
        exit(1);
    }
    sw = NULL;
    put = NULL;
    get = NULL;
    last_error = NULL;
    again = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (again == NULL)
        return 1;
    dlclose(again);
    return 0;
}

/* Diagnostics: open descriptors, and mappings of the store's files, left in this process. */
static void print_leftovers(const char *dir)
{
    char line[1024], path[64];
    int fds = 0, maps = 0, i;
    FILE *f = fopen("/proc/self/maps", "r");
    for (i = 0; i < 4096; i++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", i);
        if (access(path, F_OK) == 0)
            fds++;
    }
    if (f != NULL) {
        while (fgets(line, sizeof line, f) != NULL)
            if (strstr(line, dir) != NULL)
                maps++;
        fclose(f);
    }
    printf("dlopen_stress: left in the process: %d open descriptors, %d mappings under %s\n", fds,
           maps, dir);
}

/* ---- checks (main thread) ----------------------------------------------------------------- */

/*
 * Lists the in-doubt set and compares it with the acknowledged PREPARED slots of rounds before
 * `upto`. With `resolve`, also completes listed branches: commit (or, with resolve == 2 and an
 * odd round, roll back).
 */
static void check_in_doubt(int upto, int resolve, const char *when)
{
    static int listed[ITERATIONS][THREADS][BRANCHES];
    XID xids[7]; /* an odd page size, so scans take several calls */
    long flags = TMSTARTRSCAN;
    int n, i, it, t, b, calls = 0;
    memset(listed, 0, sizeof listed);
    do {
        n = sw->xa_recover_entry(xids, 7, RMID, flags);
        if (n < 0 || n > 7) {
            report(when, -1, -1, -1, "xa_recover", n, "0..7");
            return;
        }
        for (i = 0; i < n; i++) {
            if (!parse_xid(&xids[i], &it, &t, &b)) {
                report(when, -1, -1, -1, "xa_recover listed a foreign XID", n, "ours only");
                continue;
            }
            listed[it][t][b]++;
        }
        flags = TMNOFLAGS;
    } while (n == 7 && ++calls < 1000);
    for (it = 0; it < ITERATIONS; it++)
        for (t = 0; t < THREADS; t++)
            for (b = 0; b < BRANCHES; b++) {
                int want = it < upto && acked[it][t][b] == PREPARED;
                if (listed[it][t][b] != want) {
                    pthread_mutex_lock(&print_lock);
                    errors++;
                    printf("FAIL %s: branch it%02d-t%d-b%d (%s) listed %d times by xa_recover, "
                           "expected %d\n",
                           when, it, t, b, outcome_names[acked[it][t][b]], listed[it][t][b],
                           want);
                    pthread_mutex_unlock(&print_lock);
                }
                if (resolve && listed[it][t][b] == 1 && want) {
                    XID x = branch_xid(it, t, b);
                    int rc;
                    if (resolve == 2 && it % 4 == 1) {
                        rc = sw->xa_rollback_entry(&x, RMID, TMNOFLAGS);
                        if (rc == XA_OK)
                            acked[it][t][b] = ROLLED_BACK;
                        else
                            report(when, it, t, b, "xa_rollback (recovery)", rc, "XA_OK");
                    } else if (resolve == 1 || it % 2 == 0) {
                        rc = sw->xa_commit_entry(&x, RMID, TMNOFLAGS);
                        if (rc == XA_OK)
                            acked[it][t][b] = COMMITTED;
                        else
                            report(when, it, t, b, "xa_commit (recovery)", rc, "XA_OK");
                    }
                }
            }
}

/* Committed data: exactly the COMMITTED slots of rounds before `upto` are visible. */
static void check_data(int upto, const char *when)
{
    int it, t, b;
    char key[32], want[512], got[512];
    for (it = 0; it < upto; it++)
        for (t = 0; t < THREADS; t++)
            for (b = 0; b < BRANCHES; b++) {
                size_t klen = key_of(it, t, b, key), wlen = value_of(it, t, b, want), glen = 0;
                int rc = get(RMID, key, klen, got, sizeof got, &glen);
                if (acked[it][t][b] == COMMITTED) {
                    if (rc != MMXA_OK)
                        report(when, it, t, b, "mmxa_get of a committed key", rc, "MMXA_OK");
                    else if (glen != wlen || memcmp(got, want, wlen) != 0)
                        report(when, it, t, b, "mmxa_get of a committed key: wrong value",
                               (int)glen, "the committed bytes");
                } else if (rc != MMXA_NOTFOUND) {
                    report(when, it, t, b, outcome_names[acked[it][t][b]], rc,
                           "MMXA_NOTFOUND for a key never committed");
                }
            }
}

/* --two-copies: see the header comment. */
static int two_copies(const char *path1, const char *path2, const char *dir)
{
    void *h1, *h2;
    struct xa_switch_t *sw1, *sw2;
    put_fn put1, put2;
    get_fn get1;
    last_error_fn err1, err2;
    char buf[8];
    size_t len = 0;
    int rc1, rc2, got_a, got_b;

    snprintf(info, sizeof info, "dir=%s/two-copies;segment_mb=4", dir);
    h1 = load(path1);
    sw1 = sw;
    put1 = put;
    get1 = get;
    err1 = last_error;
    h2 = load(path2);
    sw2 = sw;
    put2 = put;
    err2 = last_error;
    if (sw1 == sw2) {
        printf("dlopen_stress: both paths gave the same instance; nothing to check\n");
        return 1;
    }
    rc1 = sw1->xa_open_entry(info, 1, TMNOFLAGS);
    rc2 = sw2->xa_open_entry(info, 1, TMNOFLAGS);
    printf("two copies: xa_open in copy 1 -> %d, in copy 2 -> %d (%s)\n", rc1, rc2,
           rc2 == XA_OK ? "both instances have the store open" : err2());
    if (rc1 != XA_OK) {
        printf("FAIL xa_open in copy 1: %s\n", err1());
        return 1;
    }
    if (rc2 != XA_OK) {
        /* The second instance was refused: nothing written twice, nothing to check. */
        printf("dlopen_stress: all checks passed (second instance refused)\n");
        return 0;
    }
    rc1 = put1(1, "a", 1, "1", 1);
    rc2 = put2(1, "b", 1, "2", 1);
    printf("two copies: mmxa_put(a) in copy 1 -> %d, mmxa_put(b) in copy 2 -> %d\n", rc1, rc2);
    sw1->xa_close_entry(info, 1, TMNOFLAGS);
    sw2->xa_close_entry(info, 1, TMNOFLAGS);
    dlclose(h2);
    if (sw1->xa_open_entry(info, 1, TMNOFLAGS) != XA_OK) {
        printf("FAIL reopen: %s\n", err1());
        return 1;
    }
    got_a = get1(1, "a", 1, buf, sizeof buf, &len);
    got_b = get1(1, "b", 1, buf, sizeof buf, &len);
    sw1->xa_close_entry(info, 1, TMNOFLAGS);
    dlclose(h1);
    printf("two copies: after reopening, a -> %d, b -> %d (0 = present, 1 = MMXA_NOTFOUND)\n",
           got_a, got_b);
    if ((rc1 == MMXA_OK && got_a != MMXA_OK) || (rc2 == MMXA_OK && got_b != MMXA_OK)) {
        printf("FAIL an acknowledged (MMXA_OK) write was lost: two instances of libmmxa in one "
               "process both opened the store and wrote the same log\n");
        return 1;
    }
    printf("dlopen_stress: all checks passed\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *lib_path, *dir;
    int it, t, unloaded = 0, n;
    void *h;
    char when[64];

    if (argc == 5 && strcmp(argv[1], "--two-copies") == 0) {
        signal(SIGALRM, on_alarm);
        alarm(120);
        return two_copies(argv[2], argv[3], argv[4]);
    }
    if (argc != 3) {
        fprintf(stderr,
                "usage: %s /abs/path/libmmxa.so DATA_DIR\n"
                "       %s --two-copies LIBMMXA_SO COPY_OF_LIBMMXA_SO DATA_DIR\n",
                argv[0], argv[0]);
        return 2;
    }
    lib_path = argv[1];
    dir = argv[2];
    n = snprintf(info, sizeof info, "dir=%s/stress;segment_mb=4;lock_timeout_ms=5000", dir);
    if (n < 0 || (size_t)n >= sizeof info) {
        fprintf(stderr, "dlopen_stress: DATA_DIR too long\n");
        return 2;
    }
    signal(SIGALRM, on_alarm);
    alarm(120);
    setvbuf(stdout, NULL, _IOLBF, 0);

    for (it = 0; it < ITERATIONS; it++) {
        pthread_t th[THREADS];
        struct worker w[THREADS];
        /* Rounds 0, 2, 4...: everybody closes. 1, 5, 9...: nobody. 3, 7, 11...: even threads. */
        int close_mode = it % 2 == 0 ? 2 : (it % 4 == 1 ? 0 : 1);
        int rc;

        h = load(lib_path);
        snprintf(when, sizeof when, "start of round %d", it);
        rc = sw->xa_open_entry(info, RMID, TMNOFLAGS);
        if (rc != XA_OK) {
            report(when, it, -1, -1, "xa_open (main)", rc, "XA_OK");
            return 1;
        }
        check_in_doubt(it, it == RECOVER_ROUND ? 2 : 0, when);
        check_data(it, when);
        if (close_mode != 0) {
            rc = sw->xa_close_entry(info, RMID, TMNOFLAGS);
            if (rc != XA_OK)
                report(when, it, -1, -1, "xa_close (main)", rc, "XA_OK");
        }

        for (t = 0; t < THREADS; t++) {
            w[t].it = it;
            w[t].t = t;
            w[t].do_close = close_mode == 2 || (close_mode == 1 && t % 2 == 0);
            if (pthread_create(&th[t], NULL, worker_main, &w[t]) != 0) {
                fprintf(stderr, "dlopen_stress: pthread_create failed\n");
                return 1;
            }
        }
        for (t = 0; t < THREADS; t++)
            pthread_join(th[t], NULL);
        unloaded += unload(h, lib_path);
    }

    /* The last load: everything acknowledged is there; resolve the in-doubt set; check again. */
    h = load(lib_path);
    n = sw->xa_open_entry(info, RMID, TMNOFLAGS);
    if (n != XA_OK) {
        report("final", -1, -1, -1, "xa_open", n, "XA_OK");
        return 1;
    }
    check_in_doubt(ITERATIONS, 1, "final recovery");
    check_data(ITERATIONS, "final, after committing the in-doubt set");
    check_in_doubt(ITERATIONS, 0, "final, after committing the in-doubt set");
    n = sw->xa_close_entry(info, RMID, TMNOFLAGS);
    if (n != XA_OK)
        report("final", -1, -1, -1, "xa_close", n, "XA_OK");
    unloaded += unload(h, lib_path);

    {
        int counts[5] = {0, 0, 0, 0, 0}, b;
        for (it = 0; it < ITERATIONS; it++)
            for (t = 0; t < THREADS; t++)
                for (b = 0; b < BRANCHES; b++)
                    counts[acked[it][t][b]]++;
        printf("dlopen_stress: %d rounds x %d threads x %d branches; final outcomes: %d committed, "
               "%d rolled back, %d abandoned, %d prepared, %d unacknowledged\n",
               ITERATIONS, THREADS, BRANCHES, counts[COMMITTED], counts[ROLLED_BACK],
               counts[ABANDONED], counts[PREPARED], counts[NONE]);
        printf("dlopen_stress: dlclose unloaded the library %d of %d times\n", unloaded,
               ITERATIONS + 1);
        if (counts[PREPARED] != 0 || counts[NONE] != 0)
            errors++;
    }
    print_leftovers(dir);
    printf("dlopen_stress: %s (%d errors)\n", errors == 0 ? "all checks passed" : "FAILED",
           errors);
    return errors == 0 ? 0 : 1;
}
