//! ch-sim's serial port in mode `Socket`: a listener with at most one client, as Cloud
//! Hypervisor's serial manager has it; the emulated PVH stub's banner and echo go through it.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// A serial port in mode `Socket`: a listener with at most one client.
pub(super) struct SerialSocket {
    path: PathBuf,
    listener: Arc<std::os::unix::net::UnixListener>,
    client: Arc<Mutex<Option<std::os::unix::net::UnixStream>>>,
    /// The guest echoes what it receives (the stub booted with a cmdline starting with `e`).
    pub(super) echo: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SerialSocket {
    pub(super) fn bind(path: &Path) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = Arc::new(std::os::unix::net::UnixListener::bind(path)?);
        listener.set_nonblocking(true)?;
        let client: Arc<Mutex<Option<std::os::unix::net::UnixStream>>> = Arc::default();
        let echo = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let socket = Self {
            path: path.to_owned(),
            listener,
            client,
            echo,
            stop,
        };
        let (l, c, e, st) = (
            Arc::clone(&socket.listener),
            Arc::clone(&socket.client),
            Arc::clone(&socket.echo),
            Arc::clone(&socket.stop),
        );
        std::thread::spawn(move || {
            // Sleeps in poll(2) until a client connects (as CH's epoll loop does; a thread
            // waking every few milliseconds per VM costs a host of many VMs real CPU), and
            // looks at `stop` at least every 100 ms.
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            while !st.load(Ordering::Relaxed) {
                let mut fds = [rustix::event::PollFd::new(
                    l.as_ref(),
                    rustix::event::PollFlags::IN,
                )];
                if matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
                    Self::accept(&l, &c, &e);
                }
            }
        });
        Ok(socket)
    }

    /// Take a pending connection as the client (replacing the previous one, as CH does);
    /// whether there was one.
    ///
    /// The client lock is held from before the accept until the new client is stored: a
    /// [`SerialSocket::write`] on another thread that finds the backlog empty then also finds
    /// the client this thread took from it (without the lock, output written in between was
    /// dropped, and a console pump that connected before `vm.boot` missed the banner).
    pub(super) fn accept(
        listener: &std::os::unix::net::UnixListener,
        client: &Arc<Mutex<Option<std::os::unix::net::UnixStream>>>,
        echo: &Arc<std::sync::atomic::AtomicBool>,
    ) -> bool {
        let mut current = client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok((stream, _)) = listener.accept() else {
            return false;
        };
        let _ = stream.set_nonblocking(false);
        let Ok(reader) = stream.try_clone() else {
            return true;
        };
        if let Some(previous) = current.replace(stream) {
            let _ = previous.shutdown(std::net::Shutdown::Both);
        }
        drop(current);
        let (c, e) = (Arc::clone(client), Arc::clone(echo));
        std::thread::spawn(move || Self::read(reader, &c, &e));
        true
    }

    /// The guest side of one client: what it writes reaches the stub, which echoes it back
    /// when it was booted to.
    pub(super) fn read(
        mut reader: std::os::unix::net::UnixStream,
        client: &Mutex<Option<std::os::unix::net::UnixStream>>,
        echo: &std::sync::atomic::AtomicBool,
    ) {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) if echo.load(std::sync::atomic::Ordering::Relaxed) => {
                    if let Some(out) = client
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .as_mut()
                    {
                        let _ = out.write_all(&buf[..n]);
                    }
                }
                Ok(_) => {}
            }
        }
    }

    /// Guest output: to the client, or nowhere. A client that connected before counts (CH's
    /// serial thread accepts as soon as it connects, long before a guest boots).
    pub(super) fn write(&self, data: &[u8]) {
        while Self::accept(&self.listener, &self.client, &self.echo) {}
        if let Some(out) = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            let _ = out.write_all(data);
        }
    }
}

impl Drop for SerialSocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = fs::remove_file(&self.path);
        if let Some(c) = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, time::Duration};

    use super::*;

    /// A client that connected before the guest wrote gets what it wrote, every time, even
    /// while the accept thread is taking the connection at that very moment.
    #[test]
    fn a_client_connected_before_output_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.sock");
        let socket = SerialSocket::bind(&path).unwrap();
        for round in 0..2000u32 {
            let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            // Let the accept thread take the connection at a different point each round.
            if round % 7 == 0 {
                std::thread::sleep(Duration::from_micros(u64::from(round % 2000)));
            }
            let line = format!("PVH-HELLO {round}\n");
            socket.write(line.as_bytes());
            let mut got = vec![0u8; line.len()];
            client
                .read_exact(&mut got)
                .unwrap_or_else(|e| panic!("round {round}: the banner was lost: {e}"));
            assert_eq!(got, line.as_bytes(), "round {round}");
        }
    }
}
