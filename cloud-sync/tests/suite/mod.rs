//! The storage suite: what every backend must do, written once against
//! `Arc<dyn Store>` (`store.rs`, `removal.rs`) and the HTTP API over it
//! (`ingest.rs`, `queries.rs`), and run per backend by [`storage_suite!`]
//! (`tests/sled.rs`, `tests/postgres.rs`).
//!
//! Each test takes a fresh empty [`TestStore`](crate::util::backend::TestStore).

pub mod ingest;
pub mod queries;
pub mod removal;
pub mod store;

/// Declares one `#[tokio::test]` per suite test, each on a fresh store from
/// `$open` (an async fn returning `Option<TestStore>`; `None` skips).
#[macro_export]
macro_rules! storage_suite {
    ($open:path) => {
        $crate::storage_suite!(@tests $open;
            store::a_retried_batch_is_all_duplicates,
            store::a_resent_reading_under_a_new_seq_is_stored_once,
            store::the_same_seq_of_another_spool_is_new,
            store::range_scans_respect_bounds_and_series,
            store::documents_are_kept_and_found_by_time,
            store::dedup_matches_a_model_set,
            store::a_batch_spanning_a_long_history_still_finds_held_points,
            store::sub_microsecond_times_are_distinct_points,
            store::aggregates_align_to_the_epoch_before_and_after_it,
            store::aggregates_over_steps_that_are_not_whole_microseconds,
            store::a_step_beyond_every_time_makes_one_bucket,
            store::seqs_beyond_i64_are_kept,
            store::every_value_round_trips_exactly,
            store::a_device_keeps_the_gateway_of_its_latest_envelope,
            store::the_latest_batch_sets_the_gateway_backlog,
            store::concurrent_batches_of_one_device_count_every_point,
            ingest::a_batch_is_accepted_and_its_points_stored,
            ingest::the_same_batch_twice_answers_all_duplicates,
            ingest::overlapping_batches_count_only_the_new_envelopes,
            ingest::a_reading_resent_under_another_seq_is_stored_once,
            ingest::a_new_spool_of_a_known_gateway_is_accepted,
            ingest::concurrent_retries_of_one_batch_accept_each_envelope_once,
            ingest::a_missing_or_wrong_token_is_refused,
            ingest::malformed_cbor_is_a_bad_request_with_a_message,
            ingest::invalid_ids_are_bad_requests_naming_the_field,
            ingest::other_media_are_refused,
            ingest::opaque_and_undecodable_payloads_are_kept_as_documents,
            ingest::a_sum_only_record_is_stored_as_its_sum,
            ingest::an_empty_batch_updates_the_gateway_backlog,
            ingest::every_value_kind_round_trips,
            ingest::a_string_with_nul_is_kept_as_a_document,
            queries::points_come_back_in_time_order_with_values_and_units,
            queries::from_is_inclusive_and_to_exclusive,
            queries::series_do_not_leak_into_each_other,
            queries::aggregates_over_a_known_series,
            queries::bools_aggregate_as_zero_and_one,
            queries::too_many_buckets_are_refused,
            queries::unknown_devices_are_404_and_bad_parameters_400,
            queries::devices_and_gateways_are_listed,
            queries::health_and_metrics_answer,
            removal::retention_removes_exactly_the_points_older_than_the_cutoff,
            removal::a_per_device_override_wins_over_the_default,
            removal::a_device_whose_every_point_expired_stays_listed_without_data,
            removal::erasure_leaves_no_trace_of_the_device_and_every_point_of_the_others,
            removal::a_resent_batch_of_an_erased_device_stays_erased,
            removal::retention_over_http_data_keeps_the_api_consistent,
        );
    };
    (@tests $open:path; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let Some(store) = $open().await else {
                    return;
                };
                suite::$module::$test(store).await;
            }
        )*
    };
}
