//! Exclusive key locks held by branches until they end.
//!
//! Owns: who holds which key, who waits for whom, lock-wait timeouts and deadlock detection.
//! Invariants: a key has at most one owner; an owner re-locking its own key succeeds at once
//! (threads joined to one branch share its locks); a wait that would close a cycle in the
//! waits-for graph fails at once with [`LockError::Deadlock`] instead of waiting.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Who holds a lock: a branch's tag, or a unique number for a one-operation transaction.
pub type Owner = u64;

/// Why a lock was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// The key stayed locked for the whole timeout.
    Timeout,
    /// Waiting would deadlock.
    Deadlock,
    /// The waiter's branch was rolled back while it waited.
    Aborted,
}

#[derive(Default)]
struct Table {
    holder: HashMap<Vec<u8>, Owner>,
    held: HashMap<Owner, Vec<Vec<u8>>>,
    /// One (waiter, holder) edge per waiting thread.
    waits: Vec<(Owner, Owner)>,
}

impl Table {
    /// Whether `from` (transitively) waits for `to`.
    fn reaches(&self, from: Owner, to: Owner) -> bool {
        let mut stack = vec![from];
        let mut seen = vec![from];
        while let Some(o) = stack.pop() {
            if o == to {
                return true;
            }
            for &(w, h) in &self.waits {
                if w == o && !seen.contains(&h) {
                    seen.push(h);
                    stack.push(h);
                }
            }
        }
        false
    }
}

/// The lock table of one store.
#[derive(Default)]
pub struct LockTable {
    table: Mutex<Table>,
    changed: Condvar,
}

impl LockTable {
    /// An empty table.
    pub fn new() -> LockTable {
        LockTable::default()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the table cannot leave it half-updated (every update is a
        // single map operation), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks `key` for `owner`, waiting up to `timeout` for another owner to release it.
    /// `aborted` is checked while waiting: once it says true the wait ends with `Aborted`.
    pub fn lock(
        &self,
        owner: Owner,
        key: &[u8],
        timeout: Duration,
        aborted: &dyn Fn() -> bool,
    ) -> Result<(), LockError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut t = self.table();
        loop {
            if aborted() {
                return Err(LockError::Aborted);
            }
            let holder = match t.holder.get(key) {
                None => {
                    t.holder.insert(key.to_vec(), owner);
                    t.held.entry(owner).or_default().push(key.to_vec());
                    return Ok(());
                }
                Some(&h) if h == owner => return Ok(()),
                Some(&h) => h,
            };
            if t.reaches(holder, owner) {
                return Err(LockError::Deadlock);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Err(LockError::Timeout);
            }
            t.waits.push((owner, holder));
            t = self
                .changed
                .wait_timeout(t, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            if let Some(i) = t.waits.iter().position(|&e| e == (owner, holder)) {
                t.waits.swap_remove(i);
            }
        }
    }

    /// Locks `key` for `owner` only if nobody else holds it (recovery of prepared branches).
    pub fn lock_now(&self, owner: Owner, key: &[u8]) -> bool {
        let mut t = self.table();
        match t.holder.get(key) {
            Some(&h) => h == owner,
            None => {
                t.holder.insert(key.to_vec(), owner);
                t.held.entry(owner).or_default().push(key.to_vec());
                true
            }
        }
    }

    /// Releases every lock of `owner` and wakes all waiters.
    pub fn release_all(&self, owner: Owner) {
        let mut t = self.table();
        if let Some(keys) = t.held.remove(&owner) {
            for k in keys {
                t.holder.remove(&k);
            }
        }
        drop(t);
        self.changed.notify_all();
    }

    /// Hands every lock of `from` to `to` at once (a prepared branch that changes its tag).
    pub fn transfer(&self, from: Owner, to: Owner) {
        let mut t = self.table();
        if let Some(keys) = t.held.remove(&from) {
            for k in &keys {
                t.holder.insert(k.clone(), to);
            }
            t.held.entry(to).or_default().extend(keys);
        }
        // Waiters keep their edges to `from` until they wake (below) and look again.
        drop(t);
        self.changed.notify_all();
    }

    /// Wakes all waiters so they re-check their abort condition.
    /// How many lock requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.table().waits.len()
    }

    pub fn wake_all(&self) {
        self.changed.notify_all();
    }

    /// The owner of `key`, if locked.
    pub fn holder(&self, key: &[u8]) -> Option<Owner> {
        self.table().holder.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;

    const NEVER: &dyn Fn() -> bool = &|| false;

    #[test]
    fn exclusive_and_reentrant() {
        let t = LockTable::new();
        t.lock(1, b"k", Duration::ZERO, NEVER).unwrap();
        t.lock(1, b"k", Duration::ZERO, NEVER).unwrap();
        assert_eq!(
            t.lock(2, b"k", Duration::ZERO, NEVER),
            Err(LockError::Timeout)
        );
        assert_eq!(t.holder(b"k"), Some(1));
        t.release_all(1);
        t.lock(2, b"k", Duration::ZERO, NEVER).unwrap();
        assert!(!t.lock_now(3, b"k"));
        assert!(t.lock_now(3, b"j"));
    }

    #[test]
    fn waiter_gets_the_lock_when_released() {
        let t = Arc::new(LockTable::new());
        t.lock(1, b"k", Duration::ZERO, NEVER).unwrap();
        let t2 = t.clone();
        let waiter = thread::spawn(move || t2.lock(2, b"k", Duration::from_secs(30), NEVER));
        while t.table().waits.is_empty() {
            thread::yield_now();
        }
        t.release_all(1);
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert_eq!(t.holder(b"k"), Some(2));
    }

    #[test]
    fn cycle_is_a_deadlock_at_once() {
        let t = Arc::new(LockTable::new());
        t.lock(1, b"a", Duration::ZERO, NEVER).unwrap();
        t.lock(2, b"b", Duration::ZERO, NEVER).unwrap();
        let t2 = t.clone();
        // 1 waits for b (held by 2) ...
        let waiter = thread::spawn(move || t2.lock(1, b"b", Duration::from_secs(30), NEVER));
        while t.table().waits.is_empty() {
            thread::yield_now();
        }
        // ... so 2 waiting for a (held by 1) closes the cycle.
        assert_eq!(
            t.lock(2, b"a", Duration::from_secs(30), NEVER),
            Err(LockError::Deadlock)
        );
        t.release_all(2);
        assert_eq!(waiter.join().unwrap(), Ok(()));
    }

    #[test]
    fn abort_ends_a_wait() {
        let t = Arc::new(LockTable::new());
        t.lock(1, b"k", Duration::ZERO, NEVER).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let (t2, f2) = (t.clone(), flag.clone());
        let waiter = thread::spawn(move || {
            t2.lock(2, b"k", Duration::from_secs(30), &|| {
                f2.load(Ordering::SeqCst)
            })
        });
        while t.table().waits.is_empty() {
            thread::yield_now();
        }
        flag.store(true, Ordering::SeqCst);
        t.wake_all();
        assert_eq!(waiter.join().unwrap(), Err(LockError::Aborted));
    }
}
