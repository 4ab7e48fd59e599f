// A C++ RAII wrapper over an mmxa branch, used for a small transfer.
//
// `Store` opens an rmid in the calling thread (xa_open) and closes it when it goes out of scope.
// `Branch` starts a branch in its constructor (xa_start) and must be finished with commit() or
// rollback(); if it is destroyed unfinished — an exception, an early return — its destructor
// rolls the branch back. Destructors never throw. One store, one-phase commit; prepare() makes
// commit() two-phase, as a TM coordinating several stores would do.
//
// Usage: raii DATA_DIR      (prints the balances before and after each step)
// Build: c++ -std=c++11 -I include c-examples/raii.cpp -L target/release -lmmxa

#include "xa.h"
#include "mmxa.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// A branch of a global transaction on one store, associated with this thread.
class Branch {
  public:
    Branch(Store &store, const std::string &gtrid, const std::string &bqual)
        : rmid_(store.rmid())
    {
        std::memset(&xid_, 0, sizeof xid_);
        xid_.formatID = 0x52414949; // "RAII"
        xid_.gtrid_length = static_cast<long>(gtrid.size());
        xid_.bqual_length = static_cast<long>(bqual.size());
        std::memcpy(xid_.data, gtrid.data(), gtrid.size());
        std::memcpy(xid_.data + gtrid.size(), bqual.data(), bqual.size());
        int rc = mmxa_switch.xa_start_entry(&xid_, rmid_, TMNOFLAGS);
        if (rc != XA_OK)
            throw Error("xa_start", rc);
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

// Moves `amount` from alice to bob in one branch; throws (and so rolls back) on overdraft.
void transfer(Store &store, const std::string &gtrid, long amount)
{
    Branch branch(store, gtrid, "1");
    long alice = store.balance("alice");
    long bob = store.balance("bob");
    store.set_balance("alice", alice - amount);
    store.set_balance("bob", bob + amount);
    if (alice - amount < 0)
        throw InsufficientFunds(); // ~Branch rolls both writes back
    branch.commit();
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
    } catch (const std::exception &e) {
        std::printf("error: %s\n", e.what());
        return 1;
    }
    return 0;
}
