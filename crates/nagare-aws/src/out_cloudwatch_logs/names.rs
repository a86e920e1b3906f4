//! Log group and log stream names: the AWS patterns, checked before any request.
//!
//! * group: 1-512 characters from `[\.\-_/#A-Za-z0-9]`;
//! * stream: 1-512 characters, none of them `:` or `*`.
//!
//! AWS counts characters; both patterns are checked on the UTF-8 text. Static names are
//! validated when the configuration loads; names taken from records (or tags) are validated
//! per event, and an invalid one sends the event to `fallback_log_group_name` or the secondary.

/// Longest group or stream name AWS accepts.
pub const MAX_NAME_LEN: usize = 512;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// A character outside the allowed set (group) or `:`/`*` (stream).
    BadChar(char),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => f.write_str("is empty"),
            NameError::TooLong => write!(f, "is longer than {MAX_NAME_LEN} characters"),
            NameError::BadChar(c) => write!(f, "contains the character {c:?}"),
        }
    }
}

fn is_group_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#')
}

/// Checks a log group name against `[\.\-_/#A-Za-z0-9]+`, 1-512 characters.
pub fn validate_group(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    // All allowed characters are ASCII, so bytes = characters when valid.
    if let Some(c) = name.chars().find(|c| !is_group_char(*c)) {
        return Err(NameError::BadChar(c));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    Ok(())
}

/// Checks a log stream name: 1-512 characters, no `:` or `*`.
pub fn validate_stream(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = name.chars().find(|c| matches!(c, ':' | '*')) {
        return Err(NameError::BadChar(c));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    Ok(())
}

/// Retention values `PutRetentionPolicy` accepts (days).
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Whether `days` is an allowed retention.
pub fn valid_retention(days: u32) -> bool {
    RETENTION_DAYS.contains(&days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_pattern() {
        assert!(validate_group("condor").is_ok());
        assert!(validate_group("/aws/ecs/app-1_x.y#z").is_ok());
        assert_eq!(validate_group(""), Err(NameError::Empty));
        assert_eq!(validate_group("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(validate_group("a:b"), Err(NameError::BadChar(':')));
        assert_eq!(
            validate_group("caf\u{e9}"),
            Err(NameError::BadChar('\u{e9}'))
        );
        assert!(validate_group(&"a".repeat(512)).is_ok());
        assert_eq!(validate_group(&"a".repeat(513)), Err(NameError::TooLong));
    }

    #[test]
    fn stream_pattern() {
        assert!(validate_stream("ip-10-0-0-1.ec2.internal").is_ok());
        assert!(validate_stream("with space/and\u{e9}").is_ok());
        assert_eq!(validate_stream(""), Err(NameError::Empty));
        assert_eq!(validate_stream("a:b"), Err(NameError::BadChar(':')));
        assert_eq!(validate_stream("a*"), Err(NameError::BadChar('*')));
        // 512 two-byte characters are 512 characters.
        assert!(validate_stream(&"\u{e9}".repeat(512)).is_ok());
        assert_eq!(validate_stream(&"x".repeat(513)), Err(NameError::TooLong));
    }

    #[test]
    fn retention_values() {
        assert!(valid_retention(14));
        assert!(valid_retention(3653));
        assert!(!valid_retention(0));
        assert!(!valid_retention(2));
        assert!(!valid_retention(10));
    }
}
