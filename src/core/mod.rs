//! The core of cluster-shm: shared-memory messaging between processes, with no Node.js in it.
//!
//! ```
//! use cluster_shm::core::{Attach, Batch, Budget, Endpoint, Inbox, Outbox, Shared, kind};
//! use std::sync::Arc;
//!
//! // The primary creates the segment (1 worker + the primary) and attaches.
//! let shared = Shared::create(1, 64 * 1024).unwrap();
//! let primary = Arc::new(Endpoint::attach(shared.clone(), Attach::Primary).unwrap());
//! // A worker (normally another process) opens it by name and takes a free index.
//! let worker = Arc::new(Endpoint::attach(Shared::open(shared.name()).unwrap(), Attach::Any).unwrap());
//!
//! let out = Outbox::new(worker.clone());
//! assert!(out.try_write(primary.index(), kind::UTF8, b"hello").unwrap());
//!
//! let mut inbox = Inbox::new(&primary);
//! let mut batch = Batch::default();
//! inbox.drain(&primary, &mut batch, Budget::BATCH);
//! let msgs: Vec<_> = batch.iter().filter(|r| r.1 == kind::UTF8).collect();
//! assert_eq!(msgs, vec![(0, kind::UTF8, &b"hello"[..])]);
//! for &(from, pos) in &batch.commits { primary.commit(from, pos); }
//! shared.close_cluster();
//! ```
//!
//! Modules, bottom-up (`scripts/core-imports.py` prints who uses whom and fails on a cycle):
//! [`layout`] (every byte of the segment), [`platform`] (futex wait/wake, process identity;
//! `platform/mod.rs` is the interface, one file per OS behind it), [`segment`] (the named
//! mapping; `segment/mod.rs` is the interface, POSIX and Windows behind it), [`ring`] (one SPSC
//! ring of frames), [`loop_bell`] (waking a receiver's event loop in one hop), [`endpoint`] (the
//! registry of who holds which index), [`outbox`] and [`inbox`] (sending and receiving for one
//! endpoint), [`objects`] (named objects in the shared heap: regions, and the holder words and
//! robust locks of [`semaphore`], [`map`] and [`topics`]), and [`reclaim`] (what the objects
//! lose when an index changes hands or a process dies: `Endpoint::attach` / `detach`,
//! `Shared::release_pid` / `process_exited`), and [`stats`] (what an observer reads: rings'
//! counters, holders, objects; the list of this user's segments).

pub mod endpoint;
#[doc(hidden)]
pub mod fuzz;
pub mod inbox;
pub mod join;
pub mod layout;
pub mod loop_bell;
pub mod map;
pub mod objects;
pub mod outbox;
pub mod platform;
pub mod reclaim;
pub mod ring;
pub mod segment;
pub mod semaphore;
pub mod stats;
pub mod topics;

pub use endpoint::{Attach, AttachError, Endpoint, InitError, Shared};
pub use inbox::{event, Batch, Budget, Inbox};
pub use layout::kind;
pub use outbox::{Outbox, SendError, WriteError};
