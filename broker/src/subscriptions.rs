//! Which publishes still need rumqttd's router.
//!
//! The codec spools every publish as it reads it, so the router is there only
//! to deliver publishes to subscribers and keep retained messages. A publish
//! whose topic no subscription has ever matched skips it (vendored patch 7,
//! `Protocol::route`): the connection writes the PUBACK itself once the spool
//! has the publish, and the router's thread, commit log and per-connection
//! queues never see it.
//!
//! Filters are only ever added (until the broker restarts): an UNSUBSCRIBE or
//! a closed session does not take a publish back off the router's path. That
//! keeps the rule simple and errs on the side of delivering.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use rumqttd::protocol::matches;

/// Every topic filter any client of the broker has subscribed to.
#[derive(Default)]
pub(crate) struct Subscriptions {
    filters: RwLock<Vec<String>>,
    /// Bumped on every new filter, so a connection can tell whether what it
    /// decided for its topic still holds.
    generation: AtomicU64,
}

impl Subscriptions {
    pub(crate) fn add(&self, filter: &str) {
        // A shared subscription, `$share/{group}/{filter}`, matches as its filter.
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
            None => filter,
        };
        let Ok(mut filters) = self.filters.write() else {
            return;
        };
        if !filters.iter().any(|f| f == filter) {
            filters.push(filter.to_string());
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether any filter ever subscribed matches `topic`. A poisoned lock
    /// answers yes: the router's path is always correct, only slower.
    pub(crate) fn any_match(&self, topic: &str) -> bool {
        self.filters
            .read()
            .map_or(true, |filters| filters.iter().any(|f| matches(topic, f)))
    }
}

/// One connection's standing with the router. A connection leaves the fast
/// path for good with its first publish that needs the router (a subscribed
/// topic, a retained message, QoS 2): from then on its PUBACKs all come from
/// the router, so they cannot overtake one another.
#[derive(Default)]
pub(crate) struct RouteState {
    via_router: bool,
    /// The last topic checked against the filters, and their generation then.
    checked: Option<(bytes::Bytes, u64)>,
}

impl RouteState {
    /// Whether a publish on `topic` with `qos`/`retain` may skip the router.
    pub(crate) fn may_skip(
        &mut self,
        subscriptions: &Subscriptions,
        topic: &bytes::Bytes,
        qos: u8,
        retain: bool,
    ) -> bool {
        if self.via_router {
            return false;
        }
        let generation = subscriptions.generation();
        let unchanged = matches!(&self.checked, Some((t, g)) if t == topic && *g == generation);
        let subscribed =
            !unchanged && std::str::from_utf8(topic).map_or(true, |t| subscriptions.any_match(t));
        if retain || qos > 1 || subscribed {
            self.via_router = true;
            return false;
        }
        self.checked = Some((topic.clone(), generation));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_publish_nobody_subscribed_to_skips_the_router_until_someone_does() {
        let subscriptions = Subscriptions::default();
        let mut state = RouteState::default();
        let telemetry = Bytes::from_static(b"devices/d1/telemetry");
        assert!(state.may_skip(&subscriptions, &telemetry, 1, false));
        subscriptions.add("devices/d1/commands");
        assert!(state.may_skip(&subscriptions, &telemetry, 1, false));
        subscriptions.add("$share/dashboards/devices/+/telemetry");
        assert!(!state.may_skip(&subscriptions, &telemetry, 1, false));
        // For good: the connection's acknowledgements stay in one queue.
        let other = Bytes::from_static(b"devices/d1/other");
        assert!(!state.may_skip(&subscriptions, &other, 0, false));
    }

    #[test]
    fn retained_and_qos2_publishes_take_the_router() {
        let subscriptions = Subscriptions::default();
        let topic = Bytes::from_static(b"devices/d1/telemetry");
        let mut retained = RouteState::default();
        assert!(!retained.may_skip(&subscriptions, &topic, 0, true));
        let mut exactly_once = RouteState::default();
        assert!(!exactly_once.may_skip(&subscriptions, &topic, 2, false));
        assert!(!exactly_once.may_skip(&subscriptions, &topic, 1, false));
    }
}
