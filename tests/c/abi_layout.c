/*
 * Checks the C view of the ABI against the numbers in shared/xa-spec.md (sections 1.1-1.3,
 * 2.1, 3.1, 8) and the two switches that libmmxa.so exports.
 *
 * Built twice by tests/headers.rs: against include/xa.h, and with -DUSE_MONITOR_XA_H against a
 * monitor's own xa.h (tests/c/monitor_xa.h). Both builds compare with the same literal numbers,
 * so passing both proves the two definitions have the same layout and values.
 * Exit status: 0 when every check passes, 1 otherwise; every failure is printed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef USE_MONITOR_XA_H
#include "monitor_xa.h"
#else
#include "xa.h"
#endif
#include "mmxa.h"

static int failures;

static void chk(const char *file, int line, const char *expr, long long got, long long want)
{
    if (got != want) {
        printf("%s:%d: CHK(%s): got %lld (%#llx), expected %lld (%#llx)\n", file, line, expr,
               got, (unsigned long long)got, want, (unsigned long long)want);
        failures++;
    }
}

/* Casts both sides to long long so negative codes, sizes and 0x80000000L compare by value. */
#define CHK(expr, want) chk(__FILE__, __LINE__, #expr, (long long)(expr), (long long)(want))
#define CHK_TRUE(expr) chk(__FILE__, __LINE__, #expr, (expr) ? 1 : 0, 1)

static void chk_str(const char *file, int line, const char *expr, const char *got, size_t max,
                    const char *want)
{
    if (strncmp(got, want, max) != 0) {
        printf("%s:%d: CHK_STR(%s): got \"%.*s\", expected \"%s\"\n", file, line, expr, (int)max,
               got, want);
        failures++;
    }
}

/* Compares at most sizeof(got) bytes: a fixed char array need not be NUL-terminated. */
#define CHK_STR(got, want) chk_str(__FILE__, __LINE__, #got, (got), sizeof(got), (want))

/* C99 has no alignof: the offset of a member after a char is its alignment. */
struct xid_align {
    char c;
    XID x;
};
struct switch_align {
    char c;
    struct xa_switch_t s;
};

static void check_layout(void)
{
    XID xid;

    CHK(sizeof(XID), 152);
    CHK(sizeof(struct xid_t), 152);
    CHK(offsetof(struct xid_align, x), 8);
    CHK(offsetof(XID, formatID), 0);
    CHK(offsetof(XID, gtrid_length), 8);
    CHK(offsetof(XID, bqual_length), 16);
    CHK(offsetof(XID, data), 24);
    CHK(sizeof(xid.formatID), 8);
    CHK(sizeof(xid.data), 128);

    CHK(sizeof(struct xa_switch_t), 128);
    CHK(offsetof(struct switch_align, s), 8);
    CHK(offsetof(struct xa_switch_t, name), 0);
    CHK(sizeof(((struct xa_switch_t *)0)->name), 32);
    CHK(offsetof(struct xa_switch_t, flags), 32);
    CHK(offsetof(struct xa_switch_t, version), 40);
    CHK(offsetof(struct xa_switch_t, xa_open_entry), 48);
    CHK(offsetof(struct xa_switch_t, xa_close_entry), 56);
    CHK(offsetof(struct xa_switch_t, xa_start_entry), 64);
    CHK(offsetof(struct xa_switch_t, xa_end_entry), 72);
    CHK(offsetof(struct xa_switch_t, xa_rollback_entry), 80);
    CHK(offsetof(struct xa_switch_t, xa_prepare_entry), 88);
    CHK(offsetof(struct xa_switch_t, xa_commit_entry), 96);
    CHK(offsetof(struct xa_switch_t, xa_recover_entry), 104);
    CHK(offsetof(struct xa_switch_t, xa_forget_entry), 112);
    CHK(offsetof(struct xa_switch_t, xa_complete_entry), 120);
}

static void check_constants(void)
{
    /* 1.1 sizes */
    CHK(XIDDATASIZE, 128);
    CHK(MAXGTRIDSIZE, 64);
    CHK(MAXBQUALSIZE, 64);
    CHK(RMNAMESZ, 32);
    CHK(MAXINFOSIZE, 256);
    CHK(NULLXID, -1);

    /* 2.1 flags */
    CHK(TMNOFLAGS, 0x00000000L);
    CHK(TMREGISTER, 0x00000001L);
    CHK(TMNOMIGRATE, 0x00000002L);
    CHK(TMUSEASYNC, 0x00000004L);
    CHK(TMMIGRATE, 0x00100000L);
    CHK(TMJOIN, 0x00200000L);
    CHK(TMMULTIPLE, 0x00400000L);
    CHK(TMENDRSCAN, 0x00800000L);
    CHK(TMSTARTRSCAN, 0x01000000L);
    CHK(TMSUSPEND, 0x02000000L);
    CHK(TMSUCCESS, 0x04000000L);
    CHK(TMRESUME, 0x08000000L);
    CHK(TMNOWAIT, 0x10000000L);
    CHK(TMFAIL, 0x20000000L);
    CHK(TMONEPHASE, 0x40000000L);
    CHK(TMASYNC, 0x80000000L);

    /* 3.1 return codes */
    CHK(XA_RBBASE, 100);
    CHK(XA_RBROLLBACK, 100);
    CHK(XA_RBCOMMFAIL, 101);
    CHK(XA_RBDEADLOCK, 102);
    CHK(XA_RBINTEGRITY, 103);
    CHK(XA_RBOTHER, 104);
    CHK(XA_RBPROTO, 105);
    CHK(XA_RBTIMEOUT, 106);
    CHK(XA_RBTRANSIENT, 107);
    CHK(XA_RBEND, 107);
    CHK(XA_NOMIGRATE, 9);
    CHK(XA_HEURHAZ, 8);
    CHK(XA_HEURCOM, 7);
    CHK(XA_HEURRB, 6);
    CHK(XA_HEURMIX, 5);
    CHK(XA_RETRY, 4);
    CHK(XA_RDONLY, 3);
    CHK(XA_OK, 0);
    CHK(XAER_ASYNC, -2);
    CHK(XAER_RMERR, -3);
    CHK(XAER_NOTA, -4);
    CHK(XAER_INVAL, -5);
    CHK(XAER_PROTO, -6);
    CHK(XAER_RMFAIL, -7);
    CHK(XAER_DUPID, -8);
    CHK(XAER_OUTSIDE, -9);

    /* 8 ax_reg / ax_unreg return codes */
    CHK(TM_JOIN, 2);
    CHK(TM_RESUME, 1);
    CHK(TM_OK, 0);
    CHK(TMER_TMERR, -1);
    CHK(TMER_INVAL, -2);
    CHK(TMER_PROTO, -3);
}

static void check_switch(void)
{
    const struct xa_switch_t *sw = &mmxa_switch;

    CHK_TRUE(memchr(sw->name, '\0', sizeof sw->name) != NULL); /* NUL within RMNAMESZ */
    CHK_STR(sw->name, "mmxa");
    CHK(sw->version, 0);
    CHK(sw->flags & TMNOMIGRATE, 0);
    CHK(sw->flags & TMUSEASYNC, 0);
    CHK(sw->flags & TMREGISTER, 0);
    CHK_TRUE(sw->xa_open_entry != NULL);
    CHK_TRUE(sw->xa_close_entry != NULL);
    CHK_TRUE(sw->xa_start_entry != NULL);
    CHK_TRUE(sw->xa_end_entry != NULL);
    CHK_TRUE(sw->xa_rollback_entry != NULL);
    CHK_TRUE(sw->xa_prepare_entry != NULL);
    CHK_TRUE(sw->xa_commit_entry != NULL);
    CHK_TRUE(sw->xa_recover_entry != NULL);
    CHK_TRUE(sw->xa_forget_entry != NULL);
    CHK_TRUE(sw->xa_complete_entry != NULL);
    CHK_TRUE(mmxa_get_xa_switch() == &mmxa_switch);

    /* The dynamic-registration switch: same name, TMREGISTER, its own xa_open. */
    sw = &mmxa_switch_dynamic;
    CHK_STR(sw->name, "mmxa");
    CHK(sw->version, 0);
    CHK(sw->flags, TMREGISTER);
    CHK_TRUE(sw->xa_open_entry != NULL && sw->xa_open_entry != mmxa_switch.xa_open_entry);
    CHK_TRUE(sw->xa_start_entry == mmxa_switch.xa_start_entry);
    CHK_TRUE(sw->xa_complete_entry == mmxa_switch.xa_complete_entry);
    CHK_TRUE(mmxa_get_xa_switch_dynamic() == &mmxa_switch_dynamic);
}

int main(void)
{
    alarm(30); /* a hang is a failure, not a stuck test run */
    check_layout();
    check_constants();
    check_switch();
    if (failures != 0) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
