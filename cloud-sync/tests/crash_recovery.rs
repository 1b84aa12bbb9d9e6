//! Kill-and-recover on the sled store (`util/crash.rs` has the test): the
//! real binary, killed at random moments while posting, restarted on the
//! same data directory, holds every acknowledged reading exactly once.

mod util;

use std::ffi::OsString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_the_store_holds_each_reading_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = [OsString::from("--data-dir"), dir.path().into()];
    util::crash::killed_at_random_points_the_store_holds_each_reading_once(&store, false).await;
}
