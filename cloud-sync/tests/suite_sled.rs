//! The storage suite (`tests/suite/`) on the embedded sled store.

mod suite;
mod util;

storage_suite!(util::backend::sled);
