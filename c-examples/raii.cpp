// C++ RAII wrappers over an mmxa branch and over a local transaction, used for small transfers.
//
// `Store` opens an rmid in the calling thread (xa_open) and closes it when it goes out of scope.
// `Branch` starts a branch in its constructor (xa_start) and must be finished with commit() or
// rollback(); if it is destroyed unfinished — an exception, an early return — its destructor
// rolls the branch back. Destructors never throw. One store, one-phase commit; prepare() makes
// commit() two-phase, as a TM coordinating several stores would do.
// `LocalTxn` is a local transaction (mmxa_txn_begin): no TM, no XID, the same locks and
// isolation as a branch; commit() or rollback() finish it, its destructor rolls back an
// unfinished one. promote() hands it over to an XA branch (a `Branch` built from it), which is
// then finished through the switch like any other.
// `Scan` is a cursor (mmxa_cursor_open) read with a range-for and closed by its destructor:
// inside the thread's branch or local transaction it sees that transaction's own writes,
// outside it reads committed data.
//
// Usage: raii DATA_DIR      (prints the balances before and after each step)
// Build: c++ -std=c++11 -I include c-examples/raii.cpp -L target/release -lmmxa

#include "xa.h"
#include "mmxa.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <stdexcept>
#include <string>

namespace {

// An XA or data-API failure, with mmxa's message.
class Error : public std::runtime_error {
  public:
    Error(const std::string &what, int code)
        : std::runtime_error(what + " failed with " + std::to_string(code) + ": " +
                             mmxa_last_error()),
          code_(code)
    {
    }
    int code() const { return code_; }

  private:
    int code_;
};

// The business rule the transfer enforces.
class InsufficientFunds : public std::runtime_error {
  public:
    InsufficientFunds() : std::runtime_error("insufficient funds") {}
};

// An rmid open in this thread; its keys hold decimal balances.
class Store {
  public:
    Store(int rmid, const std::string &info) : rmid_(rmid), info_(info)
    {
        int rc = mmxa_switch.xa_open_entry(&info_[0], rmid_, TMNOFLAGS);
        if (rc != XA_OK)
            throw Error("xa_open(" + info_ + ")", rc);
    }
    ~Store() { mmxa_switch.xa_close_entry(&info_[0], rmid_, TMNOFLAGS); }
    Store(const Store &) = delete;
    Store &operator=(const Store &) = delete;

    int rmid() const { return rmid_; }

    // The balance under `key`, or `missing` if there is none. Balances are read to be written
    // back changed, so inside a branch the read locks the key exclusively at once.
    long balance(const std::string &key, long missing = -1) const
    {
        char buf[32];
        size_t len = 0;
        int rc = mmxa_get_for_update(rmid_, key.data(), key.size(), buf, sizeof buf - 1, &len);
        if (rc == MMXA_NOTFOUND)
            return missing;
        if (rc != MMXA_OK)
            throw Error("mmxa_get_for_update(" + key + ")", rc);
        buf[len] = '\0';
        return std::strtol(buf, nullptr, 10);
    }

    void set_balance(const std::string &key, long value)
    {
        std::string v = std::to_string(value);
        int rc = mmxa_put(rmid_, key.data(), key.size(), v.data(), v.size());
        if (rc != MMXA_OK)
            throw Error("mmxa_put(" + key + ")", rc);
    }

  private:
    int rmid_;
    std::string info_;
};

// The keys of a store between `lo` (inclusive) and `hi` (exclusive) in byte order, an empty
// bound being open; `flags` as mmxa_cursor_open takes them (MMXA_SCAN_REVERSE,
// MMXA_SCAN_PREFIX, ...). Single pass: `for (const Scan::Entry &e : Scan(store, "a", "m"))`,
// or in C++17 `for (const auto &[key, value] : Scan(store, "a", "m"))`.
// Opened in the thread's branch or local transaction, it belongs to it (see mmxa.h); an
// error while reading throws, and the destructor closes the cursor either way.
class Scan {
  public:
    struct Entry {
        std::string key, value;
    };

    Scan(const Store &store, const std::string &lo, const std::string &hi, long flags = 0)
    {
        int rc = mmxa_cursor_open(store.rmid(), lo.data(), lo.size(), hi.data(), hi.size(),
                                  flags, &id_);
        if (rc != MMXA_OK)
            throw Error("mmxa_cursor_open", rc);
    }
    ~Scan() { mmxa_cursor_close(id_); }
    Scan(const Scan &) = delete;
    Scan &operator=(const Scan &) = delete;

    class iterator {
      public:
        explicit iterator(Scan *scan) : scan_(scan) {}
        const Entry &operator*() const { return scan_->entry_; }
        const Entry *operator->() const { return &scan_->entry_; }
        iterator &operator++()
        {
            if (!scan_->next())
                scan_ = nullptr;
            return *this;
        }
        bool operator==(const iterator &o) const { return scan_ == o.scan_; }
        bool operator!=(const iterator &o) const { return scan_ != o.scan_; }

      private:
        Scan *scan_; // nullptr: past the last entry
    };

    iterator begin() { return ++iterator(this); }
    iterator end() { return iterator(nullptr); }

  private:
    // Reads the next entry into entry_; false at the end. A buffer too small leaves the entry
    // next (MMXA_EBUFSIZE, with the lengths it needs): grow and ask again.
    bool next()
    {
        for (;;) {
            entry_.key.resize(key_cap_);
            entry_.value.resize(value_cap_);
            size_t key_len = 0, value_len = 0;
            int rc = mmxa_cursor_next(id_, &entry_.key[0], key_cap_, &key_len,
                                      &entry_.value[0], value_cap_, &value_len);
            if (rc == MMXA_OK) {
                entry_.key.resize(key_len);
                entry_.value.resize(value_len);
                return true;
            }
            if (rc == MMXA_NOTFOUND)
                return false;
            if (rc != MMXA_EBUFSIZE)
                throw Error("mmxa_cursor_next", rc);
            key_cap_ = std::max(key_cap_, key_len);
            value_cap_ = std::max(value_cap_, value_len);
        }
    }

    uint64_t id_ = 0;
    size_t key_cap_ = 16, value_cap_ = 4; // small, to show the growing
    Entry entry_;
};

XID make_xid(const std::string &gtrid, const std::string &bqual)
{
    XID xid;
    std::memset(&xid, 0, sizeof xid);
    xid.formatID = 0x52414949; // "RAII"
    xid.gtrid_length = static_cast<long>(gtrid.size());
    xid.bqual_length = static_cast<long>(bqual.size());
    std::memcpy(xid.data, gtrid.data(), gtrid.size());
    std::memcpy(xid.data + gtrid.size(), bqual.data(), bqual.size());
    return xid;
}

// A local transaction on one store, in this thread.
class LocalTxn {
  public:
    explicit LocalTxn(Store &store) : rmid_(store.rmid())
    {
        int rc = mmxa_txn_begin(rmid_);
        if (rc != MMXA_OK)
            throw Error("mmxa_txn_begin", rc);
    }

    // Rolls back a transaction that was neither committed, rolled back nor promoted.
    ~LocalTxn()
    {
        if (!open_)
            return;
        mmxa_txn_rollback(rmid_);
        std::printf("  (local transaction rolled back by ~LocalTxn)\n");
    }
    LocalTxn(const LocalTxn &) = delete;
    LocalTxn &operator=(const LocalTxn &) = delete;

    // One durable record; afterwards the thread has no local transaction open, whatever the
    // answer (MMXA_EROLLBACK: it was rolled back).
    void commit()
    {
        open_ = false;
        int rc = mmxa_txn_commit(rmid_);
        if (rc != MMXA_OK)
            throw Error("mmxa_txn_commit", rc);
    }

    void rollback()
    {
        open_ = false;
        int rc = mmxa_txn_rollback(rmid_);
        if (rc != MMXA_OK)
            throw Error("mmxa_txn_rollback", rc);
    }

    // Makes it the branch `xid`, associated with this thread as after xa_start; from then on the
    // branch is finished through the switch and this object no longer rolls it back. On
    // XAER_DUPID it stays a local transaction (and open); on XA_RB* it was rolled back.
    void promote(const XID &xid)
    {
        int rc = mmxa_txn_promote(rmid_, &xid);
        if (rc == XA_OK || (rc >= XA_RBBASE && rc <= XA_RBEND))
            open_ = false;
        if (rc != XA_OK)
            throw Error("mmxa_txn_promote", rc);
    }

  private:
    int rmid_;
    bool open_ = true;
};

// A branch of a global transaction on one store, associated with this thread.
class Branch {
  public:
    Branch(Store &store, const std::string &gtrid, const std::string &bqual)
        : rmid_(store.rmid()), xid_(make_xid(gtrid, bqual))
    {
        int rc = mmxa_switch.xa_start_entry(&xid_, rmid_, TMNOFLAGS);
        if (rc != XA_OK)
            throw Error("xa_start", rc);
    }

    // The branch a local transaction becomes when promoted: its writes and locks are the
    // branch's, which this object now finishes (or rolls back when destroyed unfinished).
    Branch(Store &store, LocalTxn &txn, const std::string &gtrid, const std::string &bqual)
        : rmid_(store.rmid()), xid_(make_xid(gtrid, bqual))
    {
        txn.promote(xid_);
    }

    // Rolls back a branch that was neither committed nor rolled back.
    ~Branch()
    {
        if (state_ == State::Done)
            return;
        if (state_ == State::Active)
            mmxa_switch.xa_end_entry(&xid_, rmid_, TMFAIL);
        mmxa_switch.xa_rollback_entry(&xid_, rmid_, TMNOFLAGS);
        std::printf("  (branch rolled back by ~Branch)\n");
    }
    Branch(const Branch &) = delete;
    Branch &operator=(const Branch &) = delete;

    // First phase: ends the association and prepares. commit() is then two-phase.
    void prepare()
    {
        end_association();
        int rc = mmxa_switch.xa_prepare_entry(&xid_, rmid_, TMNOFLAGS);
        if (rc == XA_RDONLY) { // nothing written: the branch is already finished
            state_ = State::Done;
            return;
        }
        if (rc != XA_OK)
            throw Error("xa_prepare", rc); // the destructor rolls back what is left
        state_ = State::Prepared;
    }

    void commit()
    {
        if (state_ == State::Done)
            return;
        long flags = TMNOFLAGS;
        if (state_ == State::Active) {
            end_association();
            flags = TMONEPHASE;
        }
        int rc = mmxa_switch.xa_commit_entry(&xid_, rmid_, flags);
        if (rc != XA_OK) {
            if (rc >= XA_RBBASE && rc <= XA_RBEND)
                state_ = State::Done; // rolled back by the RM
            throw Error("xa_commit", rc);
        }
        state_ = State::Done;
    }

    void rollback()
    {
        if (state_ == State::Active)
            mmxa_switch.xa_end_entry(&xid_, rmid_, TMFAIL);
        state_ = State::Done;
        int rc = mmxa_switch.xa_rollback_entry(&xid_, rmid_, TMNOFLAGS);
        if (rc != XA_OK)
            throw Error("xa_rollback", rc);
    }

  private:
    enum class State { Active, Ended, Prepared, Done };

    void end_association()
    {
        if (state_ != State::Active)
            return;
        int rc = mmxa_switch.xa_end_entry(&xid_, rmid_, TMSUCCESS);
        state_ = State::Ended;
        if (rc != XA_OK)
            throw Error("xa_end", rc);
    }

    int rmid_;
    XID xid_;
    State state_ = State::Active;
};

void show(const char *when, const Store &s)
{
    std::printf("%s: alice = %ld, bob = %ld\n", when, s.balance("alice"), s.balance("bob"));
}

// The accounts in [lo, hi) (all by default) as a cursor of this thread sees them.
void list(const char *when, const Store &s, const std::string &lo = "",
          const std::string &hi = "", long flags = 0)
{
    std::string out;
    for (const Scan::Entry &e : Scan(s, lo, hi, flags))
        out += (out.empty() ? "" : ", ") + e.key + " = " + e.value;
    std::printf("%s: %s\n", when, out.c_str());
}

// Moves `amount` from alice to bob in the thread's branch or local transaction; throws on
// overdraft, after writing, so that the caller's destructor has writes to roll back.
void move(Store &store, long amount)
{
    long alice = store.balance("alice");
    long bob = store.balance("bob");
    store.set_balance("alice", alice - amount);
    store.set_balance("bob", bob + amount);
    if (alice - amount < 0)
        throw InsufficientFunds();
}

// A transfer in one branch; on overdraft ~Branch rolls both writes back.
void transfer(Store &store, const std::string &gtrid, long amount)
{
    Branch branch(store, gtrid, "1");
    move(store, amount);
    branch.commit();
}

// The same without a TM, in a local transaction; on overdraft ~LocalTxn rolls it back.
void local_transfer(Store &store, long amount)
{
    LocalTxn txn(store);
    move(store, amount);
    txn.commit();
}

} // namespace

int main(int argc, char **argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    try {
        Store store(1, std::string("dir=") + argv[1]);
        if (store.balance("alice") < 0) { // first run: one-operation writes, durable at once
            store.set_balance("alice", 100);
            store.set_balance("bob", 50);
        }
        show("before", store);
        list("accounts", store);

        transfer(store, "raii-transfer-30", 30);
        show("after transfer of 30 (committed)", store);

        try {
            transfer(store, "raii-transfer-1000", 1000);
        } catch (const InsufficientFunds &e) {
            std::printf("transfer of 1000: %s\n", e.what());
        }
        show("after transfer of 1000 (rolled back)", store);

        {
            // Two-phase: prepare, then commit, as a TM with several stores would.
            Branch branch(store, "raii-two-phase", "1");
            store.set_balance("bob", store.balance("bob") + 1);
            branch.prepare();
            branch.commit();
        }
        show("after a two-phase bonus of 1 for bob", store);

        local_transfer(store, 10);
        show("after a local transfer of 10 (committed)", store);

        try {
            local_transfer(store, 5000);
        } catch (const InsufficientFunds &e) {
            std::printf("local transfer of 5000: %s\n", e.what());
        }
        show("after a local transfer of 5000 (rolled back)", store);

        {
            // Begun locally; the work turns out to need a global transaction (another store, a
            // TM): promote it and finish it as a branch, two-phase.
            LocalTxn txn(store);
            store.set_balance("bob", store.balance("bob") + 2);
            Branch branch(store, txn, "raii-promoted", "1");
            branch.prepare();
            branch.commit();
        }
        show("after a promoted bonus of 2 for bob", store);

        {
            // A cursor inside a local transaction sees its writes: carol's new account, listed
            // in key order, then from "b" up, last first; rolled back, it is gone.
            LocalTxn txn(store);
            store.set_balance("carol", 1000);
            list("accounts in a local transaction opening carol's", store);
            list("  from b, last first", store, "b", "", MMXA_SCAN_REVERSE);
            txn.rollback();
        }
        list("accounts after its rollback", store);
        list("accounts from a to b", store, "a", "b");

        {
            // A cursor belongs to the transaction it was opened in: read after that ended, it
            // throws (MMXA_EPROTO), and its destructor still closes it.
            LocalTxn txn(store);
            Scan scan(store, "", "");
            txn.commit();
            try {
                for (const Scan::Entry &e : scan)
                    std::printf("unexpected: %s\n", e.key.c_str());
            } catch (const Error &e) {
                std::printf("a cursor read after its transaction: %s\n", e.what());
            }
        }
    } catch (const std::exception &e) {
        std::printf("error: %s\n", e.what());
        return 1;
    }
    return 0;
}
