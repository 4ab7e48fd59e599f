/*
 * bench.c - mmxa's XA switch against Berkeley DB 5.3's, side by side, through one mini-TM.
 *
 * Every measured point drives both resource managers (RMs) in the same run through the SAME
 * transaction-manager code (tm_branch): per branch a distinct XID, xa_start, the data calls (at
 * the put points one put of a 16-byte key and a 100-byte value, a distinct key per branch),
 * xa_end(TMSUCCESS), then either
 *   2PC: xa_prepare, xa_commit(TMNOFLAGS)            or
 *   1PC: xa_commit(TMONEPHASE).
 * Both RMs are durable: mmxa with its default sync=msync; Berkeley DB (BDB) with a transactional,
 * synchronous environment. Points: 2PC and 1PC at 1, 8 and 32 threads; between them, the
 * multi-process point (below), next to the in-process 2PC points it is compared with. Then the
 * read-modify-write
 * (RMW) points, 2PC and 1PC at 1, 8 and 32 threads, on a store pre-loaded with 100,000 keys
 * (16-byte keys, 100-byte values, so every read finds a value): per branch, a random key out of
 * the 100,000 (uniform, per-thread xorshift), read under an exclusive lock, then written back
 * with its version advanced, in the same XA branch:
 *   mmxa: mmxa_get_for_update, then mmxa_put (default isolation=serializable, lock_timeout_ms);
 *   BDB:  DB->get(..., DB_RMW), which reads under a write lock, then DB->put.
 * Then:
 *   - a raw probe of the disk's ceiling: 128-byte records appended to a preallocated file
 *     (fallocate) and made durable with fdatasync, with leader-based group commit (a thread
 *     appends under a mutex; whoever finds no sync in progress syncs everything written so far
 *     for everyone), at 1, 8 and 32 threads. A 2PC branch needs two durable records (prepare,
 *     commit), so half the 32-thread rate is a ceiling for 2PC branches;
 *   - mmxa with sync=none, 2PC, 1 thread: CPU time per branch (CLOCK_PROCESS_CPUTIME_ID delta
 *     divided by branches), i.e. what the library costs when the disk costs nothing;
 *   - the same once more in a second process: an idle first process (this program run again
 *     with --hold) opens the store first and keeps it open, doing nothing (blocked in read on a
 *     pipe), while this process opens the same store and runs the point; the table gives both
 *     CPU figures per branch, their ratio, and the CPU the idle process used meanwhile;
 *   - the scan points (below), cursors over a pre-loaded store, in a table of their own.
 *
 * The multi-process point: P processes x T threads (BENCH_MP, default 4x8), durable 2PC, one put
 * per branch, every thread its own keys and XIDs, for each RM on one store:
 *   - the processes are this program run again (fork, then exec of /proc/self/exe with
 *     --mp-child and the point's parameters), so no RM is open in them before they start; the
 *     parent opens nothing during the point. They open the store one after another (the first
 *     creates it; then each process's T threads xa_open), report ready, and all start when the
 *     parent says go (through a memfd they map); each then runs like an in-process point for
 *     BENCH_SECONDS and writes its counts, latency histogram and CPU time to the shared page;
 *   - mmxa: every process xa_opens the same dir= (every process is a peer of the store);
 *   - BDB: every process xa_opens the same home, i.e. its own DB_ENV on the shared environment,
 *     and its own database handle (DB_XA_CREATE). xa_open always opens with DB_REGISTER |
 *     DB_RECOVER, so the first process registered in the environment runs recovery and the
 *     others join without it: all that multi-process BDB XA needs. DB_CONFIG is written for P x T
 *     threads. The global mutex of the honesty rules below is per process, as a Tuxedo
 *     deployment would have it (one server process does not see another's calls); the commit
 *     record is still flushed after each xa_commit. Log syncs per branch are the environment's,
 *     from the first process's start to the last one's end;
 *   - the rate is the sum of the processes' rates, and CPU time the sum of theirs. Afterwards
 *     the parent opens the store itself (mmxa rebuilds its shared state from the log; BDB
 *     recovers) and reads back every committed key of every process. The summary under the
 *     table compares mmxa's P x T figure with its own in-process 2PC figure at P*T threads of
 *     the same run, and with BDB's P processes.
 *
 * Berkeley DB honesty rules (the BDB XA switch was written for Tuxedo, one thread per server):
 *   - its xa_* entry points are not safe to call from several threads at once, so every BDB
 *     xa_* call is serialized by one global mutex; DB->get and DB->put run concurrently;
 *   - in 5.3.28 xa_commit does not flush the commit record to disk (DB_ENV->log_stat's
 *     st_scount does not move across an xa_commit, with or without TMONEPHASE; xa_prepare does
 *     sync), so the TM calls DB_ENV->log_flush(env, NULL) after every xa_commit, outside the
 *     mutex, which makes both RMs equally durable;
 *   - XA R state is per thread, so every worker thread xa_opens the RM it drives (and the main
 *     thread, which creates the store and verifies it, too).
 * BDB's XA setup: the xa_info string is the environment home. xa_open itself opens the
 * environment (DB_CREATE|DB_INIT_LOCK|DB_INIT_LOG|DB_INIT_MPOOL|DB_INIT_TXN|DB_THREAD|
 * DB_REGISTER|DB_RECOVER); the only way to configure it is a DB_CONFIG file in the home, which
 * bench writes first (cache, log buffer, lock/locker/object/transaction limits, thread count,
 * deadlock detection). The database handle is db_create(&dbp, NULL, DB_XA_CREATE) (it takes the
 * environment xa_open opened) and DB->open(..., DB_CREATE|DB_AUTO_COMMIT|DB_THREAD) outside any
 * branch; a DB->put with a NULL txn inside a branch then belongs to the thread's XA transaction.
 * BDB begins XA transactions with DB_TXN_NOWAIT, so a page-lock conflict (two branches writing
 * the same btree leaf, or one waiting behind another's split, locks being held to commit) fails
 * the put at once; the TM then ends the branch with TMFAIL, rolls it back, backs off (a random
 * 25..75 us, doubling per attempt, at most 7.5 ms) and retries the same key under a new XID. The
 * retries are counted and the latency of a committed branch includes its failed attempts.
 * (Retrying without a pause livelocks at 8+ threads: the retrying threads keep the BDB mutex
 * busy and the branch holding the lock cannot prepare. A DB_HASH database was also tried; it
 * conflicted more and was not faster, so the database is a btree.)
 *
 * RMW honesty rules: both RMs go through the same TM code and the same retry policy; only their
 * own locking differs, and it is measured as it is:
 *   - each RM reads under the lock its own write needs, taken at the read (no shared lock to
 *     upgrade): mmxa locks the key exclusively; BDB's DB_RMW write-locks the btree leaf page, so
 *     two branches on different keys of one page conflict in BDB and not in mmxa;
 *   - BDB's XA transactions are DB_TXN_NOWAIT, so its DB->get or DB->put fails at once on a
 *     page locked by another branch; mmxa waits for a key locked by another branch (up to
 *     lock_timeout_ms, default 10 s, with deadlock detection), and the wait is in the latency;
 *   - a failed lock (BDB: DB_LOCK_NOTGRANTED or DB_LOCK_DEADLOCK; mmxa: MMXA_EDEADLOCK or
 *     MMXA_ELOCKTIMEOUT, after which the branch is rollback-only and xa_end answers XA_RB*) is
 *     handled the same for both: xa_end(TMFAIL), xa_rollback, the back-off above, and a new XID
 *     for the same key. Retries are counted for each RM and shown in the table, and the latency
 *     of a committed branch includes its failed attempts and back-offs;
 *   - the pre-load is not timed: the main thread writes the 100,000 keys (version 0) in 1PC
 *     branches of 1,000 puts, then syncs the file system, before the workers start;
 *   - the value read is checked inside the branch (it must be a well-formed value of that key;
 *     the check costs both RMs the same), and the TM counts, per key, the branches whose
 *     xa_commit returned XA_OK. After the point every key is read back outside any branch: its
 *     value must carry exactly that many version increments (a lost update leaves it lower, a
 *     write of a rolled-back attempt higher) and BDB must hold exactly 100,000 keys.
 *
 * The scan points: for each RM one fresh store, pre-loaded with 1,000,000 keys ("s" and 15
 * decimal digits, so key order is numeric order; 100-byte values that begin with their key) put
 * in a permuted order (step i writes key i * 999983 mod 1,000,000), so neither store receives
 * its keys in key order. The load is not measured: mmxa in local transactions (mmxa_txn_begin,
 * mmxa_txn_commit) of 1,000 puts with its default sync=msync (a commit of 5,000 puts of this size
 * fails: its shared-state section exceeds the 1 MiB journal); BDB in 1PC XA branches of 1,000
 * puts, then a checkpoint (its pages written to the database file); then the file system is
 * synced. BDB's cache for this store is 512 MiB, more than its database (about 216 MiB), so
 * neither RM reads from the disk. Then, on the loaded store:
 *   - iterate: full iterations in key order, outside any transaction, each timed (keys/s and
 *     wall-clock µs per key; CPU time printed too); three in a row, the median is reported and
 *     the three rates printed (one iteration lasts well under a second, so one run of another
 *     program moves a single figure a lot). mmxa: mmxa_cursor_open with no bounds, then
 *     mmxa_cursor_next until MMXA_NOTFOUND. BDB: DB->cursor with a NULL txn outside any branch,
 *     its cheapest read (no transaction, a read lock only on the page the cursor is on;
 *     DB_READ_UNCOMMITTED still requests a lock per page and needs the database opened for it),
 *     then DBC->get(DB_NEXT) until DB_NOTFOUND. Both copy every key and value into the caller's
 *     buffers (BDB: DB_DBT_USERMEM);
 *   - range reads: 10,000 reads of 100 keys, at 1 thread, then at 8 threads (1,250 each, each
 *     thread its own xorshift for the start keys), each read in its own branch: a new XID,
 *     xa_start, a cursor from a random existing key (uniform over the keys with at least 99
 *     after them), 100 keys read, the cursor closed, xa_end(TMSUCCESS), xa_commit(TMONEPHASE).
 *     mmxa: mmxa_cursor_open(lo = the start key, inclusive; no upper bound) and 100
 *     mmxa_cursor_next, with the default isolation=serializable, so the reads lock the keys
 *     and the gaps they cover. BDB: DB->cursor with a NULL txn inside the branch, which in an
 *     XA environment belongs to the thread's XA transaction (checked at every read: the cursor
 *     has a transaction; the iteration's cursor has none), DBC->get(DB_SET_RANGE) then DB_NEXT
 *     99 times, at BDB's default isolation for transactions (degree 3: page read locks held to
 *     the commit). The BDB rules above hold (xa_* calls under the mutex); the branches write
 *     nothing, so the TM does not call log_flush (BDB's log syncs per read are printed: 0).
 *     Reads/s counts from the start of the threads to the end of the last one; µs per read are
 *     the p50 and p99 from xa_start to the return of xa_commit; the mean time in each call is
 *     printed below the point;
 *   - mmxa only, once more at 1 thread, the range read with an upper bound: hi = the key 100
 *     after the start (exclusive), the cursor read until MMXA_NOTFOUND, which must come after
 *     exactly 100 keys. Without a bound an mmxa cursor reads ahead in batches of 64 entries, so
 *     a 100-key read passes (and locks) 128; with it, 100 and the first one past the range. Its
 *     row compares it with BDB's 1-thread range read (BDB has no upper bound to give).
 * Every key and value a scan returns is checked inside the timed loop (the same work for both
 * RMs): the key must be the one expected next in key order, which makes the order and the count
 * exact (an iteration must return all 1,000,000 keys), and the value must have 100 bytes and
 * begin with the key. The scan points run a fixed amount of work, not BENCH_SECONDS.
 *
 * Measurements: a 1-second warm-up of each RM (not reported), then each point, on a fresh store,
 * runs at least BENCH_SECONDS seconds (default 5); within a point mmxa and BDB take turns going
 * first. Stores are closed and the file system synced (syncfs) after each point; the data
 * directories are removed only at the end (removing big files on a file system mounted with
 * `discard` slows the syncs that follow). Per branch latency
 * (xa_start to the return of the last call, including waits for the BDB mutex and BDB's
 * log_flush) goes into a preallocated per-thread log-linear histogram (~0.8% resolution): no
 * allocation per branch. After each point: every committed key is read back outside any branch
 * (mmxa_get / DB->get) and compared ("verified N keys"; for BDB the number of keys in the
 * database must match too; the RMW points' check is above), and peak RSS (VmHWM) is printed
 * with the resident anonymous and
 * file-backed memory at the end of the point (store open) and after the store is closed (before
 * and after malloc_trim), plus the bytes still allocated with malloc (mallinfo2, all arenas).
 * While a store is open its RSS grows with its content (mmxa's in-memory key index and mapped log
 * segments; BDB's cache and region files), so VmHWM is set by the biggest store, usually the
 * sync=none point. After close, "malloc in use" is what is really left; anonymous RSS above it is
 * free memory glibc keeps at the top of the worker threads' arenas (malloc_trim does not trim a
 * thread arena's top chunk, and the dynamic trim threshold grows): MALLOC_TRIM_THRESHOLD_=131072
 * in the environment makes it go back to the system. Where a branch's time goes: below each
 * point, the mean time per committed branch in each call (xa_start, the locking read, the put,
 * xa_end, xa_prepare, xa_commit, BDB's log_flush, failed attempts with their back-off), from
 * one CLOCK_MONOTONIC read after each call (not at the sync=none points, whose CPU figure it
 * would add to); BDB's xa_* times include the wait for its mutex. CPU time
 * per branch is printed for every point, split into user and system time (getrusage); for BDB
 * also log syncs per branch (DB_ENV->log_stat), and lock-conflict retries for BDB at every
 * point and for mmxa at the RMW points (and wherever it had any). A mismatch or any
 * unexpected XA or
 * data-call result exits non-zero with the RM's message. A watchdog ends the program (exit 3)
 * if a point does not finish in time (a hang).
 *
 * Environment: BENCH_SECONDS (default 5), BENCH_DIR (parent of the temporary data directory,
 * default /tmp), BENCH_THREADS (comma-separated thread counts, default 1,8,32; at most 64),
 * BENCH_MP (the multi-process point's PROCSxTHREADS, default 4x8), BENCH_ONLY (comma-separated
 * groups to run, default all: put, mp, rmw, probe, none, scan; for profiling one kind of point;
 * BENCH_ONLY=scan runs only the scan points). A run measures 31 points of BENCH_SECONDS each
 * (12 put, 2 multi-process, 12 RMW, 3 probe, 2 sync=none) plus about 15 s of warm-up,
 * pre-loading, verification and syncs, then the scan points (about 25 s, mostly loading).
 * Output: progress lines, then Markdown tables (as in docs/performance.md): the transaction
 * points, then the scan points. The machine's load average is printed at the start and the end:
 * other work on the machine shows up in the numbers. No timing is a pass/fail criterion; the
 * exit status only reports errors.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <db.h>

#include "xa.h"
#include "mmxa.h"

/* Berkeley DB exports its switch (src/xa/xa.c) but declares it only in an internal header. */
extern const struct xa_switch_t db_xa_switch;

#define MAX_THREADS 64
#define KEY_LEN 16
#define VALUE_LEN 100
#define PROBE_RECORD 128
#define PROBE_FILE_BYTES (512ull * 1024 * 1024) /* fallocated; wraps around if ever filled */

/* ---- small utilities ---------------------------------------------------------------------- */

static char g_root[4096];           /* the temporary directory holding every data directory */
static double g_seconds = 5.0;      /* BENCH_SECONDS */
static volatile sig_atomic_t g_watch_point = 0;
static char g_point_name[128];      /* for the watchdog's message */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (g_root[0] != '\0')
        fprintf(stderr, "bench: data left in %s for inspection\n", g_root);
    fflush(stderr);
    _exit(1); /* not exit(): other threads may be inside an RM */
}

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

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

/* Memory of this process from /proc/self/status, in KiB. */
struct mem {
    long hwm_kb;                     /* VmHWM: peak resident set size */
    long anon_kb;                    /* RssAnon: heap, stacks */
    long file_kb;                    /* RssFile: mapped files (mmxa's log, BDB's regions) */
    long shmem_kb;                   /* RssShmem */
    long heap_kb;                    /* bytes allocated with malloc and not freed (mallinfo2) */
};

static void read_mem(struct mem *m)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    struct mallinfo2 mi = mallinfo2();
    m->heap_kb = (long)((mi.uordblks + mi.hblkhd) / 1024);
    m->hwm_kb = m->anon_kb = m->file_kb = m->shmem_kb = -1;
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0)
            m->hwm_kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "RssAnon:", 8) == 0)
            m->anon_kb = strtol(line + 8, NULL, 10);
        else if (strncmp(line, "RssFile:", 8) == 0)
            m->file_kb = strtol(line + 8, NULL, 10);
        else if (strncmp(line, "RssShmem:", 9) == 0)
            m->shmem_kb = strtol(line + 9, NULL, 10);
    }
    fclose(f);
}

/*
 * "VmHWM 70.1 MiB (end of point: anon 20.0, file 50.1; after close: anon 19.9 -> 2.0 after
 * malloc_trim, file 3.9)". Anonymous memory still resident after the store is closed is either
 * kept by the allocator (it goes away with malloc_trim) or still in use (it does not).
 */
static void print_mem(const struct mem *during, const struct mem *after, const struct mem *trim)
{
    printf("VmHWM %.1f MiB (end of point: anon %.1f, file %.1f", during->hwm_kb / 1024.0,
           during->anon_kb / 1024.0, (during->file_kb + during->shmem_kb) / 1024.0);
    if (after != NULL)
        printf("; after close: anon %.1f -> %.1f after malloc_trim, file %.1f, "
               "malloc in use %.1f",
               after->anon_kb / 1024.0, trim->anon_kb / 1024.0,
               (after->file_kb + after->shmem_kb) / 1024.0, trim->heap_kb / 1024.0);
    printf(")\n");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "bench: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

static uint64_t g_du_bytes;

static int du_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F)
        g_du_bytes += (uint64_t)sb->st_blocks * 512u;
    return 0;
}

/* The disk space a directory's files use (allocated blocks). */
static uint64_t du_bytes(const char *path)
{
    g_du_bytes = 0;
    nftw(path, du_entry, 32, FTW_PHYS);
    return g_du_bytes;
}

/*
 * Between points: write back whatever the last one left dirty (BDB's database pages, ...), so
 * it is not flushed during the next one. Data directories are removed only at the end: removing
 * large files on a file system mounted with `discard` sends discards that slow later syncs.
 */
static void settle(void)
{
    int fd = open(g_root, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

static void watchdog(int sig)
{
    static const char msg1[] = "\nbench: watchdog: point \"";
    static const char msg2[] = "\" did not finish in time (hang?); exiting with status 3\n";
    ssize_t r;
    (void)sig;
    r = write(2, msg1, sizeof msg1 - 1);
    r = write(2, g_point_name, strnlen(g_point_name, sizeof g_point_name));
    r = write(2, msg2, sizeof msg2 - 1);
    (void)r;
    _exit(3);
}

static void watch_start(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void watch_start(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_point_name, sizeof g_point_name, fmt, ap);
    va_end(ap);
    alarm((unsigned)(g_seconds * 3) + 180);
}

static void watch_stop(void)
{
    alarm(0);
}

/* ---- latency histogram -------------------------------------------------------------------- */

/*
 * Log-linear: values below 128 ns have their own bucket; above, 64 buckets per power of two
 * (relative width <= 1/64, reported at the bucket's midpoint). Covers up to 2^41 ns (36 min).
 */
#define H_BUCKETS (36 * 64 + 128)

struct hist {
    uint64_t count[H_BUCKETS];
};

static inline unsigned h_index(uint64_t ns)
{
    unsigned msb, shift, idx;
    if (ns < 128)
        return (unsigned)ns;
    msb = 63u - (unsigned)__builtin_clzll(ns);
    shift = msb - 6;
    idx = shift * 64 + (unsigned)(ns >> shift);
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static double h_value(unsigned idx)
{
    unsigned shift;
    uint64_t lo;
    if (idx < 128)
        return (double)idx;
    shift = idx / 64 - 1;
    lo = (uint64_t)(64 + idx % 64) << shift;
    return (double)lo + (double)(1ull << shift) / 2.0;
}

static void h_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < H_BUCKETS; i++)
        into->count[i] += from->count[i];
}

/* The q-quantile (0 < q <= 1) in microseconds. */
static double h_quantile_us(const struct hist *h, double q)
{
    uint64_t total = 0, seen = 0, rank;
    for (unsigned i = 0; i < H_BUCKETS; i++)
        total += h->count[i];
    if (total == 0)
        return 0.0;
    rank = (uint64_t)(q * (double)total + 0.999999);
    if (rank < 1)
        rank = 1;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank)
            return h_value(i) / 1000.0;
    }
    return h_value(H_BUCKETS - 1) / 1000.0;
}

/* ---- keys and values ---------------------------------------------------------------------- */

/* Key of branch n of thread t: 16 characters, thread in hex then counter in hex. */
static void make_key(unsigned t, uint64_t n, char key[KEY_LEN + 1])
{
    snprintf(key, KEY_LEN + 1, "%04x%012" PRIx64, t & 0xffffu, (uint64_t)(n & 0xffffffffffffull));
}

/* A 100-byte value that depends on the key, so a value stored under the wrong key is noticed. */
static void make_value(unsigned t, uint64_t n, unsigned char val[VALUE_LEN])
{
    uint64_t x = (n + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)(t + 1) << 48);
    for (unsigned i = 0; i < VALUE_LEN; i++) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 32;
        val[i] = (unsigned char)('!' + x % 94);
    }
}

/*
 * The read-modify-write (RMW) point's store: RMW_KEYS keys "k" + 15 decimal digits, each value
 * 8 bytes of version (little-endian; advanced by one by every committed branch on the key),
 * 8 bytes of the key's index, then 84 bytes that depend on both. A value read or stored under
 * the wrong key, torn, or of an unknown version does not check.
 */
#define RMW_KEYS 100000u
#define RMW_PRELOAD_BATCH 1000u      /* keys per pre-loading branch */
#define RMW_MODES 2                  /* RMW points: 2PC, then 1PC */

static void make_rmw_key(uint32_t idx, char key[KEY_LEN + 1])
{
    snprintf(key, KEY_LEN + 1, "k%015" PRIu32, idx);
}

static void make_rmw_value(uint32_t idx, uint64_t version, unsigned char val[VALUE_LEN])
{
    uint64_t x = (version + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)idx + 1) * 0xD6E8FEB86659FD93ull;
    uint64_t i64 = idx;
    memcpy(val, &version, 8);
    memcpy(val + 8, &i64, 8);
    for (unsigned i = 16; i < VALUE_LEN; i++) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 32;
        val[i] = (unsigned char)('!' + x % 94);
    }
}

/* The version a value of key idx carries, or -1 if it is not a well-formed value of that key. */
static int64_t rmw_version(uint32_t idx, const unsigned char *val, size_t len)
{
    unsigned char want[VALUE_LEN];
    uint64_t version;
    if (len != VALUE_LEN)
        return -1;
    memcpy(&version, val, 8);
    if (version > (uint64_t)INT64_MAX)
        return -1;
    make_rmw_value(idx, version, want);
    return memcmp(val, want, VALUE_LEN) == 0 ? (int64_t)version : -1;
}

/* The TM's record: how many branches on each key committed (incremented after xa_commit). */
static atomic_uint g_rmw_committed[RMW_KEYS];

/* ---- the resource managers as the TM sees them -------------------------------------------- */

enum rm_kind { RM_MMXA, RM_BDB };

struct rm {
    enum rm_kind kind;
    const char *name;                /* "mmxa" or "BDB" */
    const struct xa_switch_t *sw;
    int rmid;
    char info[MAXINFOSIZE];          /* xa_open string */
    char dir[4096];                  /* data directory */
    int serialize;                   /* BDB: every xa_* call under g_bdb_mutex */
    DB *dbp;                         /* BDB database handle (DB_XA_CREATE) */
    DB_ENV *env;                     /* BDB environment opened by xa_open */
};

static pthread_mutex_t g_bdb_mutex = PTHREAD_MUTEX_INITIALIZER;

/* BDB errors go to stderr with this prefix (DB_ENV->set_errfile). */
static const char *rm_detail(const struct rm *rm)
{
    if (rm->kind == RM_MMXA) {
        const char *m = mmxa_last_error();
        return m[0] != '\0' ? m : "(no detail)";
    }
    return "(see the BDB messages above, if any)";
}

enum xa_op { OP_OPEN, OP_CLOSE, OP_START, OP_END, OP_PREPARE, OP_COMMIT, OP_ROLLBACK };
static const char *const op_name[] = {"xa_open", "xa_close", "xa_start", "xa_end", "xa_prepare",
                                      "xa_commit", "xa_rollback"};

/* One XA call, serialized when the RM requires it. */
static int xa_call(struct rm *rm, enum xa_op op, XID *xid, long flags)
{
    int rc = XAER_INVAL;
    if (rm->serialize)
        pthread_mutex_lock(&g_bdb_mutex);
    switch (op) {
    case OP_OPEN: rc = rm->sw->xa_open_entry(rm->info, rm->rmid, flags); break;
    case OP_CLOSE: rc = rm->sw->xa_close_entry((char *)"", rm->rmid, flags); break;
    case OP_START: rc = rm->sw->xa_start_entry(xid, rm->rmid, flags); break;
    case OP_END: rc = rm->sw->xa_end_entry(xid, rm->rmid, flags); break;
    case OP_PREPARE: rc = rm->sw->xa_prepare_entry(xid, rm->rmid, flags); break;
    case OP_COMMIT: rc = rm->sw->xa_commit_entry(xid, rm->rmid, flags); break;
    case OP_ROLLBACK: rc = rm->sw->xa_rollback_entry(xid, rm->rmid, flags); break;
    }
    if (rm->serialize)
        pthread_mutex_unlock(&g_bdb_mutex);
    return rc;
}

static void xa_must(struct rm *rm, enum xa_op op, XID *xid, long flags, int want)
{
    int rc = xa_call(rm, op, xid, flags);
    if (rc != want)
        die("%s: %s(flags 0x%lx) returned %s (%d), expected %s: %s", rm->name, op_name[op],
            flags, xa_name(rc), rc, xa_name(want), rm_detail(rm));
}

/*
 * The AP's write inside the branch. Returns 0, or 1 for a retryable conflict (BDB NOWAIT; mmxa
 * MMXA_EDEADLOCK / MMXA_ELOCKTIMEOUT, after which the branch is rollback-only).
 */
static int rm_put(struct rm *rm, const char *key, const unsigned char *val)
{
    if (rm->kind == RM_MMXA) {
        int rc = mmxa_put(rm->rmid, key, KEY_LEN, val, VALUE_LEN);
        if (rc == MMXA_EDEADLOCK || rc == MMXA_ELOCKTIMEOUT)
            return 1;                /* the branch is rollback-only */
        if (rc != MMXA_OK)
            die("mmxa: mmxa_put(\"%.16s\") returned %d (%s): %s", key, rc, mmxa_strerror(rc),
                rm_detail(rm));
        return 0;
    } else {
        DBT k, v;
        int rc;
        memset(&k, 0, sizeof k);
        memset(&v, 0, sizeof v);
        k.data = (void *)key;
        k.size = KEY_LEN;
        v.data = (void *)val;
        v.size = VALUE_LEN;
        rc = rm->dbp->put(rm->dbp, NULL, &k, &v, 0);
        if (rc == DB_LOCK_DEADLOCK || rc == DB_LOCK_NOTGRANTED)
            return 1;
        if (rc != 0)
            die("BDB: DB->put(\"%.16s\") returned %d (%s)", key, rc, db_strerror(rc));
        return 0;
    }
}

/*
 * Reads key into buf (VALUE_LEN + 28 bytes): inside a branch under an exclusive lock when
 * for_update (mmxa_get_for_update; DB->get with DB_RMW, which write-locks the page), outside
 * any branch a plain read of committed data. Returns 0 and sets *len, or 1 for a retryable
 * conflict (as rm_put). An absent key or any other error ends the program.
 */
static int rm_get(struct rm *rm, const char *key, unsigned char *buf, size_t cap, size_t *len,
                  int for_update)
{
    if (rm->kind == RM_MMXA) {
        int rc = for_update ? mmxa_get_for_update(rm->rmid, key, KEY_LEN, buf, cap, len)
                            : mmxa_get(rm->rmid, key, KEY_LEN, buf, cap, len);
        if (rc == MMXA_EDEADLOCK || rc == MMXA_ELOCKTIMEOUT)
            return 1;
        if (rc != MMXA_OK)
            die("mmxa: %s(\"%.16s\") returned %d (%s): %s",
                for_update ? "mmxa_get_for_update" : "mmxa_get", key, rc, mmxa_strerror(rc),
                rm_detail(rm));
        return 0;
    } else {
        DBT k, v;
        int rc;
        memset(&k, 0, sizeof k);
        memset(&v, 0, sizeof v);
        k.data = (void *)key;
        k.size = KEY_LEN;
        v.data = buf;
        v.ulen = (u_int32_t)cap;
        v.flags = DB_DBT_USERMEM;
        rc = rm->dbp->get(rm->dbp, NULL, &k, &v, for_update ? DB_RMW : 0);
        if (rc == DB_LOCK_DEADLOCK || rc == DB_LOCK_NOTGRANTED)
            return 1;
        if (rc != 0)
            die("BDB: DB->get(\"%.16s\"%s) returned %d (%s)", key, for_update ? ", DB_RMW" : "",
                rc, db_strerror(rc));
        *len = v.size;
        return 0;
    }
}

/*
 * Where a branch's time goes: the mean time per committed branch in each call the TM makes
 * (BDB's xa_* calls include the wait for the BDB mutex), measured with one clock read after
 * each call. Off at the sync=none points, whose CPU time it would add to.
 */
enum call { C_START, C_GET, C_PUT, C_END, C_PREPARE, C_COMMIT, C_FLUSH, C_RETRY, C_CALLS };
static const char *const call_name[C_CALLS] = {"xa_start", "locking read", "put", "xa_end",
                                                "xa_prepare", "xa_commit", "log_flush",
                                                "failed attempts and back-off"};
static int g_breakdown = 1;

struct lap {
    uint64_t *acc;                   /* per call, ns; NULL: not measured */
    uint64_t t;                      /* the end of the previous call */
};

static inline void lap(struct lap *l, enum call c)
{
    if (l->acc != NULL) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        l->acc[c] += now - l->t;
        l->t = now;
    }
}

/*
 * The RMW point's work inside a branch: a locking read of key idx, then a put of the same key
 * with the version advanced by one. Returns 0 with *version_out set to the version written, or 1
 * for a retryable conflict.
 */
static int rm_rmw(struct rm *rm, uint32_t idx, uint64_t *version_out, struct lap *l)
{
    char key[KEY_LEN + 1];
    unsigned char buf[VALUE_LEN + 28], val[VALUE_LEN];
    size_t len = 0;
    int64_t version;
    make_rmw_key(idx, key);
    if (rm_get(rm, key, buf, sizeof buf, &len, 1) != 0)
        return 1;
    lap(l, C_GET);
    version = rmw_version(idx, buf, len);
    if (version < 0)
        die("%s: the locking read of \"%s\" in a branch returned a value that is not one of "
            "that key's (%zu bytes)", rm->name, key, len);
    make_rmw_value(idx, (uint64_t)version + 1, val);
    if (rm_put(rm, key, val) != 0)
        return 1;
    lap(l, C_PUT);
    *version_out = (uint64_t)version + 1;
    return 0;
}

/* Makes the commit durable where xa_commit does not (BDB 5.3.28). */
static void rm_after_commit(struct rm *rm)
{
    if (rm->kind == RM_BDB) {
        int rc = rm->env->log_flush(rm->env, NULL);
        if (rc != 0)
            die("BDB: DB_ENV->log_flush returned %d (%s)", rc, db_strerror(rc));
    }
}

/* Reads a key back outside any branch: 1 if present with the expected value, 0 otherwise. */
static int rm_check(struct rm *rm, const char *key, const unsigned char *want)
{
    unsigned char buf[VALUE_LEN + 28];
    if (rm->kind == RM_MMXA) {
        size_t len = 0;
        int rc = mmxa_get(rm->rmid, key, KEY_LEN, buf, sizeof buf, &len);
        if (rc != MMXA_OK) {
            fprintf(stderr, "bench: mmxa: mmxa_get(\"%.16s\") returned %d (%s): %s\n", key, rc,
                    mmxa_strerror(rc), rm_detail(rm));
            return 0;
        }
        return len == VALUE_LEN && memcmp(buf, want, VALUE_LEN) == 0;
    } else {
        DBT k, v;
        int rc;
        memset(&k, 0, sizeof k);
        memset(&v, 0, sizeof v);
        k.data = (void *)key;
        k.size = KEY_LEN;
        v.data = buf;
        v.ulen = sizeof buf;
        v.flags = DB_DBT_USERMEM;
        rc = rm->dbp->get(rm->dbp, NULL, &k, &v, 0);
        if (rc != 0) {
            fprintf(stderr, "bench: BDB: DB->get(\"%.16s\") returned %d (%s)\n", key, rc,
                    db_strerror(rc));
            return 0;
        }
        return v.size == VALUE_LEN && memcmp(buf, want, VALUE_LEN) == 0;
    }
}

/* ---- opening and closing one RM instance for a point --------------------------------------- */

/* BDB's cache; the scan points' store gets one that holds its whole database. */
static unsigned long g_bdb_cache_bytes = 134217728ul;

static void write_db_config(const char *home, int threads)
{
    char path[4200];
    FILE *f;
    snprintf(path, sizeof path, "%s/DB_CONFIG", home);
    f = fopen(path, "w");
    if (f == NULL)
        die("cannot write %s: %s", path, strerror(errno));
    /*
     * xa_open calls DB_ENV->set_thread_count(25) and opens the environment; DB_CONFIG is read
     * during that open and its values win. Durability is BDB's default (synchronous commit, no
     * DB_TXN_NOSYNC / WRITE_NOSYNC); the log buffer only batches records between flushes.
     */
    fprintf(f,
            "set_cachesize 0 %lu 1\n"
            "set_lg_bsize 8388608\n"
            "set_lg_max 67108864\n"
            "set_tx_max %d\n"
            "set_thread_count %d\n"
            "set_lk_max_locks 200000\n"
            "set_lk_max_objects 200000\n"
            "set_lk_max_lockers 200000\n"
            "set_lk_detect DB_LOCK_DEFAULT\n",
            g_bdb_cache_bytes, 4 * threads + 100, 4 * threads + 100);
    if (fclose(f) != 0)
        die("cannot write %s: %s", path, strerror(errno));
}

/*
 * Fills in rm for the data directory g_root/dirname; when create, makes BDB's home and writes
 * its DB_CONFIG for `threads` threads in all (mmxa creates its directory at xa_open).
 */
static void rm_init(struct rm *rm, enum rm_kind kind, int rmid, const char *dirname,
                    const char *extra, int threads, int create)
{
    memset(rm, 0, sizeof *rm);
    rm->kind = kind;
    rm->rmid = rmid;
    if ((size_t)snprintf(rm->dir, sizeof rm->dir, "%.2000s/%.64s", g_root, dirname) >=
        sizeof rm->dir)
        die("path too long: %s/%s", g_root, dirname);
    if (kind == RM_MMXA) {
        rm->name = "mmxa";
        rm->sw = &mmxa_switch;
        if (snprintf(rm->info, sizeof rm->info, "dir=%s%s", rm->dir, extra) >= MAXINFOSIZE)
            die("data directory path too long for an xa_open string: %s", rm->dir);
    } else {
        rm->name = "BDB";
        rm->sw = &db_xa_switch;
        rm->serialize = 1;
        if (snprintf(rm->info, sizeof rm->info, "%s", rm->dir) >= MAXINFOSIZE)
            die("data directory path too long for an xa_open string: %s", rm->dir);
        if (create) {
            if (mkdir(rm->dir, 0700) != 0)
                die("mkdir %s: %s", rm->dir, strerror(errno));
            write_db_config(rm->dir, threads);
        }
    }
}

/* The calling thread's xa_open; for BDB also the database handle (created if absent). */
static void rm_open(struct rm *rm)
{
    xa_must(rm, OP_OPEN, NULL, TMNOFLAGS, XA_OK);
    if (rm->kind == RM_BDB) {
        int rc = db_create(&rm->dbp, NULL, DB_XA_CREATE);
        if (rc != 0)
            die("BDB: db_create(DB_XA_CREATE) returned %d (%s)", rc, db_strerror(rc));
        rm->env = rm->dbp->get_env(rm->dbp);
        rm->env->set_errfile(rm->env, stderr);
        rm->env->set_errpfx(rm->env, "bench: BDB");
        rc = rm->dbp->open(rm->dbp, NULL, "bench.db", NULL, DB_BTREE,
                           DB_CREATE | DB_AUTO_COMMIT | DB_THREAD, 0600);
        if (rc != 0)
            die("BDB: DB->open returned %d (%s)", rc, db_strerror(rc));
    }
}

static void rm_setup(struct rm *rm, enum rm_kind kind, int rmid, const char *dirname,
                     const char *extra, int threads)
{
    rm_init(rm, kind, rmid, dirname, extra, threads, 1);
    /* The main thread opens first: it creates the store and later verifies. */
    rm_open(rm);
}

static void rm_teardown(struct rm *rm)
{
    if (rm->kind == RM_BDB) {
        int rc = rm->dbp->close(rm->dbp, 0);
        if (rc != 0)
            die("BDB: DB->close returned %d (%s)", rc, db_strerror(rc));
        rm->dbp = NULL;
        rm->env = NULL;
    }
    xa_must(rm, OP_CLOSE, NULL, TMNOFLAGS, XA_OK);
    settle();
}

static uint64_t bdb_log_syncs(struct rm *rm)
{
    DB_LOG_STAT *st = NULL;
    uint64_t n;
    int rc = rm->env->log_stat(rm->env, &st, 0);
    if (rc != 0)
        die("BDB: DB_ENV->log_stat returned %d (%s)", rc, db_strerror(rc));
    n = (uint64_t)st->st_scount;
    free(st);
    return n;
}

/* ---- the mini-TM and its worker threads ----------------------------------------------------- */

struct worker {
    struct hist hist;                /* first: large and written only by its thread */
    struct rm *rm;
    unsigned id;
    int two_phase;
    int rmw;                         /* the RMW point: random keys out of RMW_KEYS */
    pthread_t thread;
    uint64_t committed;              /* put points: keys 0 .. committed-1 are committed */
    uint64_t retries;                /* attempts rolled back after a lock conflict */
    uint64_t xid_seq;
    uint64_t rng;                    /* xorshift state for the retry backoff */
    uint64_t key_rng;                /* xorshift state for the RMW point's keys */
    uint64_t call_ns[C_CALLS];       /* time in each call (g_breakdown) */
    unsigned point;
} __attribute__((aligned(64)));

static struct worker g_workers[MAX_THREADS];
static pthread_barrier_t g_barrier;
static atomic_int g_stop;
static int g_two_barriers;           /* a child of the multi-process point: opened, then go */

static void make_xid_for(XID *xid, unsigned point, unsigned id, uint64_t seq, enum rm_kind kind)
{
    memset(xid, 0, sizeof *xid);
    xid->formatID = 0x4d4d5842; /* "MMXB" */
    xid->gtrid_length = 16;
    xid->bqual_length = 4;
    memcpy(xid->data, &point, 4);
    memcpy(xid->data + 4, &id, 4);
    memcpy(xid->data + 8, &seq, 8);
    memcpy(xid->data + 16, kind == RM_MMXA ? "mmxa" : "bdb5", 4);
}

static void make_xid(XID *xid, const struct worker *w)
{
    make_xid_for(xid, w->point, w->id, w->xid_seq, w->rm->kind);
}

static uint64_t xorshift(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/*
 * After a lock conflict the TM waits before retrying, as a TM (or its client) would: a random
 * time in [0.5, 1.5) x 50 us x 2^attempt, the base capped at 5 ms. Retrying at once would spin on
 * the BDB mutex and starve the branch that holds the lock, which needs it to prepare and commit.
 */
static void backoff(struct worker *w, unsigned attempt)
{
    uint64_t base_ns = 50000ull << (attempt < 7 ? attempt : 7), ns;
    struct timespec ts;
    if (base_ns > 5000000ull)
        base_ns = 5000000ull;
    ns = base_ns / 2 + xorshift(&w->rng) % base_ns;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)ns;
    nanosleep(&ts, NULL);
}

/*
 * One committed branch, exactly as a TM drives it: for the put points the put of key/val, for
 * the RMW point (key == NULL) the read-modify-write of key rmw_idx, whose written version goes to
 * *version. Retries (BDB lock conflicts under DB_TXN_NOWAIT; a failed mmxa lock wait) roll the
 * branch back and use a new XID for the same key.
 */
static void tm_branch(struct worker *w, const char *key, const unsigned char *val,
                      uint32_t rmw_idx, uint64_t *version)
{
    struct rm *rm = w->rm;
    XID xid;
    unsigned attempt = 0;
    struct lap l = {g_breakdown ? w->call_ns : NULL, g_breakdown ? now_ns(CLOCK_MONOTONIC) : 0};
    for (;;) {
        int rc, conflict;
        make_xid(&xid, w);
        w->xid_seq++;
        xa_must(rm, OP_START, &xid, TMNOFLAGS, XA_OK);
        lap(&l, C_START);
        if (key != NULL) {
            conflict = rm_put(rm, key, val);
            if (!conflict)
                lap(&l, C_PUT);
        } else {
            conflict = rm_rmw(rm, rmw_idx, version, &l);
        }
        if (conflict) {
            rc = xa_call(rm, OP_END, &xid, TMFAIL);
            if (rc != XA_OK && !(rc >= XA_RBBASE && rc <= XA_RBEND))
                die("%s: xa_end(TMFAIL) after a lock conflict returned %s (%d): %s", rm->name,
                    xa_name(rc), rc, rm_detail(rm));
            rc = xa_call(rm, OP_ROLLBACK, &xid, TMNOFLAGS);
            if (rc != XA_OK && !(rc >= XA_RBBASE && rc <= XA_RBEND))
                die("%s: xa_rollback after a lock conflict returned %s (%d): %s", rm->name,
                    xa_name(rc), rc, rm_detail(rm));
            w->retries++;
            backoff(w, attempt++);
            lap(&l, C_RETRY);
            continue;
        }
        xa_must(rm, OP_END, &xid, TMSUCCESS, XA_OK);
        lap(&l, C_END);
        if (w->two_phase) {
            xa_must(rm, OP_PREPARE, &xid, TMNOFLAGS, XA_OK);
            lap(&l, C_PREPARE);
            xa_must(rm, OP_COMMIT, &xid, TMNOFLAGS, XA_OK);
        } else {
            xa_must(rm, OP_COMMIT, &xid, TMONEPHASE, XA_OK);
        }
        lap(&l, C_COMMIT);
        rm_after_commit(rm);
        lap(&l, C_FLUSH);
        return;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char key[KEY_LEN + 1];
    unsigned char val[VALUE_LEN];

    xa_must(w->rm, OP_OPEN, NULL, TMNOFLAGS, XA_OK); /* R state is per thread */
    pthread_barrier_wait(&g_barrier);
    if (g_two_barriers)
        pthread_barrier_wait(&g_barrier);
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        uint64_t t0, t1;
        if (w->rmw) {
            uint32_t idx = (uint32_t)(xorshift(&w->key_rng) % RMW_KEYS);
            uint64_t version = 0;
            t0 = now_ns(CLOCK_MONOTONIC);
            tm_branch(w, NULL, NULL, idx, &version);
            t1 = now_ns(CLOCK_MONOTONIC);
            atomic_fetch_add_explicit(&g_rmw_committed[idx], 1, memory_order_relaxed);
        } else {
            make_key(w->id, w->committed, key);
            make_value(w->id, w->committed, val);
            t0 = now_ns(CLOCK_MONOTONIC);
            tm_branch(w, key, val, 0, NULL);
            t1 = now_ns(CLOCK_MONOTONIC);
        }
        w->hist.count[h_index(t1 - t0)]++;
        w->committed++;
    }
    xa_must(w->rm, OP_CLOSE, NULL, TMNOFLAGS, XA_OK);
    return NULL;
}

struct result {
    int valid;
    double tps, p50_us, p99_us, cpu_us_per_branch;
    double user_us_per_branch, sys_us_per_branch; /* getrusage split of the CPU time */
    uint64_t branches, retries, verified;
    uint64_t max_version;            /* RMW point: most committed branches on one key */
    double syncs_per_branch;         /* BDB only: log syncs per committed branch */
    double call_us[C_CALLS];         /* mean time per committed branch in each call */
    int breakdown;                   /* call_us measured */
    double other_cpu_ms;             /* sync=none in a second process: the idle first one's CPU */
    struct mem mem;                  /* at the end of the point, store still open */
};

static struct hist g_merged;

static double tv_us(const struct timeval *b, const struct timeval *a)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e6 + (double)(b->tv_usec - a->tv_usec);
}

static void sleep_until(uint64_t deadline_ns)
{
    for (;;) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        struct timespec ts;
        if (now >= deadline_ns)
            return;
        ts.tv_sec = (time_t)((deadline_ns - now) / 1000000000ull);
        ts.tv_nsec = (long)((deadline_ns - now) % 1000000000ull);
        nanosleep(&ts, NULL);
    }
}

/*
 * The RMW point's store, before its clock starts: RMW_KEYS keys at version 0, written by the
 * main thread in 1PC branches of RMW_PRELOAD_BATCH puts each, then synced to disk (settle).
 */
static void rmw_preload(struct rm *rm, unsigned point)
{
    char key[KEY_LEN + 1];
    unsigned char val[VALUE_LEN];
    XID xid;
    uint64_t seq = 0;
    for (uint32_t first = 0; first < RMW_KEYS; first += RMW_PRELOAD_BATCH) {
        make_xid_for(&xid, point, 0xffffu, seq++, rm->kind);
        xa_must(rm, OP_START, &xid, TMNOFLAGS, XA_OK);
        for (uint32_t idx = first; idx < first + RMW_PRELOAD_BATCH && idx < RMW_KEYS; idx++) {
            make_rmw_key(idx, key);
            make_rmw_value(idx, 0, val);
            if (rm_put(rm, key, val) != 0)
                die("%s: lock conflict while pre-loading the RMW store alone", rm->name);
        }
        xa_must(rm, OP_END, &xid, TMSUCCESS, XA_OK);
        xa_must(rm, OP_COMMIT, &xid, TMONEPHASE, XA_OK);
        rm_after_commit(rm);
    }
    for (uint32_t idx = 0; idx < RMW_KEYS; idx++)
        atomic_store_explicit(&g_rmw_committed[idx], 0, memory_order_relaxed);
    settle();
}

/* Runs one point for one RM: threads x branches for g_seconds, then verification. */
static void run_point(struct rm *rm, unsigned point, int threads, int two_phase, int rmw,
                      struct result *res)
{
    uint64_t t_start, t_end, cpu0, cpu1, syncs0 = 0, syncs1 = 0, total = 0, retries = 0;
    uint64_t verified = 0;
    struct rusage ru0, ru1;

    memset(res, 0, sizeof *res);
    atomic_store(&g_stop, 0);
    if (pthread_barrier_init(&g_barrier, NULL, (unsigned)threads + 1) != 0)
        die("pthread_barrier_init failed");
    for (int i = 0; i < threads; i++) {
        struct worker *w = &g_workers[i];
        memset(&w->hist, 0, sizeof w->hist);
        w->rm = rm;
        w->id = (unsigned)i;
        w->two_phase = two_phase;
        w->rmw = rmw;
        w->committed = w->retries = w->xid_seq = 0;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1) + point;
        w->key_rng = 0xD6E8FEB86659FD93ull * (uint64_t)(i + 1) + point;
        w->point = point;
        memset(w->call_ns, 0, sizeof w->call_ns);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            die("pthread_create failed");
    }
    if (rm->kind == RM_BDB)
        syncs0 = bdb_log_syncs(rm);
    pthread_barrier_wait(&g_barrier);
    t_start = now_ns(CLOCK_MONOTONIC);
    cpu0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    getrusage(RUSAGE_SELF, &ru0);
    sleep_until(t_start + (uint64_t)(g_seconds * 1e9));
    atomic_store(&g_stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(g_workers[i].thread, NULL);
    t_end = now_ns(CLOCK_MONOTONIC);
    cpu1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    getrusage(RUSAGE_SELF, &ru1);
    pthread_barrier_destroy(&g_barrier);
    if (rm->kind == RM_BDB)
        syncs1 = bdb_log_syncs(rm);

    memset(&g_merged, 0, sizeof g_merged);
    for (int i = 0; i < threads; i++) {
        h_merge(&g_merged, &g_workers[i].hist);
        total += g_workers[i].committed;
        retries += g_workers[i].retries;
        for (int c = 0; c < C_CALLS; c++)
            res->call_us[c] += (double)g_workers[i].call_ns[c] / 1000.0;
    }
    for (int c = 0; total && c < C_CALLS; c++)
        res->call_us[c] /= (double)total;
    res->breakdown = g_breakdown;

    /*
     * Verification, outside any branch, by the main thread (which has the RM open). The RMW
     * point: every key holds a well-formed value whose version is the number of committed
     * branches on it (a lost update leaves it lower, a write of a rolled-back attempt higher).
     */
    for (uint32_t idx = 0; rmw && idx < RMW_KEYS; idx++) {
        char key[KEY_LEN + 1];
        unsigned char buf[VALUE_LEN + 28];
        size_t len = 0;
        unsigned want = atomic_load_explicit(&g_rmw_committed[idx], memory_order_relaxed);
        int64_t got;
        make_rmw_key(idx, key);
        rm_get(rm, key, buf, sizeof buf, &len, 0);
        got = rmw_version(idx, buf, len);
        if (got < 0)
            die("%s: key \"%s\" holds a value that is not one of that key's after the point",
                rm->name, key);
        if ((uint64_t)got != want)
            die("%s: key \"%s\" is at version %" PRId64 " after the point, but %u branches on it "
                "committed (%s)", rm->name, key, got, want,
                (uint64_t)got < want ? "lost update" : "uncommitted write");
        if (want > res->max_version)
            res->max_version = want;
        verified++;
    }
    for (int i = 0; !rmw && i < threads; i++) {
        char key[KEY_LEN + 1];
        unsigned char val[VALUE_LEN];
        for (uint64_t n = 0; n < g_workers[i].committed; n++) {
            make_key((unsigned)i, n, key);
            make_value((unsigned)i, n, val);
            if (!rm_check(rm, key, val))
                die("%s: committed key \"%s\" (thread %d, branch %" PRIu64
                    ") is missing or has the wrong value after the point",
                    rm->name, key, i, n);
            verified++;
        }
    }
    if (rm->kind == RM_BDB) {
        DB_BTREE_STAT *st = NULL;
        uint64_t nkeys;
        int rc = rm->dbp->stat(rm->dbp, NULL, &st, 0);
        if (rc != 0)
            die("BDB: DB->stat returned %d (%s)", rc, db_strerror(rc));
        nkeys = (uint64_t)st->bt_nkeys;
        free(st);
        if (nkeys != (rmw ? RMW_KEYS : total))
            die("BDB: the database holds %" PRIu64 " keys, %" PRIu64 " were committed", nkeys,
                rmw ? (uint64_t)RMW_KEYS : total);
    }

    res->valid = 1;
    res->branches = total;
    res->retries = retries;
    res->verified = verified;
    res->tps = (double)total / ((double)(t_end - t_start) / 1e9);
    res->p50_us = h_quantile_us(&g_merged, 0.50);
    res->p99_us = h_quantile_us(&g_merged, 0.99);
    res->cpu_us_per_branch = total ? (double)(cpu1 - cpu0) / 1000.0 / (double)total : 0.0;
    res->syncs_per_branch = total ? (double)(syncs1 - syncs0) / (double)total : 0.0;
    if (total) {
        res->user_us_per_branch = tv_us(&ru1.ru_utime, &ru0.ru_utime) / (double)total;
        res->sys_us_per_branch = tv_us(&ru1.ru_stime, &ru0.ru_stime) / (double)total;
    }
    read_mem(&res->mem);
}

static void print_breakdown(const struct result *res, enum rm_kind kind, int two_phase, int rmw)
{
    const char *sep = "";
    if (!res->breakdown)
        return;
    printf("       mean time per branch (us):");
    for (int c = 0; c < C_CALLS; c++) {
        if ((c == C_GET && !rmw) || (c == C_PREPARE && !two_phase) ||
            (c == C_FLUSH && kind != RM_BDB) || (c == C_RETRY && res->retries == 0))
            continue;
        printf("%s %s %.1f", sep, call_name[c], res->call_us[c]);
        sep = ",";
    }
    printf("\n");
}

/* ---- other processes: the multi-process point's children, the idle first opener ------------ */

#define MP_MAX_PROCS 16

/* What a child of the multi-process point reports, in the page it shares with the parent. */
struct mp_child {
    uint64_t committed[MAX_THREADS]; /* per thread: keys 0 .. committed-1 are committed */
    uint64_t branches, retries;
    uint64_t syncs0, syncs1;         /* BDB: the environment's log syncs at its start and end */
    uint64_t call_ns[C_CALLS];       /* time in each call, all its threads */
    double seconds;                  /* its measured window */
    double cpu_us, user_us, sys_us;  /* its CPU time over the window */
    long hwm_kb;                     /* its peak RSS */
};

/* A memfd the parent creates and every child maps after exec. */
struct mp_shared {
    atomic_int opened;               /* children that have opened the store (they open in turn) */
    atomic_int ready;                /* children whose threads have all opened and wait */
    atomic_int go;                   /* set by the parent: start */
    atomic_int abort;                /* set by the parent: a child failed, give up */
    struct mp_child child[MP_MAX_PROCS];
    struct hist hist[MP_MAX_PROCS];
};

static struct mp_shared *mp_map(int fd)
{
    void *p = mmap(NULL, sizeof(struct mp_shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die("mmap of the shared page: %s", strerror(errno));
    return p;
}

static struct mp_shared *mp_create(int *fd_out)
{
    int fd = memfd_create("bench-mp", 0); /* no MFD_CLOEXEC: the children map it after exec */
    if (fd < 0)
        die("memfd_create: %s", strerror(errno));
    if (ftruncate(fd, (off_t)sizeof(struct mp_shared)) != 0)
        die("ftruncate of the shared page: %s", strerror(errno));
    *fd_out = fd;
    return mp_map(fd);
}

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* In a child: waits until *word reaches want; leaves if the parent gave up or died. */
static void mp_wait(struct mp_shared *sh, atomic_int *word, int want, pid_t parent)
{
    while (atomic_load(word) < want) {
        if (atomic_load(&sh->abort) || getppid() != parent)
            _exit(4);
        pause_us(50);
    }
}

/* fork, then exec this program with args (args[0] is argv[0]): a fresh process, no RM open. */
static pid_t spawn(char *const args[])
{
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        execv("/proc/self/exe", args);
        fprintf(stderr, "bench: exec /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    return pid;
}

static void check_exit(pid_t pid, int status, const char *what)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    if (WIFEXITED(status))
        die("%s (pid %d) exited with status %d", what, (int)pid, WEXITSTATUS(status));
    die("%s (pid %d) was killed by signal %d", what, (int)pid,
        WIFSIGNALED(status) ? WTERMSIG(status) : -1);
}

/*
 * A child of the multi-process point:
 *   bench --mp-child KIND ROOT DIRNAME RMID PROCS THREADS INDEX SECONDS FD POINT PARENT
 * Opens the store after children 0 .. INDEX-1 have (child 0 creates it), starts THREADS threads
 * that each xa_open, says it is ready, waits for the parent's go, runs put-only 2PC branches for
 * SECONDS like run_point (thread i is TM thread INDEX*THREADS+i: its own keys and XIDs), writes
 * its counts, histogram and CPU time to the shared page, closes the store and exits 0.
 */
static int mp_child_main(int argc, char **argv)
{
    enum rm_kind kind;
    struct mp_shared *sh;
    struct mp_child *me;
    struct rm rm;
    struct mem m;
    struct rusage ru0, ru1;
    uint64_t t_start, t_end, cpu0, cpu1;
    int rmid, procs, threads, index, fd;
    unsigned point;
    pid_t parent;

    if (argc != 13)
        die("--mp-child: 11 arguments expected");
    kind = strcmp(argv[2], "mmxa") == 0 ? RM_MMXA : RM_BDB;
    snprintf(g_root, sizeof g_root, "%s", argv[3]);
    rmid = atoi(argv[5]);
    procs = atoi(argv[6]);
    threads = atoi(argv[7]);
    index = atoi(argv[8]);
    g_seconds = strtod(argv[9], NULL);
    fd = atoi(argv[10]);
    point = (unsigned)atoi(argv[11]);
    parent = (pid_t)atoi(argv[12]);
    if (procs < 1 || procs > MP_MAX_PROCS || threads < 1 || threads > MAX_THREADS ||
        index < 0 || index >= procs)
        die("--mp-child: bad arguments");
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, watchdog);
    watch_start("multi-process 2PC %s, child %d", argv[2], index);
    sh = mp_map(fd);
    close(fd);
    me = &sh->child[index];

    rm_init(&rm, kind, rmid, argv[4], "", procs * threads, 0);
    mp_wait(sh, &sh->opened, index, parent);
    rm_open(&rm);
    atomic_fetch_add(&sh->opened, 1);

    g_two_barriers = 1;
    atomic_store(&g_stop, 0);
    if (pthread_barrier_init(&g_barrier, NULL, (unsigned)threads + 1) != 0)
        die("pthread_barrier_init failed");
    for (int i = 0; i < threads; i++) {
        struct worker *w = &g_workers[i];
        unsigned id = (unsigned)(index * threads + i);
        memset(&w->hist, 0, sizeof w->hist);
        w->rm = &rm;
        w->id = id;
        w->two_phase = 1;
        w->rmw = 0;
        w->committed = w->retries = w->xid_seq = 0;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1) + point;
        w->key_rng = 0xD6E8FEB86659FD93ull * (uint64_t)(id + 1) + point;
        w->point = point;
        memset(w->call_ns, 0, sizeof w->call_ns);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            die("pthread_create failed");
    }
    pthread_barrier_wait(&g_barrier); /* every thread has its xa_open done */
    atomic_fetch_add(&sh->ready, 1);
    mp_wait(sh, &sh->go, 1, parent);
    if (kind == RM_BDB)
        me->syncs0 = bdb_log_syncs(&rm);
    pthread_barrier_wait(&g_barrier);
    t_start = now_ns(CLOCK_MONOTONIC);
    cpu0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    getrusage(RUSAGE_SELF, &ru0);
    sleep_until(t_start + (uint64_t)(g_seconds * 1e9));
    atomic_store(&g_stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(g_workers[i].thread, NULL);
    t_end = now_ns(CLOCK_MONOTONIC);
    cpu1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    getrusage(RUSAGE_SELF, &ru1);
    pthread_barrier_destroy(&g_barrier);
    if (kind == RM_BDB)
        me->syncs1 = bdb_log_syncs(&rm);

    memset(&sh->hist[index], 0, sizeof sh->hist[index]);
    for (int i = 0; i < threads; i++) {
        h_merge(&sh->hist[index], &g_workers[i].hist);
        me->committed[i] = g_workers[i].committed;
        me->branches += g_workers[i].committed;
        me->retries += g_workers[i].retries;
        for (int c = 0; c < C_CALLS; c++)
            me->call_ns[c] += g_workers[i].call_ns[c];
    }
    me->seconds = (double)(t_end - t_start) / 1e9;
    me->cpu_us = (double)(cpu1 - cpu0) / 1000.0;
    me->user_us = tv_us(&ru1.ru_utime, &ru0.ru_utime);
    me->sys_us = tv_us(&ru1.ru_stime, &ru0.ru_stime);
    read_mem(&m);
    me->hwm_kb = m.hwm_kb;

    if (kind == RM_BDB) {
        int rc = rm.dbp->close(rm.dbp, 0);
        if (rc != 0)
            die("BDB: DB->close returned %d (%s)", rc, db_strerror(rc));
    }
    xa_must(&rm, OP_CLOSE, NULL, TMNOFLAGS, XA_OK);
    watch_stop();
    return 0;
}

/*
 * The multi-process point for one RM: procs child processes (spawn: fork, then exec of this
 * program, before any RM is open in them) of threads threads each, put-only durable 2PC on one
 * store, for g_seconds. The rate is the sum of the children's rates (each over its own window;
 * they start together). Then the parent opens the store itself and reads every committed key
 * back.
 */
static void measure_mp(enum rm_kind kind, unsigned point, int procs, int threads,
                       struct result *res)
{
    struct rm rm;
    struct mp_shared *sh;
    pid_t pids[MP_MAX_PROCS];
    char name[64], s_rmid[16], s_procs[16], s_threads[16], s_index[16], s_seconds[32], s_fd[16],
        s_point[16], s_parent[16];
    char *args[14];
    int fd, rmid = (kind == RM_MMXA ? 100 : 200) + (int)point;
    uint64_t total = 0, retries = 0, verified = 0, syncs0 = UINT64_MAX, syncs1 = 0;
    double cpu = 0, user = 0, sys = 0;
    long hwm = 0;

    memset(res, 0, sizeof *res);
    snprintf(name, sizeof name, "p%02u-%s-mp", point, kind == RM_MMXA ? "mmxa" : "bdb");
    watch_start("2PC %s, %d processes x %d threads", kind == RM_MMXA ? "mmxa" : "BDB", procs,
                threads);
    rm_init(&rm, kind, rmid, name, "", procs * threads, 1);
    sh = mp_create(&fd);
    snprintf(s_rmid, sizeof s_rmid, "%d", rmid);
    snprintf(s_procs, sizeof s_procs, "%d", procs);
    snprintf(s_threads, sizeof s_threads, "%d", threads);
    snprintf(s_seconds, sizeof s_seconds, "%.17g", g_seconds);
    snprintf(s_fd, sizeof s_fd, "%d", fd);
    snprintf(s_point, sizeof s_point, "%u", point);
    snprintf(s_parent, sizeof s_parent, "%d", (int)getpid());
    args[0] = (char *)"bench";
    args[1] = (char *)"--mp-child";
    args[2] = (char *)(kind == RM_MMXA ? "mmxa" : "bdb");
    args[3] = g_root;
    args[4] = name;
    args[5] = s_rmid;
    args[6] = s_procs;
    args[7] = s_threads;
    args[8] = s_index;
    args[9] = s_seconds;
    args[10] = s_fd;
    args[11] = s_point;
    args[12] = s_parent;
    args[13] = NULL;
    for (int p = 0; p < procs; p++) {
        snprintf(s_index, sizeof s_index, "%d", p);
        pids[p] = spawn(args);
    }
    close(fd);
    while (atomic_load(&sh->ready) < procs) {
        for (int p = 0; p < procs; p++) {
            int status;
            if (waitpid(pids[p], &status, WNOHANG) == pids[p]) {
                atomic_store(&sh->abort, 1);
                check_exit(pids[p], status, "a child of the multi-process point");
                die("a child of the multi-process point (pid %d) exited before its start",
                    (int)pids[p]);
            }
        }
        pause_us(1000);
    }
    atomic_store(&sh->go, 1);
    for (int p = 0; p < procs; p++) {
        int status;
        if (waitpid(pids[p], &status, 0) != pids[p])
            die("waitpid: %s", strerror(errno));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            atomic_store(&sh->abort, 1);
        check_exit(pids[p], status, "a child of the multi-process point");
    }

    memset(&g_merged, 0, sizeof g_merged);
    for (int p = 0; p < procs; p++) {
        const struct mp_child *c = &sh->child[p];
        h_merge(&g_merged, &sh->hist[p]);
        total += c->branches;
        retries += c->retries;
        res->tps += c->seconds > 0 ? (double)c->branches / c->seconds : 0.0;
        cpu += c->cpu_us;
        user += c->user_us;
        sys += c->sys_us;
        for (int k = 0; k < C_CALLS; k++)
            res->call_us[k] += (double)c->call_ns[k] / 1000.0;
        if (c->syncs0 < syncs0)
            syncs0 = c->syncs0;
        if (c->syncs1 > syncs1)
            syncs1 = c->syncs1;
        if (c->hwm_kb > hwm)
            hwm = c->hwm_kb;
    }
    res->valid = 1;
    res->branches = total;
    res->retries = retries;
    res->p50_us = h_quantile_us(&g_merged, 0.50);
    res->p99_us = h_quantile_us(&g_merged, 0.99);
    res->breakdown = 1;
    if (total) {
        res->cpu_us_per_branch = cpu / (double)total;
        res->user_us_per_branch = user / (double)total;
        res->sys_us_per_branch = sys / (double)total;
        res->syncs_per_branch = kind == RM_BDB ? (double)(syncs1 - syncs0) / (double)total : 0;
        for (int k = 0; k < C_CALLS; k++)
            res->call_us[k] /= (double)total;
    }

    /* Verification: the parent opens the store, now closed by every child, and reads back. */
    rm_open(&rm);
    for (int p = 0; p < procs; p++) {
        for (int i = 0; i < threads; i++) {
            unsigned id = (unsigned)(p * threads + i);
            char key[KEY_LEN + 1];
            unsigned char val[VALUE_LEN];
            for (uint64_t n = 0; n < sh->child[p].committed[i]; n++) {
                make_key(id, n, key);
                make_value(id, n, val);
                if (!rm_check(&rm, key, val))
                    die("%s: committed key \"%s\" (process %d, thread %d, branch %" PRIu64
                        ") is missing or has the wrong value after the point",
                        rm.name, key, p, i, n);
                verified++;
            }
        }
    }
    if (kind == RM_BDB) {
        DB_BTREE_STAT *st = NULL;
        uint64_t nkeys;
        int rc = rm.dbp->stat(rm.dbp, NULL, &st, 0);
        if (rc != 0)
            die("BDB: DB->stat returned %d (%s)", rc, db_strerror(rc));
        nkeys = (uint64_t)st->bt_nkeys;
        free(st);
        if (nkeys != total)
            die("BDB: the database holds %" PRIu64 " keys, %" PRIu64 " were committed", nkeys,
                total);
    }
    res->verified = verified;
    rm_teardown(&rm);
    munmap(sh, sizeof *sh);
    watch_stop();
    printf("  %-4s 2PC %d processes x %d threads %7.0f tps  p50 %7.1f us  p99 %8.1f us  "
           "cpu %5.1f us/branch (user %.1f, sys %.1f)",
           rm.name, procs, threads, res->tps, res->p50_us, res->p99_us,
           res->cpu_us_per_branch, res->user_us_per_branch, res->sys_us_per_branch);
    if (kind == RM_BDB)
        printf("  log syncs %.2f/branch", res->syncs_per_branch);
    if (kind == RM_BDB || res->retries != 0)
        printf("  lock-conflict retries %" PRIu64, res->retries);
    printf("\n       verified %" PRIu64 " keys (read back by the parent after the children "
           "closed the store); the children's peak RSS (VmHWM) at most %.1f MiB\n",
           res->verified, hwm / 1024.0);
    print_breakdown(res, kind, 1, 0);
}

/*
 * The idle first process of the second sync=none point:
 *   bench --hold ROOT DIRNAME RMID EXTRA FD PIPE PARENT
 * Opens the mmxa store (it is the first: it creates it), sets `opened` in the shared page, then
 * does nothing (blocked in read on PIPE) until the parent closes the pipe's other end; reports
 * the CPU time it used meanwhile, closes the store and exits 0.
 */
static int holder_main(int argc, char **argv)
{
    struct mp_shared *sh;
    struct rm rm;
    uint64_t cpu0;
    int fd, rd;
    pid_t parent;
    char c;

    if (argc != 9)
        die("--hold: 7 arguments expected");
    snprintf(g_root, sizeof g_root, "%s", argv[2]);
    fd = atoi(argv[6]);
    rd = atoi(argv[7]);
    parent = (pid_t)atoi(argv[8]);
    sh = mp_map(fd);
    close(fd);
    rm_init(&rm, RM_MMXA, atoi(argv[4]), argv[3], argv[5], 1, 0);
    rm_open(&rm);
    cpu0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    atomic_store(&sh->opened, 1);
    for (;;) {
        ssize_t r = read(rd, &c, 1);
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    sh->child[0].cpu_us = (double)(now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / 1000.0;
    (void)parent;
    xa_must(&rm, OP_CLOSE, NULL, TMNOFLAGS, XA_OK);
    return 0;
}

struct holder {
    pid_t pid;
    int wr;                          /* closing it tells the holder to close and exit */
    struct mp_shared *sh;
};

/* Starts the idle first process on rm's store and waits until it has the store open. */
static void holder_start(struct holder *h, const struct rm *rm, const char *dirname,
                         const char *extra)
{
    char s_rmid[16], s_fd[16], s_rd[16], s_parent[16];
    char *args[10];
    int fd, fds[2];
    h->sh = mp_create(&fd);
    if (pipe2(fds, O_CLOEXEC) != 0)
        die("pipe2: %s", strerror(errno));
    if (fcntl(fds[0], F_SETFD, 0) != 0) /* the read end survives exec */
        die("fcntl: %s", strerror(errno));
    snprintf(s_rmid, sizeof s_rmid, "%d", rm->rmid);
    snprintf(s_fd, sizeof s_fd, "%d", fd);
    snprintf(s_rd, sizeof s_rd, "%d", fds[0]);
    snprintf(s_parent, sizeof s_parent, "%d", (int)getpid());
    args[0] = (char *)"bench";
    args[1] = (char *)"--hold";
    args[2] = g_root;
    args[3] = (char *)dirname;
    args[4] = s_rmid;
    args[5] = (char *)extra;
    args[6] = s_fd;
    args[7] = s_rd;
    args[8] = s_parent;
    args[9] = NULL;
    h->pid = spawn(args);
    h->wr = fds[1];
    close(fds[0]);
    close(fd);
    while (!atomic_load(&h->sh->opened)) {
        int status;
        if (waitpid(h->pid, &status, WNOHANG) == h->pid) {
            check_exit(h->pid, status, "the process holding the store open");
            die("the process holding the store open exited before opening it");
        }
        pause_us(1000);
    }
}

/* Tells the idle first process to close the store; returns the CPU time it used idle, in ms. */
static double holder_stop(struct holder *h)
{
    int status;
    double ms;
    close(h->wr);
    if (waitpid(h->pid, &status, 0) != h->pid)
        die("waitpid: %s", strerror(errno));
    check_exit(h->pid, status, "the process holding the store open");
    ms = h->sh->child[0].cpu_us / 1000.0;
    munmap(h->sh, sizeof *h->sh);
    return ms;
}


/* Runs a point for one RM on a fresh store, closes the store, prints one line. */
static void measure_with(enum rm_kind kind, unsigned point, int threads, int two_phase, int rmw,
                         const char *extra, int second_process, struct result *res);

static void measure(enum rm_kind kind, unsigned point, int threads, int two_phase, int rmw,
                    const char *extra, struct result *res)
{
    measure_with(kind, point, threads, two_phase, rmw, extra, 0, res);
}

/*
 * measure, and when second_process, an idle first process (holder_main) opens the store before
 * this one does and keeps it open until this one has closed it.
 */
static void measure_with(enum rm_kind kind, unsigned point, int threads, int two_phase, int rmw,
                         const char *extra, int second_process, struct result *res)
{
    struct rm rm;
    struct mem after, trimmed;
    struct holder h;
    double idle_ms = 0;
    char name[64];
    snprintf(name, sizeof name, "p%02u-%s", point, kind == RM_MMXA ? "mmxa" : "bdb");
    watch_start("%s%s %s T=%d%s", rmw ? "RMW " : "", two_phase ? "2PC" : "1PC",
                kind == RM_MMXA ? "mmxa" : "BDB", threads,
                second_process ? " (second process)" : "");
    g_breakdown = strstr(extra, "sync=none") == NULL;
    if (second_process) {
        rm_init(&rm, kind, (kind == RM_MMXA ? 100 : 200) + (int)point, name, extra, threads, 1);
        holder_start(&h, &rm, name, extra);
        rm_open(&rm);
    } else {
        rm_setup(&rm, kind, (kind == RM_MMXA ? 100 : 200) + (int)point, name, extra, threads);
    }
    if (rmw)
        rmw_preload(&rm, point);
    run_point(&rm, point, threads, two_phase, rmw, res);
    rm_teardown(&rm);
    if (second_process)
        idle_ms = holder_stop(&h);
    res->other_cpu_ms = idle_ms;
    g_breakdown = 1;
    watch_stop();
    read_mem(&after);
    malloc_trim(0);
    read_mem(&trimmed);
    printf("  %-4s %s%s T=%-2d %7.0f tps  p50 %7.1f us  p99 %8.1f us  cpu %5.1f us/branch "
           "(user %.1f, sys %.1f)",
           rm.name, rmw ? "RMW " : "", two_phase ? "2PC" : "1PC", threads, res->tps,
           res->p50_us, res->p99_us, res->cpu_us_per_branch, res->user_us_per_branch,
           res->sys_us_per_branch);
    if (kind == RM_BDB)
        printf("  log syncs %.2f/branch", res->syncs_per_branch);
    if (kind == RM_BDB || rmw || res->retries != 0)
        printf("  lock-conflict retries %" PRIu64, res->retries);
    if (rmw)
        printf("\n       verified %" PRIu64 " keys: versions match the %" PRIu64
               " committed branches (at most %" PRIu64 " on one key)  ",
               res->verified, res->branches, res->max_version);
    else
        printf("\n       verified %" PRIu64 " keys  ", res->verified);
    print_mem(&res->mem, &after, &trimmed);
    print_breakdown(res, kind, two_phase, rmw);
    if (second_process)
        printf("       the idle first process used %.1f ms of CPU while this one ran\n",
               idle_ms);
}

/* ---- raw probe: the disk's group-commit ceiling --------------------------------------------- */

struct probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fd;
    uint64_t appended;               /* logical bytes appended (offset = appended % file size) */
    uint64_t synced;                 /* logical bytes known durable */
    int syncing;
    uint64_t syncs;
};

struct probe_worker {
    struct hist hist;
    struct probe *p;
    unsigned id;
    uint64_t records;
    pthread_t thread;
} __attribute__((aligned(64)));

static struct probe_worker g_probe_workers[MAX_THREADS];

static void *probe_main(void *arg)
{
    struct probe_worker *w = arg;
    struct probe *p = w->p;
    unsigned char rec[PROBE_RECORD];

    memset(rec, 'r', sizeof rec);
    pthread_barrier_wait(&g_barrier);
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        uint64_t t0 = now_ns(CLOCK_MONOTONIC), mine;
        memcpy(rec, &w->id, sizeof w->id);
        memcpy(rec + 8, &w->records, sizeof w->records);
        pthread_mutex_lock(&p->mu);
        if (pwrite(p->fd, rec, sizeof rec, (off_t)(p->appended % PROBE_FILE_BYTES)) !=
            (ssize_t)sizeof rec)
            die("probe: pwrite: %s", strerror(errno));
        p->appended += sizeof rec;
        mine = p->appended;
        while (p->synced < mine) {
            if (!p->syncing) {
                uint64_t target = p->appended;
                p->syncing = 1;
                pthread_mutex_unlock(&p->mu);
                if (fdatasync(p->fd) != 0)
                    die("probe: fdatasync: %s", strerror(errno));
                pthread_mutex_lock(&p->mu);
                p->synced = target;
                p->syncing = 0;
                p->syncs++;
                pthread_cond_broadcast(&p->cv);
            } else {
                pthread_cond_wait(&p->cv, &p->mu);
            }
        }
        pthread_mutex_unlock(&p->mu);
        w->hist.count[h_index(now_ns(CLOCK_MONOTONIC) - t0)]++;
        w->records++;
    }
    return NULL;
}

static void run_probe(int threads, struct result *res)
{
    char path[4200];
    struct probe p;
    uint64_t t_start, t_end, total = 0;
    int rc;

    watch_start("raw probe T=%d", threads);
    memset(res, 0, sizeof *res);
    memset(&p, 0, sizeof p);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    snprintf(path, sizeof path, "%s/probe-%d.dat", g_root, threads);
    p.fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (p.fd < 0)
        die("probe: open %s: %s", path, strerror(errno));
    if ((rc = posix_fallocate(p.fd, 0, (off_t)PROBE_FILE_BYTES)) != 0)
        die("probe: fallocate %s: %s", path, strerror(rc));
    if (fsync(p.fd) != 0)
        die("probe: fsync: %s", strerror(errno));

    atomic_store(&g_stop, 0);
    pthread_barrier_init(&g_barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        struct probe_worker *w = &g_probe_workers[i];
        memset(&w->hist, 0, sizeof w->hist);
        w->p = &p;
        w->id = (unsigned)i;
        w->records = 0;
        if (pthread_create(&w->thread, NULL, probe_main, w) != 0)
            die("pthread_create failed");
    }
    pthread_barrier_wait(&g_barrier);
    t_start = now_ns(CLOCK_MONOTONIC);
    sleep_until(t_start + (uint64_t)(g_seconds * 1e9));
    atomic_store(&g_stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(g_probe_workers[i].thread, NULL);
    t_end = now_ns(CLOCK_MONOTONIC);
    pthread_barrier_destroy(&g_barrier);

    memset(&g_merged, 0, sizeof g_merged);
    for (int i = 0; i < threads; i++) {
        h_merge(&g_merged, &g_probe_workers[i].hist);
        total += g_probe_workers[i].records;
    }
    close(p.fd);
    settle();
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);

    res->valid = 1;
    res->branches = total;
    res->tps = (double)total / ((double)(t_end - t_start) / 1e9);
    res->p50_us = h_quantile_us(&g_merged, 0.50);
    res->p99_us = h_quantile_us(&g_merged, 0.99);
    res->syncs_per_branch = total ? (double)p.syncs / (double)total : 0.0;
    read_mem(&res->mem);
    watch_stop();
    printf("  raw probe T=%-2d %7.0f records/s  p50 %7.1f us  p99 %8.1f us  "
           "%.3f fdatasync/record%s\n       ",
           threads, res->tps, res->p50_us, res->p99_us, res->syncs_per_branch,
           p.appended > PROBE_FILE_BYTES ? "  (file wrapped)" : "");
    print_mem(&res->mem, NULL, NULL);
}

/* ---- scan points: cursors over a pre-loaded store -------------------------------------------- */

/*
 * The scan store: SCAN_KEYS keys "s" + 15 decimal digits (so key order is index order), loaded
 * in the order idx = i * SCAN_STRIDE mod SCAN_KEYS, a permutation far from key order; each
 * value is its key followed by 84 bytes that depend on the index.
 */
#define SCAN_KEYS 1000000u
#define SCAN_STRIDE 999983u               /* a prime, so coprime with SCAN_KEYS */
#define SCAN_LOAD_BATCH 1000u             /* puts per loading transaction (mmxa fails at 5000) */
#define SCAN_READS 10000u                 /* range reads per range-read point, all threads */
#define SCAN_RANGE 100u                   /* keys per range read */
#define SCAN_CACHE_BYTES (512ul << 20)    /* BDB's cache: more than the loaded database */
#define SCAN_THREAD_POINTS 2
static const int g_scan_threads[SCAN_THREAD_POINTS] = {1, 8};
#define SCAN_BOUNDED SCAN_THREAD_POINTS   /* the mmxa-only range-read point with an upper bound */
#define SCAN_ITERATIONS 3                 /* timed iterations per store; the median is reported */

static void make_scan_key(uint32_t idx, char key[KEY_LEN + 1])
{
    snprintf(key, KEY_LEN + 1, "s%015" PRIu32, idx);
}

static void make_scan_value(uint32_t idx, const char *key, unsigned char val[VALUE_LEN])
{
    uint64_t x = ((uint64_t)idx + 1) * 0xD6E8FEB86659FD93ull;
    memcpy(val, key, KEY_LEN);
    for (unsigned i = KEY_LEN; i < VALUE_LEN; i++) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 32;
        val[i] = (unsigned char)('!' + x % 94);
    }
}

/* The key after `key` in key order: its 15-digit decimal counter plus one. */
static inline void scan_key_next(char key[KEY_LEN + 1])
{
    for (int i = KEY_LEN - 1; i > 0; i--) {
        if (key[i] != '9') {
            key[i]++;
            return;
        }
        key[i] = '0';
    }
}

/*
 * The check of every entry a scan returns, inside the timed loop (it costs both RMs the same):
 * the key must be `want`, the one expected next in key order (so the order and the count are
 * exact, not only increasing), and the value 100 bytes starting with the key.
 */
static inline void scan_check(const struct rm *rm, const char *what, uint64_t n,
                              const char *want, const char *key, size_t klen,
                              const unsigned char *val, size_t vlen)
{
    if (klen == KEY_LEN && memcmp(key, want, KEY_LEN) == 0 && vlen == VALUE_LEN &&
        memcmp(val, want, KEY_LEN) == 0)
        return;
    die("%s: entry %" PRIu64 " of the %s is \"%.*s\" (%zu-byte key, %zu-byte value), expected "
        "\"%s\" with a %u-byte value starting with it", rm->name, n, what,
        (int)(klen < KEY_LEN ? klen : KEY_LEN), key, klen, vlen, want, VALUE_LEN);
}

/*
 * Loads the scan store, before any clock starts. mmxa: local transactions (mmxa_txn_begin,
 * mmxa_txn_commit) of SCAN_LOAD_BATCH puts, durable (sync=msync); BDB: 1PC XA branches of
 * SCAN_LOAD_BATCH puts, its log flushed after each. Then the file system is synced (settle).
 */
static void scan_load(struct rm *rm, unsigned point)
{
    char key[KEY_LEN + 1];
    unsigned char val[VALUE_LEN];
    XID xid;
    uint64_t seq = 0;
    for (uint32_t first = 0; first < SCAN_KEYS; first += SCAN_LOAD_BATCH) {
        if (rm->kind == RM_MMXA) {
            int rc = mmxa_txn_begin(rm->rmid);
            if (rc != MMXA_OK)
                die("mmxa: mmxa_txn_begin returned %d (%s): %s", rc, mmxa_strerror(rc),
                    rm_detail(rm));
        } else {
            make_xid_for(&xid, point, 0xffffu, seq++, rm->kind);
            xa_must(rm, OP_START, &xid, TMNOFLAGS, XA_OK);
        }
        for (uint32_t i = first; i < first + SCAN_LOAD_BATCH && i < SCAN_KEYS; i++) {
            uint32_t idx = (uint32_t)((uint64_t)i * SCAN_STRIDE % SCAN_KEYS);
            make_scan_key(idx, key);
            make_scan_value(idx, key, val);
            if (rm_put(rm, key, val) != 0)
                die("%s: lock conflict while loading the scan store alone", rm->name);
        }
        if (rm->kind == RM_MMXA) {
            int rc = mmxa_txn_commit(rm->rmid);
            if (rc != MMXA_OK)
                die("mmxa: mmxa_txn_commit returned %d (%s): %s", rc, mmxa_strerror(rc),
                    rm_detail(rm));
        } else {
            xa_must(rm, OP_END, &xid, TMSUCCESS, XA_OK);
            xa_must(rm, OP_COMMIT, &xid, TMONEPHASE, XA_OK);
            rm_after_commit(rm);
        }
    }
    settle();
}

/*
 * One full iteration of the store in key order, outside any transaction, timed: mmxa, a cursor
 * over every key (mmxa_cursor_open with no bounds, mmxa_cursor_next until MMXA_NOTFOUND); BDB, a
 * cursor opened with a NULL txn outside any branch (no transaction: each page is read-locked
 * only while the cursor is on it), DBC->get(DB_NEXT) until DB_NOTFOUND. Both copy each key and
 * value into the caller's buffers. res: tps = keys/s, p50_us = wall-clock µs per key.
 */
static void scan_iterate(struct rm *rm, struct result *res)
{
    char want[KEY_LEN + 1], kbuf[KEY_LEN + 16];
    unsigned char vbuf[VALUE_LEN + 28];
    uint64_t n = 0, t0, t1, cpu0, cpu1;
    struct rusage ru0, ru1;
    double secs;

    memset(res, 0, sizeof *res);
    make_scan_key(0, want);
    getrusage(RUSAGE_SELF, &ru0);
    cpu0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    t0 = now_ns(CLOCK_MONOTONIC);
    if (rm->kind == RM_MMXA) {
        uint64_t c = 0;
        size_t klen = 0, vlen = 0;
        int rc = mmxa_cursor_open(rm->rmid, NULL, 0, NULL, 0, 0, &c);
        if (rc != MMXA_OK)
            die("mmxa: mmxa_cursor_open (every key, outside any branch) returned %d (%s): %s",
                rc, mmxa_strerror(rc), rm_detail(rm));
        while ((rc = mmxa_cursor_next(c, kbuf, sizeof kbuf, &klen, vbuf, sizeof vbuf, &vlen)) ==
               MMXA_OK) {
            scan_check(rm, "iteration", n, want, kbuf, klen, vbuf, vlen);
            scan_key_next(want);
            n++;
        }
        if (rc != MMXA_NOTFOUND)
            die("mmxa: mmxa_cursor_next (entry %" PRIu64 " of the iteration) returned %d (%s): "
                "%s", n, rc, mmxa_strerror(rc), rm_detail(rm));
        rc = mmxa_cursor_close(c);
        if (rc != MMXA_OK)
            die("mmxa: mmxa_cursor_close returned %d (%s): %s", rc, mmxa_strerror(rc),
                rm_detail(rm));
    } else {
        DBC *dbc = NULL;
        DBT k, v;
        int rc = rm->dbp->cursor(rm->dbp, NULL, &dbc, 0);
        if (rc != 0)
            die("BDB: DB->cursor (outside any branch) returned %d (%s)", rc, db_strerror(rc));
        if (dbc->txn != NULL)
            die("BDB: a cursor opened outside any branch belongs to a transaction");
        memset(&k, 0, sizeof k);
        memset(&v, 0, sizeof v);
        k.data = kbuf;
        k.ulen = sizeof kbuf;
        k.flags = DB_DBT_USERMEM;
        v.data = vbuf;
        v.ulen = sizeof vbuf;
        v.flags = DB_DBT_USERMEM;
        while ((rc = dbc->get(dbc, &k, &v, DB_NEXT)) == 0) {
            scan_check(rm, "iteration", n, want, kbuf, k.size, vbuf, v.size);
            scan_key_next(want);
            n++;
        }
        if (rc != DB_NOTFOUND)
            die("BDB: DBC->get(DB_NEXT) (entry %" PRIu64 " of the iteration) returned %d (%s)",
                n, rc, db_strerror(rc));
        rc = dbc->close(dbc);
        if (rc != 0)
            die("BDB: DBC->close returned %d (%s)", rc, db_strerror(rc));
    }
    t1 = now_ns(CLOCK_MONOTONIC);
    cpu1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    getrusage(RUSAGE_SELF, &ru1);
    if (n != SCAN_KEYS)
        die("%s: the iteration returned %" PRIu64 " keys, %u were loaded", rm->name, n,
            SCAN_KEYS);
    secs = (double)(t1 - t0) / 1e9;
    res->valid = 1;
    res->branches = n;
    res->verified = n;
    res->tps = (double)n / secs;
    res->p50_us = secs * 1e6 / (double)n;
    res->cpu_us_per_branch = (double)(cpu1 - cpu0) / 1000.0 / (double)n;
    res->user_us_per_branch = tv_us(&ru1.ru_utime, &ru0.ru_utime) / (double)n;
    res->sys_us_per_branch = tv_us(&ru1.ru_stime, &ru0.ru_stime) / (double)n;
}

/*
 * The SCAN_RANGE keys from key idx on, in the calling thread's branch, each checked. mmxa: a
 * cursor from idx (lo inclusive, no upper bound), SCAN_RANGE mmxa_cursor_next; when bounded, hi
 * is the key SCAN_RANGE after idx (exclusive) and the cursor is read until MMXA_NOTFOUND, which
 * must come after exactly SCAN_RANGE keys. BDB: DB->cursor with a NULL txn, which in an XA
 * environment belongs to the thread's XA transaction (checked: the cursor must have a
 * transaction), DB_SET_RANGE then DB_NEXT. Both cursors are closed before xa_end, as BDB
 * requires.
 */
static void scan_range(struct rm *rm, uint32_t idx, int bounded)
{
    char start[KEY_LEN + 1], want[KEY_LEN + 1], kbuf[KEY_LEN + 16];
    unsigned char vbuf[VALUE_LEN + 28];
    make_scan_key(idx, start);
    memcpy(want, start, sizeof want);
    if (rm->kind == RM_MMXA) {
        char hi[KEY_LEN + 1];
        uint64_t c = 0;
        size_t klen = 0, vlen = 0;
        int rc;
        make_scan_key(idx + SCAN_RANGE, hi);
        rc = mmxa_cursor_open(rm->rmid, start, KEY_LEN, bounded ? hi : NULL,
                              bounded ? KEY_LEN : 0, 0, &c);
        if (rc != MMXA_OK)
            die("mmxa: mmxa_cursor_open(\"%s\") in a branch returned %d (%s): %s", start, rc,
                mmxa_strerror(rc), rm_detail(rm));
        for (unsigned j = 0; j < SCAN_RANGE; j++) {
            rc = mmxa_cursor_next(c, kbuf, sizeof kbuf, &klen, vbuf, sizeof vbuf, &vlen);
            if (rc != MMXA_OK)
                die("mmxa: mmxa_cursor_next (entry %u of the range read from \"%s\") returned "
                    "%d (%s): %s", j, start, rc, mmxa_strerror(rc), rm_detail(rm));
            scan_check(rm, "range read", j, want, kbuf, klen, vbuf, vlen);
            scan_key_next(want);
        }
        if (bounded &&
            (rc = mmxa_cursor_next(c, kbuf, sizeof kbuf, &klen, vbuf, sizeof vbuf, &vlen)) !=
                MMXA_NOTFOUND)
            die("mmxa: mmxa_cursor_next after the %u keys of the range [\"%s\", \"%s\") "
                "returned %d (%s), expected MMXA_NOTFOUND", SCAN_RANGE, start, hi, rc,
                mmxa_strerror(rc));
        rc = mmxa_cursor_close(c);
        if (rc != MMXA_OK)
            die("mmxa: mmxa_cursor_close returned %d (%s): %s", rc, mmxa_strerror(rc),
                rm_detail(rm));
    } else {
        DBC *dbc = NULL;
        DBT k, v;
        int rc = rm->dbp->cursor(rm->dbp, NULL, &dbc, 0);
        if (rc != 0)
            die("BDB: DB->cursor in a branch returned %d (%s)", rc, db_strerror(rc));
        if (dbc->txn == NULL)
            die("BDB: a cursor opened in a branch with a NULL txn has no transaction (it "
                "should belong to the thread's XA transaction)");
        memset(&k, 0, sizeof k);
        memset(&v, 0, sizeof v);
        memcpy(kbuf, start, KEY_LEN);
        k.data = kbuf;
        k.size = KEY_LEN;
        k.ulen = sizeof kbuf;
        k.flags = DB_DBT_USERMEM;
        v.data = vbuf;
        v.ulen = sizeof vbuf;
        v.flags = DB_DBT_USERMEM;
        for (unsigned j = 0; j < SCAN_RANGE; j++) {
            rc = dbc->get(dbc, &k, &v, j == 0 ? DB_SET_RANGE : DB_NEXT);
            if (rc != 0)
                die("BDB: DBC->get(%s) (entry %u of the range read from \"%s\") returned %d "
                    "(%s)", j == 0 ? "DB_SET_RANGE" : "DB_NEXT", j, start, rc, db_strerror(rc));
            scan_check(rm, "range read", j, want, kbuf, k.size, vbuf, v.size);
            scan_key_next(want);
        }
        rc = dbc->close(dbc);
        if (rc != 0)
            die("BDB: DBC->close returned %d (%s)", rc, db_strerror(rc));
    }
}

struct scan_worker {
    struct hist hist;                /* first: large and written only by its thread */
    struct rm *rm;
    unsigned id, point;
    uint64_t reads;                  /* range reads to do */
    int bounded;                     /* mmxa: the cursor has an upper bound (scan_range) */
    uint64_t rng;                    /* xorshift state for the start keys */
    uint64_t call_ns[C_CALLS];       /* C_START, C_GET (the cursor), C_END, C_COMMIT */
    pthread_t thread;
} __attribute__((aligned(64)));

static struct scan_worker g_scan_workers[MAX_THREADS];

/* A range-read thread: its own xa_open, then w->reads branches of one range read each. */
static void *scan_worker_main(void *arg)
{
    struct scan_worker *w = arg;
    struct rm *rm = w->rm;
    xa_must(rm, OP_OPEN, NULL, TMNOFLAGS, XA_OK); /* R state is per thread */
    pthread_barrier_wait(&g_barrier);
    for (uint64_t n = 0; n < w->reads; n++) {
        uint32_t idx = (uint32_t)(xorshift(&w->rng) % (SCAN_KEYS - SCAN_RANGE + 1));
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        struct lap l = {w->call_ns, t0};
        XID xid;
        make_xid_for(&xid, w->point, w->id, n, rm->kind);
        xa_must(rm, OP_START, &xid, TMNOFLAGS, XA_OK);
        lap(&l, C_START);
        scan_range(rm, idx, w->bounded);
        lap(&l, C_GET);
        xa_must(rm, OP_END, &xid, TMSUCCESS, XA_OK);
        lap(&l, C_END);
        xa_must(rm, OP_COMMIT, &xid, TMONEPHASE, XA_OK);
        lap(&l, C_COMMIT);
        w->hist.count[h_index(l.t - t0)]++;
    }
    xa_must(rm, OP_CLOSE, NULL, TMNOFLAGS, XA_OK);
    return NULL;
}

/*
 * SCAN_READS range reads on `threads` threads (an equal share each), each in its own 1PC
 * branch: xa_start, scan_range from a random start (uniform, per-thread xorshift, so every read
 * finds SCAN_RANGE keys), xa_end(TMSUCCESS), xa_commit(TMONEPHASE). res: tps = reads/s, p50 and
 * p99 per read, CPU per read, BDB's log syncs per read (the branches write nothing).
 */
static void scan_reads(struct rm *rm, unsigned point, int tpoint, int threads, int bounded,
                       struct result *res)
{
    uint64_t t_start, t_end, cpu0, cpu1, syncs0 = 0, syncs1 = 0, total = 0;
    struct rusage ru0, ru1;

    memset(res, 0, sizeof *res);
    if (pthread_barrier_init(&g_barrier, NULL, (unsigned)threads + 1) != 0)
        die("pthread_barrier_init failed");
    for (int i = 0; i < threads; i++) {
        struct scan_worker *w = &g_scan_workers[i];
        memset(&w->hist, 0, sizeof w->hist);
        w->rm = rm;
        w->id = 0x100u * (unsigned)(tpoint + 1) + (unsigned)i; /* XIDs unique in the store */
        w->point = point;
        w->bounded = bounded;
        w->reads = SCAN_READS / (unsigned)threads;
        w->reads += (unsigned)i < SCAN_READS % (unsigned)threads;
        w->rng = 0xD6E8FEB86659FD93ull * (uint64_t)(i + 1) + point;
        memset(w->call_ns, 0, sizeof w->call_ns);
        if (pthread_create(&w->thread, NULL, scan_worker_main, w) != 0)
            die("pthread_create failed");
    }
    if (rm->kind == RM_BDB)
        syncs0 = bdb_log_syncs(rm);
    pthread_barrier_wait(&g_barrier);
    t_start = now_ns(CLOCK_MONOTONIC);
    cpu0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    getrusage(RUSAGE_SELF, &ru0);
    for (int i = 0; i < threads; i++)
        pthread_join(g_scan_workers[i].thread, NULL);
    t_end = now_ns(CLOCK_MONOTONIC);
    cpu1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    getrusage(RUSAGE_SELF, &ru1);
    pthread_barrier_destroy(&g_barrier);
    if (rm->kind == RM_BDB)
        syncs1 = bdb_log_syncs(rm);

    memset(&g_merged, 0, sizeof g_merged);
    for (int i = 0; i < threads; i++) {
        h_merge(&g_merged, &g_scan_workers[i].hist);
        total += g_scan_workers[i].reads;
        for (int c = 0; c < C_CALLS; c++)
            res->call_us[c] += (double)g_scan_workers[i].call_ns[c] / 1000.0;
    }
    for (int c = 0; c < C_CALLS; c++)
        res->call_us[c] /= (double)total;
    res->valid = 1;
    res->breakdown = 1;
    res->branches = total;
    res->verified = total;
    res->tps = (double)total / ((double)(t_end - t_start) / 1e9);
    res->p50_us = h_quantile_us(&g_merged, 0.50);
    res->p99_us = h_quantile_us(&g_merged, 0.99);
    res->cpu_us_per_branch = (double)(cpu1 - cpu0) / 1000.0 / (double)total;
    res->user_us_per_branch = tv_us(&ru1.ru_utime, &ru0.ru_utime) / (double)total;
    res->sys_us_per_branch = tv_us(&ru1.ru_stime, &ru0.ru_stime) / (double)total;
    res->syncs_per_branch = (double)(syncs1 - syncs0) / (double)total;
}

/*
 * The scan points for one RM, on one fresh store: load it (not timed), iterate it
 * SCAN_ITERATIONS times (the median is reported), then the range reads at each thread count of
 * g_scan_threads, and for mmxa once more at 1 thread with an upper bound (rr[SCAN_BOUNDED]);
 * close it. Prints a line per point.
 */
static void measure_scan(enum rm_kind kind, unsigned point, struct result *iter,
                         struct result rr[SCAN_BOUNDED + 1])
{
    struct rm rm;
    struct mem during, after, trimmed;
    struct result runs[SCAN_ITERATIONS];
    unsigned long cache = g_bdb_cache_bytes;
    uint64_t t0;
    char name[64];
    const char *rmname = kind == RM_MMXA ? "mmxa" : "BDB";

    snprintf(name, sizeof name, "p%02u-%s", point, kind == RM_MMXA ? "mmxa" : "bdb");
    watch_start("scan %s: loading", rmname);
    g_bdb_cache_bytes = SCAN_CACHE_BYTES;
    rm_setup(&rm, kind, (kind == RM_MMXA ? 100 : 200) + (int)point, name, "",
             g_scan_threads[SCAN_THREAD_POINTS - 1] + 1);
    g_bdb_cache_bytes = cache;
    t0 = now_ns(CLOCK_MONOTONIC);
    scan_load(&rm, point);
    if (kind == RM_BDB) {
        /* Writes the loaded pages to the database file, as a deployment's checkpoints would. */
        int rc = rm.env->txn_checkpoint(rm.env, 0, 0, DB_FORCE);
        if (rc != 0)
            die("BDB: DB_ENV->txn_checkpoint returned %d (%s)", rc, db_strerror(rc));
        settle();
    }
    watch_stop();
    printf("  %-4s loaded %u keys in %.1f s (not measured; %s of %u puts); data directory "
           "%.0f MiB on disk", rm.name, SCAN_KEYS, (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9,
           kind == RM_MMXA ? "local transactions" : "1PC XA branches", SCAN_LOAD_BATCH,
           (double)du_bytes(rm.dir) / 1048576.0);
    if (kind == RM_BDB) {
        char db[4200];
        snprintf(db, sizeof db, "%s/bench.db", rm.dir);
        printf(" (database file %.0f MiB; the rest is log and cache regions)",
               (double)du_bytes(db) / 1048576.0);
    }
    printf("\n");

    watch_start("scan %s: iteration", rmname);
    for (int k = 0; k < SCAN_ITERATIONS; k++)
        scan_iterate(&rm, &runs[k]);
    watch_stop();
    /* The median by rate: sort the few runs. */
    for (int a = 1; a < SCAN_ITERATIONS; a++)
        for (int b = a; b > 0 && runs[b].tps < runs[b - 1].tps; b--) {
            struct result tmp = runs[b];
            runs[b] = runs[b - 1];
            runs[b - 1] = tmp;
        }
    *iter = runs[SCAN_ITERATIONS / 2];
    printf("  %-4s iterate        %9.0f keys/s  %6.3f us/key  cpu %.3f us/key (user %.3f, sys "
           "%.3f)  the median of %d iterations (",
           rm.name, iter->tps, iter->p50_us, iter->cpu_us_per_branch, iter->user_us_per_branch,
           iter->sys_us_per_branch, SCAN_ITERATIONS);
    for (int k = 0; k < SCAN_ITERATIONS; k++)
        printf("%s%.0f", k == 0 ? "" : ", ", runs[k].tps);
    printf(" keys/s), each checked: %" PRIu64 " keys in key order\n", iter->verified);

    for (int i = 0; i < SCAN_BOUNDED + (kind == RM_MMXA); i++) {
        struct result *r = &rr[i];
        int bounded = i == SCAN_BOUNDED;
        int t = bounded ? 1 : g_scan_threads[i];
        watch_start("scan %s: range reads T=%d%s", rmname, t, bounded ? " bounded" : "");
        scan_reads(&rm, point, i, t, bounded, r);
        watch_stop();
        printf("  %-4s range reads T=%-2d %7.0f reads/s  p50 %7.1f us  p99 %8.1f us  cpu %5.1f "
               "us/read (user %.1f, sys %.1f)%s",
               rm.name, t, r->tps, r->p50_us, r->p99_us, r->cpu_us_per_branch,
               r->user_us_per_branch, r->sys_us_per_branch,
               bounded ? "  with an upper bound" : "");
        if (kind == RM_BDB)
            printf("  log syncs %.2f/read", r->syncs_per_branch);
        printf("\n       checked %" PRIu64 " reads of %u keys; mean time per read (us): "
               "xa_start %.1f, cursor (open, %u reads, close) %.1f, xa_end %.1f, "
               "xa_commit %.1f\n",
               r->verified, SCAN_RANGE, r->call_us[C_START], SCAN_RANGE + bounded,
               r->call_us[C_GET], r->call_us[C_END], r->call_us[C_COMMIT]);
    }
    read_mem(&during);
    rm_teardown(&rm);
    read_mem(&after);
    malloc_trim(0);
    read_mem(&trimmed);
    printf("       ");
    print_mem(&during, &after, &trimmed);
}

/* ---- main ------------------------------------------------------------------------------------ */

static int g_threads[8] = {1, 8, 32};
static int g_nthreads = 3;
static int g_mp_procs = 4, g_mp_threads = 8; /* BENCH_MP */

/* BENCH_ONLY: which groups of points run (all by default). */
enum { G_PUT = 1, G_MP = 2, G_RMW = 4, G_PROBE = 8, G_NONE = 16, G_SCAN = 32, G_ALL = 63 };
static int g_only = G_ALL;

static void parse_env(void)
{
    const char *s = getenv("BENCH_SECONDS");
    if (s != NULL && s[0] != '\0') {
        char *end;
        double v = strtod(s, &end);
        if (*end != '\0' || !(v > 0.0) || v > 86400.0)
            die("BENCH_SECONDS must be a positive number of seconds, got \"%s\"", s);
        g_seconds = v;
    }
    s = getenv("BENCH_THREADS");
    if (s != NULL && s[0] != '\0') {
        char buf[128], *save = NULL, *tok;
        g_nthreads = 0;
        snprintf(buf, sizeof buf, "%s", s);
        for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
            int v = atoi(tok);
            if (v < 1 || v > MAX_THREADS || g_nthreads == 8)
                die("BENCH_THREADS: a comma-separated list of up to 8 counts in 1..%d",
                    MAX_THREADS);
            g_threads[g_nthreads++] = v;
        }
        if (g_nthreads == 0)
            die("BENCH_THREADS is empty");
    }
    s = getenv("BENCH_MP");
    if (s != NULL && s[0] != '\0') {
        if (sscanf(s, "%dx%d", &g_mp_procs, &g_mp_threads) != 2 || g_mp_procs < 1 ||
            g_mp_procs > MP_MAX_PROCS || g_mp_threads < 1 || g_mp_threads > MAX_THREADS)
            die("BENCH_MP: PROCSxTHREADS, at most %dx%d", MP_MAX_PROCS, MAX_THREADS);
    }
    s = getenv("BENCH_ONLY");
    if (s != NULL && s[0] != '\0') {
        static const char *const names[] = {"put", "mp", "rmw", "probe", "none", "scan"};
        char buf[128], *save = NULL, *tok;
        g_only = 0;
        snprintf(buf, sizeof buf, "%s", s);
        for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
            int found = 0;
            for (int i = 0; i < 6; i++)
                if (strcmp(tok, names[i]) == 0)
                    g_only |= 1 << i, found = 1;
            if (!found)
                die("BENCH_ONLY: a comma-separated list of put, mp, rmw, probe, none, scan");
        }
    }
}

static void fmt_us(char *buf, size_t n, double us)
{
    if (us >= 100.0)
        snprintf(buf, n, "%.0f", us);
    else
        snprintf(buf, n, "%.1f", us);
}

/* The first three fields of /proc/loadavg. */
static const char *loadavg(void)
{
    static char buf[64];
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (f == NULL || fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
        snprintf(buf, sizeof buf, "unknown");
    else
        snprintf(buf, sizeof buf, "%.2f %.2f %.2f", a, b, c);
    if (f != NULL)
        fclose(f);
    return buf;
}

static const char *fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0xEF53: return "ext2/3/4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794c7630: return "overlayfs";
    case 0x2fc12fc1: return "zfs";
    default: return "other";
    }
}

int main(int argc, char **argv)
{
    const char *base;
    char tmpl[4096];
    struct result mm[2][8], bdb[2][8], rmw_mm[2][8], rmw_bdb[2][8], probe[8], none, none2;
    struct result mp_mm, mp_bdb;
    struct result scan_iter[2], scan_rr[2][SCAN_BOUNDED + 1]; /* [0] mmxa, [1] BDB */
    struct mem end_mem;
    struct utsname un;
    struct statfs sfs;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned point = 0;
    uint64_t run_start = now_ns(CLOCK_MONOTONIC);
    int major, minor, patch;

    if (argc > 1 && strcmp(argv[1], "--mp-child") == 0)
        return mp_child_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--hold") == 0)
        return holder_main(argc, argv);
    memset(mm, 0, sizeof mm);
    memset(bdb, 0, sizeof bdb);
    memset(rmw_mm, 0, sizeof rmw_mm);
    memset(rmw_bdb, 0, sizeof rmw_bdb);
    memset(probe, 0, sizeof probe);
    memset(&none, 0, sizeof none);
    memset(&none2, 0, sizeof none2);
    memset(&mp_mm, 0, sizeof mp_mm);
    memset(&mp_bdb, 0, sizeof mp_bdb);
    memset(scan_iter, 0, sizeof scan_iter);
    memset(scan_rr, 0, sizeof scan_rr);
    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_env();
    signal(SIGALRM, watchdog);
    base = getenv("BENCH_DIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(tmpl, sizeof tmpl, "%s/mmxa-bench.XXXXXX", base);
    if (mkdtemp(tmpl) == NULL)
        die("mkdtemp %s: %s", tmpl, strerror(errno));
    snprintf(g_root, sizeof g_root, "%s", tmpl);

    uname(&un);
    if (statfs(g_root, &sfs) != 0)
        sfs.f_type = 0;
    printf("mmxa vs Berkeley DB XA benchmark: %s %s, %ld CPUs, data in %s (%s), "
           "load average %s\n",
           un.sysname, un.release, ncpu, g_root, fs_name((long)sfs.f_type), loadavg());
    printf("%s; %.1f s per point; 16-byte key, 100-byte value, one put per branch (RMW: a "
           "locking read and a put of a random key out of %u); mmxa sync=msync, BDB synchronous "
           "log + log_flush after xa_commit\n",
           db_version(&major, &minor, &patch), g_seconds, RMW_KEYS);
    fflush(stdout);

    /*
     * Warm-up, not reported: 1 s of 2PC at 1 thread on each RM, so the first measured point
     * does not pay for a cold disk, page cache and library (and the build's writeback).
     */
    {
        struct rm rm;
        struct result ignored;
        double seconds = g_seconds;
        settle();
        g_seconds = seconds < 1.0 ? seconds : 1.0;
        printf("warm-up (%.1f s per RM, not reported)\n", g_seconds);
        for (int k = 0; k < 2; k++) {
            point++;
            watch_start("warm-up %s", k == 0 ? "mmxa" : "BDB");
            rm_setup(&rm, k == 0 ? RM_MMXA : RM_BDB, (k == 0 ? 100 : 200) + (int)point,
                     k == 0 ? "warmup-mmxa" : "warmup-bdb", "", 1);
            run_point(&rm, point, 1, 1, 0, &ignored);
            rm_teardown(&rm);
            watch_stop();
        }
        g_seconds = seconds;
    }

    for (int mode = 0; mode < 2; mode++) {
        int two_phase = mode == 0;
        for (int i = 0; (g_only & G_PUT) && i < g_nthreads; i++) {
            int t = g_threads[i];
            printf("%s, %d thread%s:\n", two_phase ? "2PC" : "1PC", t, t == 1 ? "" : "s");
            point++;
            /* Alternate which RM goes first, so neither always follows the other's writes. */
            if (point % 2 == 1) {
                measure(RM_MMXA, point, t, two_phase, 0, "", &mm[mode][i]);
                measure(RM_BDB, point, t, two_phase, 0, "", &bdb[mode][i]);
            } else {
                measure(RM_BDB, point, t, two_phase, 0, "", &bdb[mode][i]);
                measure(RM_MMXA, point, t, two_phase, 0, "", &mm[mode][i]);
            }
        }
        /* Next to the in-process 2PC points, whose P x T threads it is compared with. */
        if (two_phase && (g_only & G_MP)) {
            printf("2PC, %d processes x %d threads, one store (BDB: one environment, xa_open "
                   "in every process):\n", g_mp_procs, g_mp_threads);
            point++;
            if (point % 2 == 1) {
                measure_mp(RM_MMXA, point, g_mp_procs, g_mp_threads, &mp_mm);
                measure_mp(RM_BDB, point, g_mp_procs, g_mp_threads, &mp_bdb);
            } else {
                measure_mp(RM_BDB, point, g_mp_procs, g_mp_threads, &mp_bdb);
                measure_mp(RM_MMXA, point, g_mp_procs, g_mp_threads, &mp_mm);
            }
        }
    }

    for (int mode = 0; (g_only & G_RMW) && mode < RMW_MODES; mode++) {
        int two_phase = mode == 0;
        for (int i = 0; i < g_nthreads; i++) {
            int t = g_threads[i];
            printf("RMW %s (locking read + put of a random key out of %u), %d thread%s:\n",
                   two_phase ? "2PC" : "1PC", RMW_KEYS, t, t == 1 ? "" : "s");
            point++;
            if (point % 2 == 1) {
                measure(RM_MMXA, point, t, two_phase, 1, "", &rmw_mm[mode][i]);
                measure(RM_BDB, point, t, two_phase, 1, "", &rmw_bdb[mode][i]);
            } else {
                measure(RM_BDB, point, t, two_phase, 1, "", &rmw_bdb[mode][i]);
                measure(RM_MMXA, point, t, two_phase, 1, "", &rmw_mm[mode][i]);
            }
        }
    }

    if (g_only & G_PROBE) {
        printf("raw probe (128-byte records, fallocated file, fdatasync, group commit):\n");
        for (int i = 0; i < g_nthreads; i++)
            run_probe(g_threads[i], &probe[i]);
    }

    if (g_only & G_NONE) {
        printf("mmxa sync=none, 2PC, 1 thread:\n");
        point++;
        measure(RM_MMXA, point, 1, 1, 0, ";sync=none", &none);
        printf("mmxa sync=none, 2PC, 1 thread, in a second process (the first keeps the store "
               "open, idle):\n");
        point++;
        measure_with(RM_MMXA, point, 1, 1, 0, ";sync=none", 1, &none2);
    }

    if (g_only & G_SCAN) {
        printf("scan: %u keys loaded in a permuted order, one store per RM; %d iterations "
               "outside any transaction, then %u range reads of %u keys in 1PC branches at",
               SCAN_KEYS, SCAN_ITERATIONS, SCAN_READS, SCAN_RANGE);
        for (int i = 0; i < SCAN_THREAD_POINTS; i++)
            printf("%s %d thread%s", i == 0 ? "" : " and", g_scan_threads[i],
                   g_scan_threads[i] == 1 ? "" : "s");
        printf(":\n");
        point++;
        if (point % 2 == 1) {
            measure_scan(RM_MMXA, point, &scan_iter[0], scan_rr[0]);
            measure_scan(RM_BDB, point, &scan_iter[1], scan_rr[1]);
        } else {
            measure_scan(RM_BDB, point, &scan_iter[1], scan_rr[1]);
            measure_scan(RM_MMXA, point, &scan_iter[0], scan_rr[0]);
        }
    }

    read_mem(&end_mem);
    rm_rf(g_root);
    g_root[0] = '\0';

    /* The tables, in Markdown: the transaction points, then the scan points. */
    if (g_only & ~G_SCAN) {
        printf("\n| point | threads | mmxa tps | mmxa p50 µs | mmxa p99 µs | BDB tps "
               "| BDB p50 µs | BDB p99 µs | mmxa/BDB |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for (int mode = 0; mode < 2; mode++) {
        for (int i = 0; i < g_nthreads; i++) {
            const struct result *a = &mm[mode][i], *b = &bdb[mode][i];
            char a50[32], a99[32], b50[32], b99[32];
            if (!a->valid || !b->valid)
                continue;
            fmt_us(a50, sizeof a50, a->p50_us);
            fmt_us(a99, sizeof a99, a->p99_us);
            fmt_us(b50, sizeof b50, b->p50_us);
            fmt_us(b99, sizeof b99, b->p99_us);
            printf("| %s | %d | %.0f | %s | %s | %.0f | %s | %s | %.2f× |\n",
                   mode == 0 ? "2PC" : "1PC", g_threads[i], a->tps, a50, a99, b->tps, b50, b99,
                   b->tps > 0 ? a->tps / b->tps : 0.0);
        }
        if (mode == 0 && mp_mm.valid && mp_bdb.valid) {
            const struct result *a = &mp_mm, *b = &mp_bdb;
            char a50[32], a99[32], b50[32], b99[32];
            fmt_us(a50, sizeof a50, a->p50_us);
            fmt_us(a99, sizeof a99, a->p99_us);
            fmt_us(b50, sizeof b50, b->p50_us);
            fmt_us(b99, sizeof b99, b->p99_us);
            printf("| 2PC, %d processes × %d threads, one store (BDB: one environment; retries "
                   "%" PRIu64 ") | %d×%d | %.0f | %s | %s | %.0f | %s | %s | %.2f× |\n",
                   g_mp_procs, g_mp_threads, b->retries, g_mp_procs, g_mp_threads, a->tps, a50,
                   a99, b->tps, b50, b99, b->tps > 0 ? a->tps / b->tps : 0.0);
        }
    }
    for (int mode = 0; mode < RMW_MODES; mode++) {
        for (int i = 0; i < g_nthreads; i++) {
            const struct result *a = &rmw_mm[mode][i], *b = &rmw_bdb[mode][i];
            char a50[32], a99[32], b50[32], b99[32];
            if (!a->valid || !b->valid)
                continue;
            fmt_us(a50, sizeof a50, a->p50_us);
            fmt_us(a99, sizeof a99, a->p99_us);
            fmt_us(b50, sizeof b50, b->p50_us);
            fmt_us(b99, sizeof b99, b->p99_us);
            printf("| RMW %s (retries: mmxa %" PRIu64 ", BDB %" PRIu64
                   ") | %d | %.0f | %s | %s | %.0f | %s | %s | %.2f× |\n",
                   mode == 0 ? "2PC" : "1PC", a->retries, b->retries,
                   g_threads[i], a->tps, a50, a99, b->tps, b50, b99,
                   b->tps > 0 ? a->tps / b->tps : 0.0);
        }
    }
    for (int i = 0; i < g_nthreads; i++) {
        char p50[32], p99[32];
        if (!probe[i].valid)
            continue;
        fmt_us(p50, sizeof p50, probe[i].p50_us);
        fmt_us(p99, sizeof p99, probe[i].p99_us);
        printf("| raw probe: 128 B append + fdatasync, group commit (records/s) | %d | %.0f | %s "
               "| %s | | | | 2PC ceiling ≈ %.0f tps |\n",
               g_threads[i], probe[i].tps, p50, p99, probe[i].tps / 2.0);
    }
    if (none.valid) {
        char p50[32], p99[32];
        fmt_us(p50, sizeof p50, none.p50_us);
        fmt_us(p99, sizeof p99, none.p99_us);
        printf("| mmxa sync=none, 2PC: CPU %.1f µs/branch (%.1f user, %.1f system) | 1 | %.0f "
               "| %s | %s | | | | |\n",
               none.cpu_us_per_branch, none.user_us_per_branch, none.sys_us_per_branch,
               none.tps, p50, p99);
    }
    if (none2.valid) {
        char p50[32], p99[32];
        fmt_us(p50, sizeof p50, none2.p50_us);
        fmt_us(p99, sizeof p99, none2.p99_us);
        printf("| mmxa sync=none, 2PC, second process (the first keeps the store open, idle: "
               "%.1f ms CPU): CPU %.1f µs/branch (%.1f user, %.1f system), %.2f× the first "
               "| 1 | %.0f | %s | %s | | | | |\n",
               none2.other_cpu_ms, none2.cpu_us_per_branch, none2.user_us_per_branch,
               none2.sys_us_per_branch,
               none.cpu_us_per_branch > 0 ? none2.cpu_us_per_branch / none.cpu_us_per_branch
                                          : 0.0,
               none2.tps, p50, p99);
    }
    if (scan_iter[0].valid && scan_iter[1].valid) {
        const struct result *a = &scan_iter[0], *b = &scan_iter[1];
        printf("\n| scan point | threads | mmxa rate | mmxa µs | mmxa p99 µs | BDB rate "
               "| BDB µs | BDB p99 µs | mmxa/BDB |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        printf("| iterate %u keys in key order, outside any transaction, median of %d (rate: "
               "keys/s; µs: per key) | 1 | %.0f | %.3f | | %.0f | %.3f | | %.2f× |\n",
               SCAN_KEYS, SCAN_ITERATIONS, a->tps, a->p50_us, b->tps, b->p50_us,
               b->tps > 0 ? a->tps / b->tps : 0.0);
        for (int i = 0; i < SCAN_THREAD_POINTS; i++) {
            char a50[32], a99[32], b50[32], b99[32];
            a = &scan_rr[0][i];
            b = &scan_rr[1][i];
            fmt_us(a50, sizeof a50, a->p50_us);
            fmt_us(a99, sizeof a99, a->p99_us);
            fmt_us(b50, sizeof b50, b->p50_us);
            fmt_us(b99, sizeof b99, b->p99_us);
            if (i == 0)
                printf("| range read: %u keys from a random key in a 1PC XA branch, "
                       "serializable (rate: reads/s; µs: p50 per read)", SCAN_RANGE);
            else
                printf("| range read");
            printf(" | %d | %.0f | %s | %s | %.0f | %s | %s | %.2f× |\n", g_scan_threads[i],
                   a->tps, a50, a99, b->tps, b50, b99, b->tps > 0 ? a->tps / b->tps : 0.0);
        }
        a = &scan_rr[0][SCAN_BOUNDED];
        if (a->valid) {
            char a50[32], a99[32];
            fmt_us(a50, sizeof a50, a->p50_us);
            fmt_us(a99, sizeof a99, a->p99_us);
            printf("| range read, mmxa with an upper bound (hi: the key %u after the start, "
                   "exclusive; read to MMXA_NOTFOUND) | 1 | %.0f | %s | %s | | | | %.2f× BDB's "
                   "1-thread range read |\n", SCAN_RANGE, a->tps, a50, a99,
                   scan_rr[1][0].tps > 0 ? a->tps / scan_rr[1][0].tps : 0.0);
        }
    }
    if (mp_mm.valid && mp_bdb.valid) {
        const struct result *in = NULL;
        for (int i = 0; i < g_nthreads; i++)
            if (g_threads[i] == g_mp_procs * g_mp_threads && mm[0][i].valid)
                in = &mm[0][i];
        printf("\nMany processes: mmxa %d×%d: %.0f tps, ", g_mp_procs, g_mp_threads, mp_mm.tps);
        if (in != NULL)
            printf("%.0f%% of its 1×%d in-process 2PC (%.0f tps)", 100.0 * mp_mm.tps / in->tps,
                   g_mp_procs * g_mp_threads, in->tps);
        else
            printf("no 1×%d in-process 2PC point in this run", g_mp_procs * g_mp_threads);
        printf("; %.2f× Berkeley DB's %d processes (%.0f tps).\n",
               mp_bdb.tps > 0 ? mp_mm.tps / mp_bdb.tps : 0.0, g_mp_procs, mp_bdb.tps);
    }
    printf("\nTotal run time %.0f s; peak RSS (VmHWM) at the end %.1f MiB; load average %s.\n",
           (double)(now_ns(CLOCK_MONOTONIC) - run_start) / 1e9, end_mem.hwm_kb / 1024.0,
           loadavg());
    return 0;
}
