/*
 * A small transaction monitor with dynamic registration, driving mmxa_switch_dynamic.
 *
 * The monitor exports ax_reg and ax_unreg from the executable (link with -rdynamic), so mmxa
 * finds them with dlsym(RTLD_DEFAULT) at xa_open. It keeps, per thread, the global transaction
 * the thread works in ("current XID") and the thread's registration state of the XA reference
 * section 5.4: D0 not registered, D1 registered with a branch, D2 registration suspended,
 * D3 registered with the null XID. As a real TM does, it never calls xa_start for this RM; it
 * calls xa_end only for a registered thread, then the completion routines.
 *
 * Checked: the switch's name, flags and entry points; a put without xa_start registers (TM_OK)
 * and works in the branch; later calls do not register again; a second thread joins (TM_JOIN)
 * and shares the branch's writes; a suspended registration is resumed (TM_RESUME); outside a
 * transaction every data call registers with the null XID and unregisters exactly once; an
 * ax_reg error or an unusable XID fails the data call cleanly (MMXA_EREGISTER), leaving nothing
 * behind; an xa_start called anyway behaves as with the static switch. Every ax_reg and ax_unreg
 * call is checked against the state table: mmxa must never register twice or unregister in the
 * wrong state.
 *
 * Usage: dynreg_tm DATA_DIR. Exit status 0 when every check passed; failures are printed.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xa.h"
#include "mmxa.h"

#define RMID 3

static int failures;
static int checks;

#define CHK(call, want)                                                                        \
    do {                                                                                       \
        long got_ = (long)(call);                                                              \
        long want_ = (long)(want);                                                             \
        checks++;                                                                              \
        if (got_ != want_) {                                                                   \
            printf("%s:%d: %s: got %ld, expected %ld (mmxa_last_error: \"%s\")\n", __FILE__, \
                   __LINE__, #call, got_, want_, mmxa_last_error());                           \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

#define CHK_TRUE(cond) CHK((cond) ? 1 : 0, 1)

/* ---- the monitor ------------------------------------------------------------------------ */

enum reg_state { D0, D1, D2, D3 };

struct toc {
    int in_tx; /* the thread works in the global transaction `xid` */
    XID xid;
    enum reg_state reg;
};

static pthread_key_t toc_key;
static pthread_mutex_t mon_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_switch_t *sw;

/* Statistics and fault injection, under mon_lock. */
static int n_reg, n_unreg, n_reg_ok, n_reg_join, n_reg_resume, n_reg_null;
static int protocol_errors; /* calls mmxa should never make */
static int fail_next_reg;   /* answer TMER_TMERR to the next ax_reg */

/* Branches some thread of this process has registered with: the next thread joins. */
#define MAX_KNOWN 32
static XID known[MAX_KNOWN];
static int n_known;

static struct toc *me(void)
{
    struct toc *t = pthread_getspecific(toc_key);
    if (t == NULL) {
        t = calloc(1, sizeof *t);
        if (t == NULL || pthread_setspecific(toc_key, t) != 0) {
            printf("out of memory\n");
            exit(2);
        }
    }
    return t;
}

static int same_xid(const XID *a, const XID *b)
{
    return a->formatID == b->formatID && a->gtrid_length == b->gtrid_length &&
           a->bqual_length == b->bqual_length &&
           memcmp(a->data, b->data, (size_t)(a->gtrid_length + a->bqual_length)) == 0;
}

static int is_known(const XID *x)
{
    int i;
    for (i = 0; i < n_known; i++)
        if (same_xid(&known[i], x))
            return 1;
    return 0;
}

static void protocol_error(const char *what)
{
    printf("protocol error: %s\n", what);
    protocol_errors++;
}

int ax_reg(int rmid, XID *xid, long flags);
int ax_unreg(int rmid, long flags);

int ax_reg(int rmid, XID *xid, long flags)
{
    struct toc *t = me();
    int rc;
    pthread_mutex_lock(&mon_lock);
    n_reg++;
    if (rmid != RMID || xid == NULL || flags != TMNOFLAGS) {
        protocol_error("ax_reg: bad arguments");
        rc = TMER_INVAL;
    } else if (fail_next_reg) {
        fail_next_reg = 0;
        rc = TMER_TMERR;
    } else if (t->reg == D1 || t->reg == D3) {
        protocol_error("ax_reg while registered");
        rc = TMER_PROTO;
    } else if (!t->in_tx) {
        memset(xid, 0, sizeof *xid);
        xid->formatID = NULLXID;
        t->reg = D3;
        n_reg_null++;
        rc = TM_OK;
    } else if (t->reg == D2) {
        *xid = t->xid;
        t->reg = D1;
        n_reg_resume++;
        rc = TM_RESUME;
    } else if (is_known(&t->xid)) {
        *xid = t->xid;
        t->reg = D1;
        n_reg_join++;
        rc = TM_JOIN;
    } else {
        *xid = t->xid;
        t->reg = D1;
        if (n_known < MAX_KNOWN)
            known[n_known++] = t->xid;
        n_reg_ok++;
        rc = TM_OK;
    }
    pthread_mutex_unlock(&mon_lock);
    return rc;
}

int ax_unreg(int rmid, long flags)
{
    struct toc *t = me();
    int rc = TM_OK;
    pthread_mutex_lock(&mon_lock);
    n_unreg++;
    if (rmid != RMID || flags != TMNOFLAGS) {
        protocol_error("ax_unreg: bad arguments");
        rc = TMER_INVAL;
    } else if (t->reg != D3) {
        protocol_error("ax_unreg while not registered with the null XID");
        rc = TMER_PROTO;
    } else {
        t->reg = D0;
    }
    pthread_mutex_unlock(&mon_lock);
    return rc;
}

static XID make_xid(const char *gtrid)
{
    XID x;
    memset(&x, 0, sizeof x);
    x.formatID = 0x4d4d5841; /* "MMXA" */
    x.gtrid_length = (long)strlen(gtrid);
    x.bqual_length = 2;
    memcpy(x.data, gtrid, strlen(gtrid));
    memcpy(x.data + strlen(gtrid), "b1", 2);
    return x;
}

/* The thread begins (or is given) work in the global transaction `xid`. */
static void tm_begin(XID xid)
{
    struct toc *t = me();
    t->in_tx = 1;
    t->xid = xid;
    t->reg = D0;
}

/* Ends the thread's association, if it registered; `flags` TMSUCCESS, TMFAIL or TMSUSPEND. */
static int tm_end(long flags)
{
    struct toc *t = me();
    int rc = XA_OK;
    if (t->reg == D1) {
        rc = sw->xa_end_entry(&t->xid, RMID, flags);
        t->reg = flags == TMSUSPEND ? D2 : D0;
    }
    if (flags != TMSUSPEND)
        t->in_tx = 0;
    return rc;
}

static int tm_prepare(XID x)
{
    return sw->xa_prepare_entry(&x, RMID, TMNOFLAGS);
}

static int tm_commit(XID x, long flags)
{
    return sw->xa_commit_entry(&x, RMID, flags);
}

static void forget_known(void)
{
    pthread_mutex_lock(&mon_lock);
    n_known = 0;
    pthread_mutex_unlock(&mon_lock);
}

static void counts(int *reg, int *unreg)
{
    pthread_mutex_lock(&mon_lock);
    *reg = n_reg;
    *unreg = n_unreg;
    pthread_mutex_unlock(&mon_lock);
}

/* ---- the application ------------------------------------------------------------------ */

static char open_info[300];

static int put(const char *k, const char *v)
{
    return mmxa_put(RMID, k, strlen(k), v, strlen(v));
}

/* MMXA_OK with the value equal to `want`, MMXA_NOTFOUND, or the error code. */
static int get_is(const char *k, const char *want)
{
    char buf[64];
    size_t len = 0;
    int rc = mmxa_get(RMID, k, strlen(k), buf, sizeof buf, &len);
    if (rc == MMXA_OK && (len != strlen(want) || memcmp(buf, want, len) != 0))
        return 99;
    return rc;
}

struct job {
    void (*body)(void);
};

static void *open_and_run(void *arg)
{
    const struct job *job = arg;
    CHK(sw->xa_open_entry(open_info, RMID, TMNOFLAGS), XA_OK);
    job->body();
    CHK(sw->xa_close_entry("", RMID, TMNOFLAGS), XA_OK);
    return NULL;
}

/* Runs `body` in a new thread that opens and closes the rmid around it. */
static void in_thread(void (*body)(void))
{
    pthread_t th;
    struct job job;
    job.body = body;
    if (pthread_create(&th, NULL, open_and_run, &job) != 0 || pthread_join(th, NULL) != 0) {
        printf("pthread failed\n");
        exit(2);
    }
}

static void check_switch(void)
{
    const struct xa_switch_t *st = mmxa_get_xa_switch();
    CHK_TRUE(sw == &mmxa_switch_dynamic);
    CHK(strcmp(sw->name, "mmxa"), 0);
    CHK(sw->flags, TMREGISTER);
    CHK(sw->version, 0);
    /* Every entry point but xa_open is the static switch's. */
    CHK_TRUE(sw->xa_open_entry != st->xa_open_entry);
    CHK_TRUE(sw->xa_close_entry == st->xa_close_entry);
    CHK_TRUE(sw->xa_start_entry == st->xa_start_entry);
    CHK_TRUE(sw->xa_end_entry == st->xa_end_entry);
    CHK_TRUE(sw->xa_rollback_entry == st->xa_rollback_entry);
    CHK_TRUE(sw->xa_prepare_entry == st->xa_prepare_entry);
    CHK_TRUE(sw->xa_commit_entry == st->xa_commit_entry);
    CHK_TRUE(sw->xa_recover_entry == st->xa_recover_entry);
    CHK_TRUE(sw->xa_forget_entry == st->xa_forget_entry);
    CHK_TRUE(sw->xa_complete_entry == st->xa_complete_entry);
}

/* A put without xa_start registers once (TM_OK) and works in the branch; two-phase commit. */
static void register_new_branch(void)
{
    XID x = make_xid("dynreg-new");
    int reg0, unreg0, reg, unreg;
    counts(&reg0, &unreg0);
    tm_begin(x);
    CHK(put("k1", "v1"), MMXA_OK);
    CHK(n_reg_ok, 1);
    CHK(put("k2", "v2"), MMXA_OK);
    CHK(get_is("k1", "v1"), MMXA_OK);
    counts(&reg, &unreg);
    CHK(reg - reg0, 1); /* registered once for the three calls */
    CHK(unreg - unreg0, 0);
    CHK(tm_end(TMSUCCESS), XA_OK);
    CHK(tm_prepare(x), XA_OK);
    CHK(tm_commit(x, TMNOFLAGS), XA_OK);
    /* Outside the transaction: committed data, read under the null XID. */
    CHK(get_is("k1", "v1"), MMXA_OK);
    CHK(get_is("k2", "v2"), MMXA_OK);
    counts(&reg, &unreg);
    CHK(reg - reg0, 3);
    CHK(unreg - unreg0, 2);
}

static XID shared;

static void joiner(void)
{
    tm_begin(shared);
    CHK(get_is("j1", "main"), MMXA_OK); /* tightly coupled: sees the branch's write */
    CHK(put("j2", "thread"), MMXA_OK);
    CHK(tm_end(TMSUCCESS), XA_OK);
}

/* A second thread registering for a branch the process knows gets TM_JOIN. */
static void join_from_second_thread(void)
{
    int join0 = n_reg_join;
    shared = make_xid("dynreg-join");
    tm_begin(shared);
    CHK(put("j1", "main"), MMXA_OK);
    in_thread(joiner);
    CHK(n_reg_join - join0, 1);
    CHK(get_is("j2", "thread"), MMXA_OK);
    CHK(tm_end(TMSUCCESS), XA_OK);
    CHK(tm_prepare(shared), XA_OK);
    CHK(tm_commit(shared, TMNOFLAGS), XA_OK);
    CHK(get_is("j1", "main"), MMXA_OK);
    CHK(get_is("j2", "thread"), MMXA_OK);
}

/* After xa_end(TMSUSPEND), the next data call re-registers and is told TM_RESUME. */
static void resume_after_suspend(void)
{
    XID x = make_xid("dynreg-resume");
    int resume0 = n_reg_resume;
    tm_begin(x);
    CHK(put("r1", "before"), MMXA_OK);
    CHK(tm_end(TMSUSPEND), XA_OK);
    CHK(me()->reg, D2);
    CHK(put("r2", "after"), MMXA_OK);
    CHK(n_reg_resume - resume0, 1);
    CHK(me()->reg, D1);
    CHK(get_is("r1", "before"), MMXA_OK);
    CHK(tm_end(TMSUCCESS), XA_OK);
    CHK(tm_commit(x, TMONEPHASE), XA_OK);
    CHK(get_is("r1", "before"), MMXA_OK);
    CHK(get_is("r2", "after"), MMXA_OK);
}

/* Outside a transaction: each data call registers with the null XID and unregisters once. */
static void null_xid(void)
{
    int reg0, unreg0, reg, unreg, null0 = n_reg_null;
    counts(&reg0, &unreg0);
    CHK(put("n1", "one"), MMXA_OK);
    CHK(put("n2", "two"), MMXA_OK);
    CHK(mmxa_delete(RMID, "n2", 2), MMXA_OK);
    CHK(get_is("n1", "one"), MMXA_OK);
    CHK(get_is("n2", ""), MMXA_NOTFOUND);
    counts(&reg, &unreg);
    CHK(reg - reg0, 5);
    CHK(unreg - unreg0, 5);
    CHK(n_reg_null - null0, 5);
    CHK(me()->reg, D0);
    /* A failed data call under the null XID still unregisters. */
    CHK(mmxa_put(RMID, "", 0, "x", 1), MMXA_EINVAL);
    counts(&reg, &unreg);
    CHK(reg - reg0, 6);
    CHK(unreg - unreg0, 6);
    CHK(me()->reg, D0);
}

/* ax_reg answering TMER_TMERR fails the data call; nothing is written or left associated. */
static void ax_reg_error(void)
{
    XID x = make_xid("dynreg-tmerr");
    pthread_mutex_lock(&mon_lock);
    fail_next_reg = 1;
    pthread_mutex_unlock(&mon_lock);
    tm_begin(x);
    CHK(put("e1", "lost"), MMXA_EREGISTER);
    CHK_TRUE(strstr(mmxa_last_error(), "TMER_TMERR") != NULL);
    CHK(me()->reg, D0);
    /* The RM knows no such branch and the thread is not associated. */
    CHK(sw->xa_end_entry(&x, RMID, TMSUCCESS), XAER_NOTA);
    CHK(tm_end(TMSUCCESS), XA_OK); /* not registered: the TM calls nothing */
    CHK(get_is("e1", ""), MMXA_NOTFOUND);
    CHK(sw->xa_close_entry("", RMID, TMNOFLAGS), XA_OK); /* not associated: may close */
    CHK(sw->xa_open_entry(open_info, RMID, TMNOFLAGS), XA_OK);
}

/* ax_reg answering TM_OK for a branch the RM already has (a TM bug): the data call fails with
 * MMXA_EREGISTER (XAER_DUPID), and the existing prepared branch is untouched. */
static void duplicate_branch(void)
{
    XID x = make_xid("dynreg-dup");
    XID found[8];
    int n;
    tm_begin(x);
    CHK(put("d1", "first"), MMXA_OK);
    CHK(tm_end(TMSUCCESS), XA_OK);
    CHK(tm_prepare(x), XA_OK);
    forget_known();
    tm_begin(x);
    CHK(put("d1", "second"), MMXA_EREGISTER);
    CHK_TRUE(strstr(mmxa_last_error(), "already exists") != NULL);
    me()->reg = D0; /* the TM learns from the failed call that the RM did not register */
    me()->in_tx = 0;
    n = sw->xa_recover_entry(found, 8, RMID, TMSTARTRSCAN | TMENDRSCAN);
    CHK(n, 1);
    CHK_TRUE(n == 1 && same_xid(&found[0], &x));
    CHK(tm_commit(x, TMNOFLAGS), XA_OK);
    CHK(get_is("d1", "first"), MMXA_OK);
}

/* A TM that calls xa_start on the dynamic switch anyway: the static switch's behaviour, and
 * no registration while the association lasts. */
static void explicit_start(void)
{
    XID x = make_xid("dynreg-start");
    int reg0, unreg0, reg, unreg;
    counts(&reg0, &unreg0);
    CHK(sw->xa_start_entry(&x, RMID, TMNOFLAGS), XA_OK);
    CHK(sw->xa_start_entry(&x, RMID, TMNOFLAGS), XAER_DUPID);
    CHK(put("s1", "started"), MMXA_OK);
    CHK(get_is("s1", "started"), MMXA_OK);
    counts(&reg, &unreg);
    CHK(reg - reg0, 0);
    CHK(sw->xa_end_entry(&x, RMID, TMSUCCESS), XA_OK);
    CHK(tm_commit(x, TMONEPHASE), XA_OK);
    CHK(get_is("s1", "started"), MMXA_OK); /* outside again: registers with the null XID */
    counts(&reg, &unreg);
    CHK(reg - reg0, 1);
    CHK(unreg - unreg0, 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    alarm(60);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (pthread_key_create(&toc_key, free) != 0)
        return 2;
    snprintf(open_info, sizeof open_info, "dir=%s;segment_mb=4", argv[1]);
    sw = mmxa_get_xa_switch_dynamic();
    check_switch();
    CHK(sw->xa_open_entry(open_info, RMID, TMNOFLAGS), XA_OK);
    /* One rmid is opened through one switch in every thread. */
    CHK(mmxa_switch.xa_open_entry(open_info, RMID, TMNOFLAGS), XAER_INVAL);

    register_new_branch();
    join_from_second_thread();
    resume_after_suspend();
    null_xid();
    ax_reg_error();
    duplicate_branch();
    explicit_start();

    CHK(sw->xa_close_entry("", RMID, TMNOFLAGS), XA_OK);
    CHK(protocol_errors, 0);
    printf("ax_reg: %d calls (TM_OK %d, TM_JOIN %d, TM_RESUME %d, null XID %d); ax_unreg: %d\n",
           n_reg, n_reg_ok, n_reg_join, n_reg_resume, n_reg_null, n_unreg);
    printf("%d checks, %d failed\n", checks, failures);
    if (failures == 0)
        printf("all checks passed\n");
    return failures == 0 ? 0 : 1;
}
