//! ch-sim's serial port in mode `Socket`: a listener with at most one client, as Cloud
//! Hypervisor's serial manager has it; the emulated PVH stub's banner and echo go through it.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
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
            while !st.load(Ordering::Relaxed) {
                if !Self::accept(&l, &c, &e) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Ok(socket)
    }

    /// Take a pending connection as the client (replacing the previous one, as CH does);
    /// whether there was one.
    pub(super) fn accept(
        listener: &std::os::unix::net::UnixListener,
        client: &Arc<Mutex<Option<std::os::unix::net::UnixStream>>>,
        echo: &Arc<std::sync::atomic::AtomicBool>,
    ) -> bool {
        let Ok((stream, _)) = listener.accept() else {
            return false;
        };
        let _ = stream.set_nonblocking(false);
        let Ok(reader) = stream.try_clone() else {
            return true;
        };
        let previous = client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(stream);
        if let Some(previous) = previous {
            let _ = previous.shutdown(std::net::Shutdown::Both);
        }
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
