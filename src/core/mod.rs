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
//! Modules, bottom-up: [`platform`] (futex wait/wake, process identity), [`segment`] (the named
//! mapping), [`layout`] (every byte of the segment), [`ring`] (one SPSC ring of frames),
//! [`endpoint`] (the registry of who holds which index), [`outbox`] and [`inbox`] (sending and
//! receiving for one endpoint), [`loop_bell`] (waking a receiver's event loop in one hop), [`objects`] (named objects in the shared heap: [`semaphore`],
//! [`map`], regions).

pub mod endpoint;
#[doc(hidden)]
pub mod fuzz;
pub mod inbox;
pub mod layout;
pub mod loop_bell;
pub mod map;
pub mod objects;
pub mod outbox;
pub mod platform;
pub mod ring;
pub mod segment;
pub mod semaphore;
pub mod topics;

pub use endpoint::{Attach, AttachError, Endpoint, InitError, Shared};
pub use inbox::{event, Batch, Budget, Inbox};
pub use layout::kind;
pub use outbox::{Outbox, SendError, WriteError};
