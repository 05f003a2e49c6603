//! Handler errors as data that can be stored safely.

/// Longest error message stored, in bytes; longer ones are cut.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest error name stored, in bytes.
pub const MAX_ERROR_NAME_BYTES: usize = 200;

/// A handler's failure, cleaned for storage: no NUL characters (Postgres
/// text cannot hold them) and bounded in size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorText {
    /// The error's class name, such as `TypeError`.
    pub name: String,
    /// The error's message.
    pub message: String,
}

impl ErrorText {
    /// Cleans a name and message as the handler produced them.
    pub fn new(name: &str, message: &str) -> Self {
        Self {
            name: clean(name, MAX_ERROR_NAME_BYTES),
            message: clean(message, MAX_ERROR_MESSAGE_BYTES),
        }
    }
}

/// Replaces NULs and cuts `text` to at most `max` bytes on a character
/// boundary, saying how much was cut.
fn clean(text: &str, max: usize) -> String {
    let text = text.replace('\0', "\u{FFFD}");
    if text.len() <= max {
        return text;
    }
    let note = format!(" [truncated from {} bytes]", text.len());
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_replaced() {
        let e = ErrorText::new("Error", "a\0b");
        assert_eq!(e.message, "a\u{FFFD}b");
    }

    #[test]
    fn a_two_megabyte_message_is_cut_to_the_limit() {
        let e = ErrorText::new("Error", &"x".repeat(2 * 1024 * 1024));
        assert!(e.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(e.message.ends_with("[truncated from 2097152 bytes]"));
    }

    #[test]
    fn cutting_respects_character_boundaries() {
        let e = ErrorText::new(&"é".repeat(300), "m");
        assert!(e.name.len() <= MAX_ERROR_NAME_BYTES);
        assert!(e.name.starts_with('é'));
    }
}
