//! The event-loop doorbell: wakes a receiver whose *event loop* waits, in one hop.
//!
//! A delivery thread sleeps on the endpoint's futex ([`crate::core::layout::Bell`]), and then has
//! to wake the JS thread: two wake-ups per message. A receiver that instead lets its event loop
//! (libuv's epoll) watch a file descriptor needs one. The descriptor is a Unix datagram socket
//! bound to an abstract name derived from the segment name and the endpoint index, so a sender
//! needs nothing but those two to ring it, and nothing is left in the file system when a process
//! dies (the kernel drops the name with the socket).
//!
//! The bell is only a hint: the eventcount protocol is the same as for the futex (the receiver
//! stores [`bell_state::EVENT_LOOP`] in `sleeping` and re-checks its rings; a sender that swaps
//! that value out sends one datagram). A lost or spurious datagram costs latency, never a
//! message, and the receiver's bounded timer catches up within a second.
//!
//! Linux only (abstract socket names); elsewhere [`LoopBell::bind`] reports `Unsupported` and the
//! delivery thread is used.
//!
//! ```
//! # #[cfg(target_os = "linux")] {
//! use cluster_shm::core::loop_bell::{ring, LoopBell};
//! let bell = LoopBell::bind("/cshm_doc_example", 3).unwrap();
//! assert!(!bell.clear());
//! ring("/cshm_doc_example", 3);
//! assert!(bell.clear()); // a datagram was waiting (an event loop would have woken)
//! # }
//! ```

use std::io;

/// Values of `Bell::sleeping`: who sleeps, hence how a sender wakes it.
pub mod bell_state {
    /// Nobody sleeps: a sender makes no system call.
    pub const AWAKE: u32 = 0;
    /// A thread sleeps on the futex word `Bell::seq`.
    pub const THREAD: u32 = 1;
    /// An event loop waits for the endpoint's loop bell.
    pub const EVENT_LOOP: u32 = 2;
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::OnceLock;

    /// `\0cluster-shm<segment name>/<index>`: the abstract namespace (leading NUL) is not in the
    /// file system. The segment name carries 64 random bits, so names do not collide.
    fn address(segment: &str, index: u32) -> (libc::sockaddr_un, libc::socklen_t) {
        // SAFETY: sockaddr_un is plain old data; all zeroes is a valid (empty) value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let name = format!("cluster-shm{segment}/{index}");
        let bytes = name.as_bytes();
        let n = bytes.len().min(addr.sun_path.len() - 1);
        for (dst, &src) in addr.sun_path[1..=n].iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + 1 + n;
        (addr, len as libc::socklen_t)
    }

    fn datagram_socket() -> io::Result<OwnedFd> {
        // SAFETY: plain system call; the result is checked before it is owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub struct LoopBell {
        fd: OwnedFd,
    }

    impl LoopBell {
        pub fn bind(segment: &str, index: u32) -> io::Result<LoopBell> {
            let fd = datagram_socket()?;
            let (addr, len) = address(segment, index);
            // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
            let r = unsafe { libc::bind(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(LoopBell { fd })
        }

        pub fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }

        pub fn clear(&self) -> bool {
            let mut buf = [0u8; 16];
            // One datagram per call: the sender side sends one per announced sleep, and one left
            // over only makes the loop poll once more (a spurious, harmless wake-up). Reading
            // until EAGAIN would cost a second system call on every wake-up.
            // SAFETY: `buf` is writable for its length; the socket is non-blocking.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            n >= 0
        }
    }

    pub fn ring(segment: &str, index: u32) {
        static SENDER: OnceLock<Option<OwnedFd>> = OnceLock::new();
        let Some(fd) = SENDER.get_or_init(|| datagram_socket().ok()) else {
            return;
        };
        let (addr, len) = address(segment, index);
        // SAFETY: one byte from a live buffer to a valid address; non-blocking, so a full
        // receive queue (the receiver has wake-ups pending anyway) returns EAGAIN at once.
        unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                [1u8].as_ptr().cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                &addr as *const _ as *const libc::sockaddr,
                len,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    pub struct LoopBell(());

    impl LoopBell {
        pub fn bind(_segment: &str, _index: u32) -> io::Result<LoopBell> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub fn clear(&self) -> bool {
            false
        }
    }

    pub fn ring(_segment: &str, _index: u32) {}
}

/// The receiving end: a non-blocking socket for the event loop to watch for readability.
/// Closed (and its name released) when dropped.
pub struct LoopBell(imp::LoopBell);

impl LoopBell {
    /// Binds the bell of endpoint `index` of segment `segment`. Fails with `AddrInUse` while
    /// another live socket holds it (a previous holder of the index still exiting), and with
    /// `Unsupported` off Linux.
    pub fn bind(segment: &str, index: u32) -> io::Result<LoopBell> {
        imp::LoopBell::bind(segment, index).map(LoopBell)
    }

    /// The descriptor to poll for readability.
    #[cfg(target_os = "linux")]
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.0.fd()
    }

    /// Consumes a pending datagram (normally the only one), so that the descriptor polls as not
    /// readable. Returns whether there was one.
    pub fn clear(&self) -> bool {
        self.0.clear()
    }
}

/// Rings the loop bell of endpoint `index` of `segment`: one non-blocking datagram, errors
/// ignored (the bell is a hint; see the module docs).
pub fn ring(segment: &str, index: u32) {
    imp::ring(segment, index)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_held_while_bound_and_released_when_dropped() {
        let bell = LoopBell::bind("/cshm_test_loop_bell_name", 1).unwrap();
        let again = LoopBell::bind("/cshm_test_loop_bell_name", 1).err().map(|e| e.kind());
        assert_eq!(again, Some(io::ErrorKind::AddrInUse));
        drop(bell);
        assert!(LoopBell::bind("/cshm_test_loop_bell_name", 1).is_ok());
    }
}
