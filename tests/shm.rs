//! The shared-region primitives (`mmxa::shm`) across real processes: children (this test binary
//! re-executed, see `shm_child`) killed with SIGKILL while they hold the region mutex or a
//! slot, two processes growing one region in turn, and the "open" lock protocol.
//!
//! The crash points inside a section (after journaling, after writing, after an allocation,
//! during growth, during a repair) are instrumented in the unit tests (`src/shm/tests.rs`);
//! here the kills land wherever the child happens to be, through the public API only.

use mmxa::shm::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const ENV_ROLE: &str = "MMXA_SHM_TEST_ROLE";
const ENV_DIR: &str = "MMXA_SHM_TEST_DIR";
const MARK: &str = "@@shm ";

// ---- children -----------------------------------------------------------------------------

/// A re-executed child, talking in lines; SIGKILLed and reaped if still running at drop.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(role: &str, dir: &Path) -> Peer {
        Peer::spawn_with(role, dir, &[])
    }

    fn spawn_with(role: &str, dir: &Path, env: &[(&str, &str)]) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "shm_child", "--nocapture", "--test-threads=1"])
            .env(ENV_ROLE, role)
            .env(ENV_DIR, dir)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                // The harness may print "test shm_child ... " in front.
                if let Some((_, m)) = l.split_once(MARK) {
                    if tx.send(m.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Peer {
            child,
            stdin,
            lines,
        }
    }

    fn recv(&self) -> String {
        self.lines
            .recv_timeout(LINE_TIMEOUT)
            .expect("a line from the child")
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.recv()
    }

    fn sigkill(&mut self) {
        // SAFETY: a plain syscall; the child is not reaped yet, so its pid is still ours.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0);
        let status = self.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    /// Closes its stdin and waits for it to exit by itself.
    fn finish(mut self) {
        self.stdin = None;
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `sigkill`.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

fn say(line: &str) {
    println!("{MARK}{line}");
}

fn region_path(dir: &Path) -> PathBuf {
    dir.join("region")
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join("mmxa.lock")
}

/// Not a test by itself: the children's side (does nothing unless re-executed).
#[test]
fn shm_child() {
    let Ok(role) = std::env::var(ENV_ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(ENV_DIR).unwrap());
    let stdin = std::io::stdin();
    let mut commands = stdin.lock().lines().map_while(Result::ok);
    match role.as_str() {
        // Holds the mutex in the middle of a section until killed.
        "hold" => {
            let r = Region::open(&region_path(&dir)).unwrap();
            let mut t = r.lock(T).unwrap();
            t.set_u64(root(1), 99).unwrap();
            let b = t.alloc(1000).unwrap();
            t.init_bytes(b, &[7; 1000]).unwrap();
            t.set_u64(root(2), b).unwrap();
            let x = t.get_u64(root(0)).unwrap();
            t.set_bytes(x, &[0xee; 32]).unwrap();
            say("holding");
            std::thread::sleep(Duration::from_secs(3600));
        }
        // Opens the store, claims a slot, and holds it until killed or told to leave.
        "slot" => {
            let lf = LockFile::open(&lock_path(&dir), 0o600).unwrap();
            let r = match lf
                .open_or_recover(&region_path(&dir), 0o600, Options::default(), T)
                .unwrap()
            {
                Opened::Attached(r) => r,
                Opened::Fresh(_) => panic!("the parent has the store open"),
            };
            let s = lf.claim_slot(&r, T, |_, _| Ok(())).unwrap();
            say(&format!("slot {} {}", s.index, s.generation));
            for c in commands.by_ref() {
                if c == "release" {
                    lf.release_slot(&r, T).unwrap();
                    say("released");
                }
            }
        }
        // Allocates growing blocks when told, and checks the other process's.
        "grow" => {
            let r = Region::open(&region_path(&dir)).unwrap();
            for c in commands.by_ref() {
                let (verb, i) = c.split_once(' ').unwrap();
                let i: usize = i.parse().unwrap();
                match verb {
                    "alloc" => {
                        let mut t = r.lock(T).unwrap();
                        let (b, len) = grow_alloc(&mut t, i);
                        t.set_u64(root(i), b).unwrap();
                        t.set_u64(root(i + 32), len).unwrap();
                        t.commit().unwrap();
                        say(&format!("size {}", r.size()));
                    }
                    "check" => {
                        let t = r.lock(T).unwrap();
                        let ok = check_grown(&t, i);
                        t.commit().unwrap();
                        say(if ok { "ok" } else { "bad" });
                    }
                    _ => panic!("{c}"),
                }
            }
        }
        // The open protocol: fresh (build root 0 = pid, publish) or attached; then waits.
        "open" => {
            let lf = LockFile::open(&lock_path(&dir), 0o600).unwrap();
            let r = match lf
                .open_or_recover(&region_path(&dir), 0o600, Options::default(), T)
                .unwrap()
            {
                Opened::Fresh(r) => {
                    let mut t = r.lock_builder(T).unwrap();
                    t.set_u64(root(0), std::process::id() as u64).unwrap();
                    t.commit().unwrap();
                    if std::env::var("MMXA_SHM_SLOW_BUILD").is_ok() {
                        say("building");
                        commands.next(); // until told to finish
                    }
                    lf.finish_recovery(&r, T).unwrap();
                    say("fresh");
                    r
                }
                Opened::Attached(r) => {
                    say("attached");
                    r
                }
            };
            for c in commands.by_ref() {
                if c == "root" {
                    let t = r.lock(T).unwrap();
                    say(&t.get_u64(root(0)).unwrap().to_string());
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

// ---- tests ----------------------------------------------------------------------------------

/// Allocates a block as large as the region (so it must grow), marks its first and last bytes.
fn grow_alloc(t: &mut Txn<'_>, i: usize) -> (Off, u64) {
    let len = t.region().size();
    let b = t.alloc(len).unwrap();
    t.init_bytes(b, &[i as u8; 64]).unwrap();
    t.init_bytes(b + len - 64, &[i as u8; 64]).unwrap();
    (b, len)
}

fn check_grown(t: &Txn<'_>, i: usize) -> bool {
    let b = t.get_u64(root(i)).unwrap();
    let len = t.get_u64(root(i + 32)).unwrap();
    let mark = |at| {
        t.with_bytes(at, 64, |s| s.iter().all(|&x| x == i as u8))
            .unwrap()
    };
    mark(b) && mark(b + len - 64)
}

fn published(dir: &Path) -> Region {
    let r = Region::create(&region_path(dir), 0o600).unwrap();
    let mut t = r.lock(T).unwrap();
    let x = t.alloc(32).unwrap();
    t.init_bytes(x, &[1; 32]).unwrap();
    t.set_u64(root(0), x).unwrap();
    t.commit().unwrap();
    r.publish(T).unwrap();
    r
}

#[test]
fn shm_sigkill_while_holding_the_mutex_mid_section() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let r = published(dir.path());
    let before = {
        let t = r.lock(T).unwrap();
        let x = t.get_u64(root(0)).unwrap();
        let mut bytes = vec![0; 32];
        t.read_bytes(x, &mut bytes).unwrap();
        (t.usage().unwrap(), bytes)
    };
    let mut p = Peer::spawn("hold", dir.path());
    assert_eq!(p.recv(), "holding");
    // Held by a live (stopped) process: a timeout, never a hang.
    assert!(matches!(
        r.lock(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    p.sigkill();
    let t = r.lock(T).unwrap();
    assert!(t.repaired(), "the next owner is told");
    assert_eq!(t.get_u64(root(1)).unwrap(), 0);
    assert_eq!(t.get_u64(root(2)).unwrap(), 0);
    let x = t.get_u64(root(0)).unwrap();
    let mut bytes = vec![0; 32];
    t.read_bytes(x, &mut bytes).unwrap();
    assert_eq!((t.check_heap().unwrap(), bytes), before);
    t.commit().unwrap();
    // And the next section is an ordinary one.
    assert!(!r.lock(T).unwrap().repaired());
}

#[test]
fn shm_killed_slot_owner_is_dead_and_reaped() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let lf = LockFile::open(&lock_path(dir.path()), 0o600).unwrap();
    let r = match lf
        .open_or_recover(&region_path(dir.path()), 0o600, Options::default(), T)
        .unwrap()
    {
        Opened::Fresh(r) => r,
        Opened::Attached(_) => panic!("nobody had it open"),
    };
    lf.finish_recovery(&r, T).unwrap();
    let mut a = Peer::spawn("slot", dir.path());
    let mut b = Peer::spawn("slot", dir.path());
    let slot_of = |line: String| -> (u32, u64) {
        let mut w = line.split(' ').skip(1).map(|x| x.parse::<u64>().unwrap());
        (w.next().unwrap() as u32, w.next().unwrap())
    };
    let (sa, ga) = slot_of(a.recv());
    let (sb, _) = slot_of(b.recv());
    assert_ne!(sa, sb);
    assert!(!lf.is_dead(sa).unwrap() && !lf.is_dead(sb).unwrap());
    assert!(lf.is_dead(1000).unwrap(), "nobody holds an unused slot");
    // A clean release is not a death.
    assert_eq!(b.ask("release"), "released");
    assert!(lf.is_dead(sb).unwrap(), "byte free");
    let t = r.lock(T).unwrap();
    assert!(lf.dead_slots(&t).unwrap().is_empty(), "released, not dead");
    drop(t);
    b.finish();
    // A killed one is.
    a.sigkill();
    assert!(lf.is_dead(sa).unwrap());
    let t = r.lock(T).unwrap();
    let dead = lf.dead_slots(&t).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].index, dead[0].generation), (sa, ga));
    drop(t);
    // The next claimer of that slot reaps it in the section that takes it.
    let mut reaped = None;
    let mine = lf
        .claim_slot(&r, T, |_, d| {
            reaped = Some(d);
            Ok(())
        })
        .unwrap();
    assert_eq!(mine.index, sa.min(sb));
    if mine.index == sa {
        assert_eq!(reaped.map(|d| (d.index, d.generation)), Some((sa, ga)));
        assert_eq!(mine.generation, ga + 1);
    }
    assert!(!lf.is_dead(mine.index).unwrap(), "our own slot");
    let t = r.lock(T).unwrap();
    let dead = lf.dead_slots(&t).unwrap();
    drop(t);
    if mine.index != sa {
        // Still dead and listed: reap it by hand.
        assert_eq!(dead.len(), 1);
        let mut t = r.lock(T).unwrap();
        lf.free_dead_slot(&mut t, &dead[0]).unwrap();
        t.commit().unwrap();
    }
    assert!(lf.dead_slots(&r.lock(T).unwrap()).unwrap().is_empty());
    lf.release_slot(&r, T).unwrap();
}

#[test]
fn shm_two_processes_grow_the_region_in_turn() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let r = published(dir.path());
    let mut p = Peer::spawn("grow", dir.path());
    let mut last = r.size();
    for round in 0..3usize {
        // The child grows it...
        let i = 10 + 2 * round;
        let size: u64 = p.ask(&format!("alloc {i}"))["size ".len()..]
            .parse()
            .unwrap();
        assert!(size > last, "round {round}: {size} > {last}");
        let t = r.lock(T).unwrap();
        assert_eq!(r.mapped(), size, "mapped at lock time");
        assert!(check_grown(&t, i));
        t.commit().unwrap();
        // ...then the parent, and the child reads the parent's block.
        let j = i + 1;
        let mut t = r.lock(T).unwrap();
        let (b, len) = grow_alloc(&mut t, j);
        t.set_u64(root(j), b).unwrap();
        t.set_u64(root(j + 32), len).unwrap();
        t.commit().unwrap();
        assert!(r.size() > size);
        last = r.size();
        assert_eq!(p.ask(&format!("check {j}")), "ok");
        // A lock-free access past our mapping maps the new part.
        assert!(r.atomic_u64(b).is_ok());
    }
    r.lock(T).unwrap().check_heap().unwrap();
    p.finish();
}

#[test]
fn shm_open_lock_protocol() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    // The first opener builds; later ones attach to what it built.
    let mut a = Peer::spawn("open", dir.path());
    assert_eq!(a.recv(), "fresh");
    let mut b = Peer::spawn("open", dir.path());
    assert_eq!(b.recv(), "attached");
    let a_pid = a.child.id().to_string();
    assert_eq!(b.ask("root"), a_pid);
    // In this process too (a second open file description is like another process).
    let lf = LockFile::open(&lock_path(dir.path()), 0o600).unwrap();
    match lf
        .open_or_recover(&region_path(dir.path()), 0o600, Options::default(), T)
        .unwrap()
    {
        Opened::Attached(r) => {
            assert_eq!(
                r.lock(T).unwrap().get_u64(root(0)).unwrap().to_string(),
                a_pid
            )
        }
        Opened::Fresh(_) => panic!("others have it open"),
    }
    assert!(lf.store_open_elsewhere().unwrap());
    lf.close_store().unwrap();
    // The builder dies; the store stays open (b has it): no rebuild.
    a.sigkill();
    let mut c = Peer::spawn("open", dir.path());
    assert_eq!(c.recv(), "attached");
    assert_eq!(c.ask("root"), a_pid);
    b.finish();
    c.finish();
    // Everyone is gone: the next opener rebuilds.
    let mut d = Peer::spawn("open", dir.path());
    assert_eq!(d.recv(), "fresh");
    assert_eq!(d.ask("root"), d.child.id().to_string());
    d.finish();
    assert!(!lf.store_open_elsewhere().unwrap());
}

#[test]
fn shm_open_waits_for_a_recovery_and_takes_over_a_dead_one() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let open = |timeout| {
        let lf = LockFile::open(&lock_path(dir.path()), 0o600).unwrap();
        let res = lf.open_or_recover(&region_path(dir.path()), 0o600, Options::default(), timeout);
        (lf, res)
    };
    // A slow builder: others wait (up to their deadline), then attach once it publishes.
    let mut a = Peer::spawn_with("open", dir.path(), &[("MMXA_SHM_SLOW_BUILD", "1")]);
    assert_eq!(a.recv(), "building");
    let (_lf, res) = open(Duration::from_millis(100));
    assert!(matches!(res, Err(Error::Timeout)));
    let dir2 = dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        let lf = LockFile::open(&lock_path(&dir2), 0o600).unwrap();
        match lf.open_or_recover(&region_path(&dir2), 0o600, Options::default(), T) {
            Ok(Opened::Attached(r)) => r.lock(T).unwrap().get_u64(root(0)).unwrap(),
            Ok(Opened::Fresh(_)) => panic!("the builder is alive"),
            Err(e) => panic!("{e}"),
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    a.send("go");
    assert_eq!(a.recv(), "fresh");
    assert_eq!(waiter.join().unwrap(), a.child.id() as u64);
    a.finish();
    // A builder that dies mid-build: the next opener builds again.
    let mut b = Peer::spawn_with("open", dir.path(), &[("MMXA_SHM_SLOW_BUILD", "1")]);
    assert_eq!(b.recv(), "building");
    b.sigkill();
    let (lf, res) = open(T);
    match res.unwrap() {
        Opened::Fresh(r) => {
            assert_eq!(r.state(), STATE_BUILDING);
            lf.finish_recovery(&r, T).unwrap();
        }
        Opened::Attached(_) => panic!("nobody is left"),
    }
}

/// Costs, not pass/fail: `cargo test --release --test shm shm_bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn shm_bench() {
    use std::time::Instant;
    const N: u32 = 1_000_000;
    let r = Region::anonymous(DEFAULT_INITIAL_SIZE).unwrap();
    let mut t = r.lock(T).unwrap();
    let warm = t.alloc(64).unwrap();
    t.free(warm).unwrap();
    t.commit().unwrap();
    let time = |what: &str, f: &mut dyn FnMut(u32)| {
        for i in 0..N / 10 {
            f(i);
        }
        let start = Instant::now();
        for i in 0..N {
            f(i);
        }
        let ns = start.elapsed().as_nanos() as f64 / N as f64;
        println!("{what:<44} {ns:>7.1} ns");
    };
    time("lock + commit (empty section)", &mut |_| {
        r.lock(T).unwrap().commit().unwrap();
    });
    time("lock + 3 journaled set_u64 + commit", &mut |i| {
        let mut t = r.lock(T).unwrap();
        t.set_u64(root(0), i as u64).unwrap();
        t.set_u64(root(1), i as u64).unwrap();
        t.set_u64(root(2), i as u64).unwrap();
        t.commit().unwrap();
    });
    time("lock + alloc(64) + free + commit", &mut |_| {
        let mut t = r.lock(T).unwrap();
        let b = t.alloc(64).unwrap();
        t.free(b).unwrap();
        t.commit().unwrap();
    });
    time("lock + 3 set_u64 + rollback", &mut |i| {
        let mut t = r.lock(T).unwrap();
        t.set_u64(root(0), i as u64).unwrap();
        t.set_u64(root(1), i as u64).unwrap();
        t.set_u64(root(2), i as u64).unwrap();
        drop(t);
    });
    let b = Region::anonymous(DEFAULT_INITIAL_SIZE).unwrap();
    time("builder: lock + 3 set_u64 + commit", &mut |i| {
        let mut t = b.lock_builder(T).unwrap();
        t.set_u64(root(0), i as u64).unwrap();
        t.set_u64(root(1), i as u64).unwrap();
        t.set_u64(root(2), i as u64).unwrap();
        t.commit().unwrap();
    });
    let a = r.atomic_u64(root(0)).unwrap();
    time("atomic_u64 lookup + load (lock-free)", &mut |_| {
        std::hint::black_box(
            r.atomic_u64(root(1))
                .unwrap()
                .load(std::sync::atomic::Ordering::Acquire),
        );
    });
    std::hint::black_box(a);
}
