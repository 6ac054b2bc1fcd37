//! The kernel's TCP socket tables, `/proc/net/tcp` and `/proc/net/tcp6` (proc_net_tcp(5)),
//! read the way the tests need them: a socket's state and queues by its 4-tuple, and the
//! accept queues of the listening sockets on a port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;

/// `st` of a listening socket.
pub const TCP_LISTEN: u8 = 0x0A;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// `local_address` and `rem_address` as printed (`0100007F:1F90`).
    pub local: String,
    pub remote: String,
    /// `st`: the TCP state (`TCP_ESTABLISHED` = 1 … `TCP_LISTEN` = 0x0A, include/net/tcp_states.h).
    pub state: u8,
    /// `tx_queue`: bytes sent and not acknowledged (for a listener: 0).
    pub tx_queue: u64,
    /// `rx_queue`: bytes received and not read (for a listener: its accept queue length).
    pub rx_queue: u64,
}

impl Row {
    fn parse(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (tx, rx) = f.get(4)?.split_once(':')?;
        Some(Row {
            local: f.get(1)?.to_string(),
            remote: f.get(2)?.to_string(),
            state: u8::from_str_radix(f.get(3)?, 16).ok()?,
            tx_queue: u64::from_str_radix(tx, 16).ok()?,
            rx_queue: u64::from_str_radix(rx, 16).ok()?,
        })
    }

    /// The port of `local`.
    pub fn local_port(&self) -> Option<u16> {
        let (_, port) = self.local.rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    }
}

/// An IPv4 address as the table prints it: the address as a native-endian word, the port in
/// host order, both in hex.
pub fn proc_addr(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}")
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    )
}

/// Every IPv4 row of this network namespace (`/proc/net/tcp`).
pub fn rows() -> Vec<Row> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).filter_map(Row::parse).collect()
}

/// The row of the IPv4 socket `local` → `remote`, while the kernel has it hashed: a socket
/// that received an RST, or was closed with `SO_LINGER{on, 0}`, goes to `TCP_CLOSE` and is
/// gone from the table at once; one closed with a FIN stays (FIN-WAIT, TIME-WAIT).
pub fn row(local: SocketAddr, remote: SocketAddr) -> Option<Row> {
    let (local, remote) = (proc_addr(local), proc_addr(remote));
    rows()
        .into_iter()
        .find(|r| r.local == local && r.remote == remote)
}

/// The accept queue length of every IPv4 listening socket on `port`, one entry per socket.
/// The kernel lists every listening socket before the others, so reading stops at the first
/// line in another state: the file can hold many thousand TIME_WAIT lines after a test run.
pub fn listen_queues(port: u16) -> Vec<u64> {
    let table = std::fs::File::open("/proc/net/tcp").expect("/proc/net/tcp");
    BufReader::new(table)
        .lines()
        .skip(1)
        .map(|line| line.expect("/proc/net/tcp"))
        .map_while(|line| Row::parse(&line).filter(|r| r.state == TCP_LISTEN))
        .filter(|r| r.local_port() == Some(port))
        .map(|r| r.rx_queue)
        .collect()
}

/// Whether some socket listens on `port` (any address), per `/proc/net/tcp` and
/// `/proc/net/tcp6`.
pub fn listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines()
                .skip(1)
                .filter_map(Row::parse)
                .any(|r| r.state == TCP_LISTEN && r.local_port() == Some(port))
        })
    })
}
