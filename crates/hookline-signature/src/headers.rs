//! Read-only access to request headers, whatever map the caller keeps them in.

use std::collections::{BTreeMap, HashMap};

/// Request headers, looked up case-insensitively. When a header appears more than once,
/// the first value counts.
pub trait Headers {
    /// The value of header `name` (given in lowercase), if present.
    fn header(&self, name: &str) -> Option<&str>;
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Headers for [(K, V); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<V: AsRef<str>> Headers for BTreeMap<String, V> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref())
    }
}

impl<V: AsRef<str>, S: std::hash::BuildHasher> Headers for HashMap<String, V, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(AsRef::as_ref).or_else(|| {
            self.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_ref())
        })
    }
}

/// The value of header `name`, which the scheme requires.
pub(crate) fn required<'h, H: Headers + ?Sized>(
    headers: &'h H,
    name: &'static str,
) -> Result<&'h str, crate::VerifyError> {
    headers
        .header(name)
        .ok_or(crate::VerifyError::MissingHeader(
            std::borrow::Cow::Borrowed(name),
        ))
}
