//! Kill-and-recover on the sled store (`util/crash.rs` has the test): the
//! real binary, killed at random moments while posting, restarted on the
//! same data directory, holds every acknowledged reading exactly once; and
//! the audit log of its reads, in the same directory, still verifies (a
//! line torn by the last kill is moved aside by the next writer).

mod util;

use std::ffi::OsString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_the_store_holds_each_reading_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = [OsString::from("--data-dir"), dir.path().into()];
    util::crash::killed_at_random_points_the_store_holds_each_reading_once(&store, false).await;
    let audit = dir.path().join("audit.log");
    let head = cloud_sync::audit::AuditFile::open(&audit)
        .unwrap()
        .head()
        .clone();
    assert!(head.seq > 0, "the reads were audited");
    assert_eq!(cloud_sync::audit::verify_file(&audit).unwrap(), head);
}
