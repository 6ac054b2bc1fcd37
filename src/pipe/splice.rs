//! Zero-copy forwarding: kernel pipes for `splice(2)`, a bounded pool of them, and when a
//! pipe's direction switches from copying to splicing.
//!
//! A spliced direction moves bytes socket → kernel pipe → socket without them entering the
//! process. Three traps, each handled where noted:
//! - **The tail in the pipe.** Bytes sit in the kernel pipe between the two splices; the
//!   destination's FIN must wait until the pipe is empty (`Direction::fin_after_drain`), and
//!   a destination closed while the pipe holds bytes has truncated the stream (RST).
//! - **`EAGAIN` means two things.** From a socket into a pipe it says the socket is empty *or*
//!   the pipe is full. Only with an empty pipe is it surely the socket (its edge is consumed);
//!   otherwise the source stays marked readable and is read again once the destination took
//!   some of the pipe — an edge-triggered source would otherwise never be reported again.
//!   The other way round, a destination that said `EAGAIN` (or took part of the pipe: its
//!   send buffer is full) is not spliced into again before its writable edge, however often
//!   the source brings more.
//! - **Two fds per pipe, against `EMFILE`.** Pipes are bounded by
//!   [`ReactorOptions::splice_pipes`](crate::ReactorOptions::splice_pipes); past it, or when
//!   `pipe2` fails (out of fds), the direction copies instead, as it did before.
//! - **The user's pipe pages.** The kernel charges every pipe's capacity to its user; an
//!   unprivileged user past `/proc/sys/fs/pipe-user-pages-soft` gets 2-page pipes and no
//!   larger ones (pipe(7)). Large pipes share a budget per reactor (`LARGE_PIPES_BUDGET`),
//!   so that a few streams do not spend the user's pages; a pipe that cannot be sized to at
//!   least the kernel's default is closed, and the direction copies.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys;

/// When a pipe splices instead of copying (see [`PipeOptions::splice`](crate::PipeOptions::splice)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Splice {
    /// Always copy through the reactor's read buffer.
    Off,
    /// Splice each direction as soon as its destination is connected and has nothing queued.
    On,
    /// Copy small exchanges; splice a direction once it streams — once one read fills the
    /// reactor's whole read buffer (64 KiB) — so request/response traffic pays no extra
    /// syscalls and bulk transfers skip the copies (default).
    #[default]
    Auto,
}

/// The capacity of a new pipe unless asked otherwise (pipe(7): 16 pages since Linux 2.6.11).
pub(crate) const KERNEL_PIPE_SIZE: usize = 64 * 1024;

/// The size [`ReactorOptions::splice_pipe_size`](crate::ReactorOptions::splice_pipe_size)
/// asks for unless told otherwise: four times the kernel's default, so a stream moves 256 KiB
/// per `splice` pair instead of 64 KiB.
pub(crate) const DEFAULT_PIPE_SIZE: usize = 256 * 1024;

/// How much capacity one reactor's pipes larger than the kernel's default may have in all
/// (64 pipes of 256 KiB): a quarter of the 64 MiB of pipe pages an unprivileged user has by
/// default (`/proc/sys/fs/pipe-user-pages-soft`, pipe(7)). A few streams get large pipes;
/// many share the rest of the user's pages in pipes of the default size, instead of a few
/// large ones spending it all and leaving the others to copy.
pub(crate) const LARGE_PIPES_BUDGET: usize = 16 << 20;

/// One kernel pipe and what it holds.
#[derive(Debug)]
pub(crate) struct KernelPipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet out.
    pub(crate) held: usize,
    /// The size the kernel gave it.
    capacity: usize,
}

impl KernelPipe {
    pub(crate) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    pub(crate) fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }
}

/// A spliced direction of a pipe: its kernel pipe, and a FIN waiting for the pipe to empty.
#[derive(Debug)]
pub(crate) struct Direction {
    pub(crate) pipe: KernelPipe,
    /// The source's FIN came while bytes were still in the pipe: `end()` the destination once
    /// they are out.
    pub(crate) fin_after_drain: bool,
}

/// The bound on kernel pipes: how many are open, how many may be.
///
/// Pipes are not kept for reuse: a direction gives its pipe back (closed) once it can no
/// longer splice — it ended, or its pair did. A pipe costs one `pipe2` and one `close` per
/// spliced direction — nothing next to the stream that earned it (at least one
/// full read buffer) — and a server that holds no idle pipes has exactly its connections'
/// fds open once they close.
#[derive(Debug)]
pub(crate) struct PipePool {
    open: usize,
    max: usize,
    size: Option<usize>,
    /// The capacity of the open pipes larger than the kernel's default, against
    /// [`LARGE_PIPES_BUDGET`].
    large: usize,
    /// `SIGPIPE` is ignored: splicing cannot kill the process (see `sys::sigpipe_ignored`).
    allowed: bool,
}

impl PipePool {
    pub(crate) fn new(max: usize, size: Option<usize>) -> PipePool {
        PipePool {
            open: 0,
            max,
            size,
            large: 0,
            allowed: max > 0 && sys::sigpipe_ignored(),
        }
    }

    /// An empty kernel pipe, or `None`: the bound is reached, splicing is not allowed, or
    /// the process is out of fds. The caller copies then.
    pub(crate) fn take(&mut self) -> Option<KernelPipe> {
        if !self.allowed || self.open >= self.max {
            return None;
        }
        let (read, write) = match sys::pipe() {
            Ok(fds) => fds,
            Err(e) => {
                log::debug!("no kernel pipe ({e}): copying instead");
                return None;
            }
        };
        // Every pipe is sized, even at the kernel's default: past the user's soft limit on pipe
        // pages the kernel hands out 2-page pipes (`alloc_pipe_info`, fs/pipe.c; pipe(7)),
        // and splicing 8 KiB at a time costs more than copying. Asking for the size is what
        // finds that out (`EPERM`); such a pipe is closed, and the direction copies.
        // The budget is counted in what the kernel gave (a power of two of pages); every
        // large pipe of a pool has the same size, so the check below is exact.
        let want = match self.size {
            Some(size)
                if size <= KERNEL_PIPE_SIZE
                    || size <= LARGE_PIPES_BUDGET.saturating_sub(self.large) =>
            {
                size
            }
            _ => KERNEL_PIPE_SIZE,
        };
        let sized = sys::set_pipe_size(write.as_fd(), want).or_else(|e| {
            if want <= KERNEL_PIPE_SIZE {
                return Err(e);
            }
            log::debug!("F_SETPIPE_SZ {want}: {e}; trying the kernel's default size");
            sys::set_pipe_size(write.as_fd(), KERNEL_PIPE_SIZE)
        });
        let capacity = match sized {
            Ok(capacity) => capacity,
            Err(e) => {
                log::debug!("no kernel pipe of {KERNEL_PIPE_SIZE} bytes ({e}): copying instead");
                return None;
            }
        };
        self.open += 1;
        if capacity > KERNEL_PIPE_SIZE {
            self.large += capacity;
        }
        Some(KernelPipe {
            read,
            write,
            held: 0,
            capacity,
        })
    }

    /// How many pipes are open.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// Closes a pipe whose direction is over (with any bytes it still held: that stream was
    /// cut, and the destination's close said so with an RST).
    pub(crate) fn give_back(&mut self, pipe: KernelPipe) {
        if pipe.capacity > KERNEL_PIPE_SIZE {
            self.large -= pipe.capacity;
        }
        drop(pipe);
        self.open -= 1;
    }
}

/// Whether a direction that copies now should splice from here on: the policy of
/// [`Splice`]. `read` bytes were just copied out of a buffer of `buffer` bytes, and the
/// destination is connected with an empty queue (nothing may overtake queued bytes).
pub(crate) fn should_splice(
    mode: Splice,
    read: usize,
    buffer: usize,
    destination_clear: impl FnOnce() -> bool,
) -> bool {
    (match mode {
        Splice::Off => false,
        Splice::On => true,
        Splice::Auto => read >= buffer,
    }) && destination_clear()
}
