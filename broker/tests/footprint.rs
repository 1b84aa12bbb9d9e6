//! Sizes that every device connection pays for, once per queued entry
//! (vendor/rumqttd/PATCHES.md #8): a PUBACK waits in rumqttd's queues as an
//! `Ack`, then as a `Notification`, so their sizes are multiplied by the
//! connections and by what each has in flight.

use std::mem::size_of;

use rumqttd::Notification;

/// The size of what `variant` wraps (`Ack` is not exported by name).
fn payload_size<T>(_variant: fn(T) -> Notification) -> usize {
    size_of::<T>()
}

#[test]
fn queued_acknowledgements_stay_small() {
    // 248 and 232 bytes before patch 8, when a `Forward`'s and a CONNACK's
    // properties were inline.
    let notification = size_of::<Notification>();
    let ack = payload_size(Notification::DeviceAck);
    eprintln!("Notification {notification} bytes, Ack {ack} bytes");
    assert!(
        notification <= 128,
        "rumqttd::Notification is {notification} bytes"
    );
    assert!(ack <= 96, "rumqttd's Ack is {ack} bytes");
}
