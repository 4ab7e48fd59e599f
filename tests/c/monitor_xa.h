/*
 * Test fixture: a transaction monitor's own xa.h, hand-written from the XA specification
 * (X/Open CAE C193, appendix A) the way monitors ship it: its own include guard, `L`-suffixed
 * flags, unparenthesised XA_RBBASE+n and the ax_reg/ax_unreg prototypes.
 *
 * The tests include it together with mmxa.h to prove mmxa.h never clashes with a monitor's
 * definitions, and compile abi_layout.c against it to prove both layouts are the same.
 * Not generated; not shipped.
 */
#ifndef MONITOR_XA_H
#define MONITOR_XA_H

/* Transaction branch identification */
#define XIDDATASIZE  128 /* bytes in data */
#define MAXGTRIDSIZE  64 /* longest gtrid */
#define MAXBQUALSIZE  64 /* longest bqual */

struct xid_t {
    long formatID;          /* -1 means the null XID */
    long gtrid_length;      /* 1 through 64 */
    long bqual_length;      /* 1 through 64 */
    char data[XIDDATASIZE];
};
typedef struct xid_t XID;

#define NULLXID -1

/* Routines by which RMs call TMs */
#ifdef __cplusplus
extern "C" {
#endif
extern int ax_reg(int, XID *, long);
extern int ax_unreg(int, long);
#ifdef __cplusplus
}
#endif

/* The switch */
#define RMNAMESZ     32 /* RM name length, NUL included */
#define MAXINFOSIZE 256 /* longest xa_info string, NUL included */

struct xa_switch_t {
    char name[RMNAMESZ];
    long flags;
    long version;
    int (*xa_open_entry)(char *, int, long);
    int (*xa_close_entry)(char *, int, long);
    int (*xa_start_entry)(XID *, int, long);
    int (*xa_end_entry)(XID *, int, long);
    int (*xa_rollback_entry)(XID *, int, long);
    int (*xa_prepare_entry)(XID *, int, long);
    int (*xa_commit_entry)(XID *, int, long);
    int (*xa_recover_entry)(XID *, long, int, long);
    int (*xa_forget_entry)(XID *, int, long);
    int (*xa_complete_entry)(int *, int *, int, long);
};

/* Switch flags */
#define TMNOFLAGS    0x00000000L
#define TMREGISTER   0x00000001L
#define TMNOMIGRATE  0x00000002L
#define TMUSEASYNC   0x00000004L

/* Flags of the xa_ and ax_ routines */
#define TMASYNC      0x80000000L
#define TMONEPHASE   0x40000000L
#define TMFAIL       0x20000000L
#define TMNOWAIT     0x10000000L
#define TMRESUME     0x08000000L
#define TMSUCCESS    0x04000000L
#define TMSUSPEND    0x02000000L
#define TMSTARTRSCAN 0x01000000L
#define TMENDRSCAN   0x00800000L
#define TMMULTIPLE   0x00400000L
#define TMJOIN       0x00200000L
#define TMMIGRATE    0x00100000L

/* ax_ return codes (TM to RM) */
#define TM_JOIN      2
#define TM_RESUME    1
#define TM_OK        0
#define TMER_TMERR  -1
#define TMER_INVAL  -2
#define TMER_PROTO  -3

/* xa_ return codes (RM to TM) */
#define XA_RBBASE      100
#define XA_RBROLLBACK  XA_RBBASE
#define XA_RBCOMMFAIL  XA_RBBASE+1
#define XA_RBDEADLOCK  XA_RBBASE+2
#define XA_RBINTEGRITY XA_RBBASE+3
#define XA_RBOTHER     XA_RBBASE+4
#define XA_RBPROTO     XA_RBBASE+5
#define XA_RBTIMEOUT   XA_RBBASE+6
#define XA_RBTRANSIENT XA_RBBASE+7
#define XA_RBEND       XA_RBTRANSIENT
#define XA_NOMIGRATE   9
#define XA_HEURHAZ     8
#define XA_HEURCOM     7
#define XA_HEURRB      6
#define XA_HEURMIX     5
#define XA_RETRY       4
#define XA_RDONLY      3
#define XA_OK          0
#define XAER_ASYNC    -2
#define XAER_RMERR    -3
#define XAER_NOTA     -4
#define XAER_INVAL    -5
#define XAER_PROTO    -6
#define XAER_RMFAIL   -7
#define XAER_DUPID    -8
#define XAER_OUTSIDE  -9

#endif /* MONITOR_XA_H */
