//! Deciding which flows have failed in the sense of RFC 5626, and which of
//! them an edge proxy would have to answer 430 Flow Failed for.
//!
//! [`verdict`] judges one flow from the kernel's timestamps; [`registrations`]
//! keeps the bindings that REGISTER heads establish; [`tracker`] holds every
//! flow's story and runs both on each sweep.

pub mod registrations;
pub mod saved;
pub mod tracker;
pub mod verdict;
