//! Well-formedness check for untrusted CBOR (RFC 8949 §5.3.1 / Appendix C),
//! run on every device payload before anything else looks at it.
//!
//! minicbor decodes the individual tokens (headers, lengths, UTF-8); this
//! module checks how they nest, with an explicit stack so that a hostile
//! payload cannot exhaust the thread's stack:
//!
//! ```text
//! payload := exactly one data item, nothing after it
//! depth   := arrays + maps + tags nested in one another, empty ones included;
//!            at most `max_depth` (byte and text strings are not levels)
//! indefinite byte/text strings hold only definite chunks of their own type
//! a map holds an even number of items; BREAK closes only an indefinite container
//! simple values below 32 have no two-byte form (0xf8 0x00..0x1f is malformed)
//! ```

use minicbor::data::Token;
use minicbor::Decoder;

/// Why a byte string is not one well-formed CBOR data item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input ends inside a data item (or is empty); the sender cut it short.
    #[error("cbor ends inside a data item")]
    Truncated,
    /// A header, length or string is invalid (reserved additional information,
    /// a two-byte simple value below 32, bad UTF-8, a stray break, a bad chunk
    /// in an indefinite string).
    #[error("malformed cbor at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    /// Bytes follow the first complete data item.
    #[error("{0} bytes follow the cbor data item")]
    TrailingBytes(usize),
    /// Arrays, maps and tags nest deeper than the configured limit.
    #[error("cbor nests deeper than {limit} levels")]
    TooDeep { limit: usize },
}

#[derive(Debug)]
enum Frame {
    /// A definite array or map with this many items still to come (a map counts keys and values).
    Definite(u64),
    /// An indefinite array.
    Array,
    /// An indefinite map and the number of items read so far (must end even).
    Map(u64),
    /// An indefinite byte string: only byte chunks until break.
    Bytes,
    /// An indefinite text string: only text chunks until break.
    Text,
    /// A tag waiting for the item it tags.
    Tag,
}

/// Checks that `bytes` is exactly one well-formed CBOR data item nested at
/// most `max_depth` levels deep. Work and memory are linear in the input.
pub fn check_well_formed(bytes: &[u8], max_depth: usize) -> Result<(), CborError> {
    let mut decoder = Decoder::new(bytes);
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        let offset = decoder.position();
        let token: Token<'_> = match decoder.decode() {
            Ok(token) => token,
            Err(e) if e.is_end_of_input() => return Err(CborError::Truncated),
            Err(e) => {
                return Err(CborError::Malformed {
                    offset,
                    reason: e.to_string(),
                })
            }
        };
        let malformed = |reason: &str| CborError::Malformed {
            offset,
            reason: reason.to_string(),
        };

        // Inside an indefinite string only chunks of the same kind or a break may appear.
        match (stack.last(), &token) {
            (Some(Frame::Bytes), Token::Bytes(_)) | (Some(Frame::Text), Token::String(_)) => {
                continue
            }
            (Some(Frame::Bytes | Frame::Text), Token::Break) => {
                stack.pop();
                if item_done(&mut stack) {
                    break;
                }
                continue;
            }
            (Some(Frame::Bytes | Frame::Text), _) => {
                return Err(malformed("indefinite string holds a foreign chunk"))
            }
            _ => {}
        }

        // Every array, map and tag is one level, empty or not. A string frame is
        // only ever on top of the stack (anything but a chunk or a break inside
        // it is refused above), so here the stack holds only containers and
        // tags and its length is the depth: O(1), linear work for any limit.
        let nests = matches!(
            token,
            Token::Array(_) | Token::Map(_) | Token::BeginArray | Token::BeginMap | Token::Tag(_)
        );
        if nests && stack.len() >= max_depth {
            return Err(CborError::TooDeep { limit: max_depth });
        }

        let opened = match token {
            // minicbor reads any byte after 0xf8; RFC 8949 §3.3 reserves those below 32.
            Token::Simple(n) if n < 32 && bytes.get(offset) == Some(&0xf8) => {
                return Err(malformed("two-byte encoding of a simple value below 32"))
            }
            Token::Array(0) | Token::Map(0) => None,
            Token::Array(n) => Some(Frame::Definite(n)),
            Token::Map(n) => Some(Frame::Definite(n.saturating_mul(2))),
            Token::BeginArray => Some(Frame::Array),
            Token::BeginMap => Some(Frame::Map(0)),
            Token::BeginBytes => Some(Frame::Bytes),
            Token::BeginString => Some(Frame::Text),
            Token::Tag(_) => Some(Frame::Tag),
            Token::Break => match stack.last() {
                Some(Frame::Array) => {
                    stack.pop();
                    None
                }
                Some(Frame::Map(n)) if n % 2 == 0 => {
                    stack.pop();
                    None
                }
                Some(Frame::Map(_)) => return Err(malformed("indefinite map ends after a key")),
                _ => return Err(malformed("break outside an indefinite container")),
            },
            _ => None,
        };
        match opened {
            Some(frame) => stack.push(frame),
            None => {
                if item_done(&mut stack) {
                    break;
                }
            }
        }
    }
    let end = decoder.position();
    if end < bytes.len() {
        return Err(CborError::TrailingBytes(bytes.len() - end));
    }
    Ok(())
}

/// Records that one complete item ended; returns true when it was the top-level item.
fn item_done(stack: &mut Vec<Frame>) -> bool {
    loop {
        match stack.last_mut() {
            None => return true,
            Some(Frame::Definite(n)) => {
                *n -= 1;
                if *n > 0 {
                    return false;
                }
                stack.pop();
            }
            Some(Frame::Tag) => {
                stack.pop();
            }
            Some(Frame::Map(n)) => {
                *n += 1;
                return false;
            }
            Some(Frame::Array) => return false,
            // Chunks are handled before any item completes.
            Some(Frame::Bytes | Frame::Text) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(hex: &str, depth: usize) -> Result<(), CborError> {
        check_well_formed(&hex::decode(hex).unwrap(), depth)
    }

    #[test]
    fn errors_name_the_offending_byte() {
        // [0, break]: the break at offset 2 closes nothing it may close.
        assert!(matches!(
            check("8200ff", 4),
            Err(CborError::Malformed { offset: 2, .. })
        ));
        // (_ h'00', 0): the foreign chunk at offset 3.
        assert!(matches!(
            check("5f410000ff", 4),
            Err(CborError::Malformed { offset: 3, .. })
        ));
        // [f8 10]: simple(16) in two bytes, at offset 1.
        assert!(matches!(
            check("81f810", 4),
            Err(CborError::Malformed { offset: 1, .. })
        ));
    }

    #[test]
    fn one_byte_simple_values_and_two_byte_ones_from_32_are_well_formed() {
        for hex in ["e0", "f3", "f4", "f7", "f820", "f8ff"] {
            assert_eq!(check(hex, 0), Ok(()), "{hex}");
        }
    }

    #[test]
    fn tags_count_as_depth_and_string_chunks_do_not() {
        assert_eq!(check("c1c100", 2), Ok(()));
        assert_eq!(check("c1c100", 1), Err(CborError::TooDeep { limit: 1 }));
        assert_eq!(check("815f4100ff", 1), Ok(()));
        assert_eq!(check("817f6161ff", 1), Ok(()));
    }

    #[test]
    fn a_break_closes_only_the_innermost_indefinite_container() {
        assert_eq!(check("9f9fffff", 2), Ok(()));
        assert_eq!(check("bf9fff00ff", 2), Ok(()));
        // The inner definite array still waits for an item.
        assert_eq!(
            check("9f81ff", 2),
            Err(CborError::Malformed {
                offset: 2,
                reason: "break outside an indefinite container".into()
            })
        );
    }

    #[test]
    fn huge_declared_lengths_are_truncated_not_allocated() {
        assert_eq!(check("9bffffffffffffffff", 4), Err(CborError::Truncated));
        assert_eq!(check("bbffffffffffffffff", 4), Err(CborError::Truncated));
        assert_eq!(check("5bffffffffffffffff", 4), Err(CborError::Truncated));
    }
}
