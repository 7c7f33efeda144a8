//! VMMs started ahead of their machines (`--warm-vmms`): a VMM process takes a few milliseconds
//! to start and answer on its API socket, more than creating and booting a small VM in it. A
//! backend whose process needs no VM shape at start (Cloud Hypervisor) keeps that many started
//! in `vms/.warm-<id>/`; a new machine takes one by renaming that directory to its own, and a
//! new one is started behind it.
//!
//! Crash safety: a warm VMM's command line names its `.warm-` directory, which no machine
//! record owns, so a restarted runtime kills it with the other orphans (`sweep_orphans`). Once
//! taken, its directory is the machine's and carries [`vmm::PID_FILE`] (written before it is
//! ever handed out), so `kill_processes_in` finds it there before the pid reaches the record.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::vmm::{self, Spawned, VmPaths, Vmm};

/// How long a failed start waits before the next attempt.
const RETRY: Duration = Duration::from_secs(1);
/// How long a warm VMM gets to exit at shutdown.
const GRACE: Duration = Duration::from_secs(2);

/// A VMM that waits for a machine, and its directory.
struct Warm {
    dir: PathBuf,
    spawned: Spawned,
}

/// The VMMs kept started ahead.
pub(super) struct WarmVmms {
    wanted: usize,
    vms_dir: PathBuf,
    ready: Mutex<Vec<Warm>>,
    refill: Notify,
    /// Starts under way, and machines waiting for one of them ([`WarmVmms::take_or_wait`]).
    starts: Mutex<Starts>,
    /// A start ended (ready or failed).
    started: Notify,
}

/// Starts under way and the machines waiting for them.
#[derive(Debug, Default)]
struct Starts {
    in_flight: usize,
    waiting: usize,
}

impl WarmVmms {
    /// `wanted` VMMs under `vms_dir` (the machines' directories' parent).
    pub(super) fn new(wanted: usize, vms_dir: PathBuf) -> Self {
        Self {
            wanted,
            vms_dir,
            ready: Mutex::new(Vec::new()),
            refill: Notify::new(),
            starts: Mutex::new(Starts::default()),
            started: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn starts(&self) -> std::sync::MutexGuard<'_, Starts> {
        self.starts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `wanted` VMMs started (several starts in flight at once when machines take them
    /// faster than one starts) until `token` is cancelled, then stops the ones not taken and
    /// removes their directories.
    pub(super) async fn run(self: Arc<Self>, vmm: Arc<dyn Vmm>, token: CancellationToken) {
        let mut starting = tokio::task::JoinSet::new();
        while !token.is_cancelled() {
            while self.lock().len() + starting.len() < self.wanted {
                let (this, vmm) = (Arc::clone(&self), Arc::clone(&vmm));
                starting.spawn(async move { this.start_one(vmm.as_ref()).await });
            }
            self.starts().in_flight = starting.len();
            tokio::select! {
                Some(started) = starting.join_next() => match started {
                    Ok(Ok(warm)) => {
                        debug!(pid = warm.spawned.process.pid, "warm vmm ready");
                        self.lock().push(warm);
                        self.starts().in_flight = starting.len();
                        self.started.notify_waiters();
                    }
                    Ok(Err(e)) => {
                        self.starts().in_flight = starting.len();
                        self.started.notify_waiters();
                        warn!(error = %e, "starting a warm vmm failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(RETRY) => {}
                            () = token.cancelled() => {}
                        }
                    }
                    Err(e) => warn!(error = %e, "warm vmm start task"),
                },
                () = self.refill.notified() => {}
                () = token.cancelled() => {}
            }
        }
        self.starts().in_flight = 0;
        self.started.notify_waiters();
        let mut left: Vec<Warm> = std::mem::take(&mut *self.lock());
        while let Some(started) = starting.join_next().await {
            left.extend(started.ok().and_then(Result::ok));
        }
        for mut warm in left {
            let _ = vmm.terminate(&warm.spawned.process, GRACE).await;
            let _ = warm.spawned.child.wait().await;
            remove_dir(&warm.dir);
        }
    }

    async fn start_one(&self, vmm: &dyn Vmm) -> anyhow::Result<Warm> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self
            .vms_dir
            .join(format!(".warm-{}-{nanos:x}", std::process::id()));
        private_dir(&dir)?;
        let spawned = match vmm.spawn(&VmPaths::new(&dir)).await {
            Ok(spawned) => spawned,
            Err(e) => {
                remove_dir(&dir);
                return Err(e.into());
            }
        };
        if let Err(e) = vmm::write_pid_file(&dir, &spawned.process) {
            spawned.process.kill();
            let mut child = spawned.child;
            let _ = child.wait().await;
            remove_dir(&dir);
            return Err(e.into());
        }
        Ok(Warm { dir, spawned })
    }

    /// [`WarmVmms::take`], or when none is ready but one is being started that no other
    /// machine waits for, that one once it is ready (up to `wait`): it started earlier than a
    /// VMM the caller would start now, so it answers sooner (machines created faster than a
    /// VMM starts).
    pub(super) async fn take_or_wait(&self, dir: &Path, wait: Duration) -> Option<Spawned> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let started = self.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if let Some(spawned) = self.take(dir) {
                return Some(spawned);
            }
            {
                let mut starts = self.starts();
                if starts.waiting >= starts.in_flight {
                    return None;
                }
                starts.waiting += 1;
            }
            let woke = tokio::time::timeout_at(deadline, started).await.is_ok();
            self.starts().waiting -= 1;
            if !woke {
                return self.take(dir);
            }
        }
    }

    /// Hands a started VMM to the machine directory `dir`, which must not exist yet: its
    /// directory becomes `dir`. `None` when none is ready (the caller starts one itself).
    pub(super) fn take(&self, dir: &Path) -> Option<Spawned> {
        loop {
            let warm = self.lock().pop()?;
            self.refill.notify_one();
            if !warm.spawned.process.is_alive() {
                warn!(
                    pid = warm.spawned.process.pid,
                    "a warm vmm died; dropping it"
                );
                remove_dir(&warm.dir);
                continue;
            }
            if let Err(e) = std::fs::rename(&warm.dir, dir) {
                warn!(error = %e, dir = %dir.display(), "could not hand a warm vmm over");
                self.lock().push(warm);
                return None;
            }
            let mut spawned = warm.spawned;
            spawned.process.api_socket = VmPaths::new(dir).api_socket;
            info!(pid = spawned.process.pid, "took a warm vmm");
            return Some(spawned);
        }
    }
}

/// Creates `dir` with mode 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Removes a warm VMM's directory (best effort).
fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(error = %e, dir = %dir.display(), "remove warm vmm dir");
    }
}
