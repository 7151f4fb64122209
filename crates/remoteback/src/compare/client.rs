//! A minimal blocking Redis client for tools: one command, one reply.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use remoteback_protocol::frame::{Frame, Scanner};
use remoteback_protocol::Command;

/// A connection to a Redis server.
pub struct Client {
    addr: String,
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Connects to `addr` (`host:port`), authenticating when a password is
    /// given.
    pub fn connect(
        addr: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let _ = stream.set_nodelay(true);
        let mut client = Client {
            addr: addr.to_string(),
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        if let Some(password) = password {
            let mut auth = vec!["AUTH"];
            auth.extend(username);
            auth.push(password);
            if let Frame::Error(e) = client.call(&auth)? {
                anyhow::bail!("{addr}: AUTH refused: {}", String::from_utf8_lossy(&e));
            }
        }
        Ok(client)
    }

    /// Sends one command and returns its reply (errors as `Frame::Error`).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> anyhow::Result<Frame> {
        let command = Command::from_parts(args.iter().map(|a| a.as_ref()));
        self.stream
            .write_all(&command.to_resp())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.addr))?;
        let mut scanner = Scanner::new();
        loop {
            if let Some(frame) = scanner
                .take(&mut self.buf)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.addr))?
            {
                return Ok(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.addr))?;
            if n == 0 {
                anyhow::bail!("{}: connection closed", self.addr);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Like [`call`](Self::call), but a Redis error is an `Err`.
    pub fn ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> anyhow::Result<Frame> {
        match self.call(args)? {
            Frame::Error(e) => Err(anyhow::anyhow!(
                "{}: {}",
                self.addr,
                String::from_utf8_lossy(&e)
            )),
            other => Ok(other),
        }
    }
}
