//! Device identifiers: the name a device publishes under (`devices/{device_id}/...`)
//! and the key every reading is stored under.

/// Longest accepted device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Why a string is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// The id is empty or longer than [`MAX_DEVICE_ID_LEN`]; the device must be renamed.
    #[error("device id must be 1 to {MAX_DEVICE_ID_LEN} bytes long, got {0}")]
    Length(usize),
    /// The id holds a character outside `[A-Za-z0-9_.-]`; the device must be renamed.
    #[error("device id may only hold A-Z a-z 0-9 _ . - (found {0:?})")]
    Character(char),
}

/// Checks that `id` matches `[A-Za-z0-9_.-]{1,64}`.
pub fn validate_device_id(id: &str) -> Result<(), DeviceIdError> {
    if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN {
        return Err(DeviceIdError::Length(id.len()));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(c) => Err(DeviceIdError::Character(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert_eq!(validate_device_id("sensor-01.kitchen_A"), Ok(()));
        assert_eq!(validate_device_id(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn rejects_empty_long_and_odd_ids() {
        assert_eq!(validate_device_id(""), Err(DeviceIdError::Length(0)));
        assert_eq!(
            validate_device_id(&"a".repeat(65)),
            Err(DeviceIdError::Length(65))
        );
        assert_eq!(
            validate_device_id("a/b"),
            Err(DeviceIdError::Character('/'))
        );
        assert_eq!(validate_device_id("a+"), Err(DeviceIdError::Character('+')));
        assert_eq!(validate_device_id("é"), Err(DeviceIdError::Character('é')));
    }
}
