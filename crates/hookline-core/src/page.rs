//! Cursor pagination as the Svix API does it: `limit`, an `iterator` that is the id of
//! the last item seen (`-id` to go back a page), and `{data, iterator, prevIterator, done}`.

use serde::{Deserialize, Serialize};

/// Sort direction of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Ascending,
    Descending,
}

/// A position in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Items after this key, in the list's order (the next page).
    After(String),
    /// Items before this key, in the list's order (the previous page).
    Before(String),
}

impl Cursor {
    /// Parses an `iterator` value: `-key` goes back, anything else forward.
    pub fn parse(iterator: &str) -> Self {
        match iterator.strip_prefix('-') {
            Some(key) => Cursor::Before(key.to_owned()),
            None => Cursor::After(iterator.to_owned()),
        }
    }
}

/// What page of a list to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub order: Order,
}

impl ListQuery {
    /// The largest page a client may ask for.
    pub const MAX_LIMIT: usize = 250;
    /// The page size when none is asked for.
    pub const DEFAULT_LIMIT: usize = 50;

    /// The first page, `limit` items, in `order`.
    pub fn first(limit: usize, order: Order) -> Self {
        Self {
            limit,
            cursor: None,
            order,
        }
    }

    /// The order in which a backend should scan: reversed when paging backwards.
    pub fn scan_order(&self) -> Order {
        match (&self.cursor, self.order) {
            (Some(Cursor::Before(_)), Order::Ascending) => Order::Descending,
            (Some(Cursor::Before(_)), Order::Descending) => Order::Ascending,
            (_, order) => order,
        }
    }

    /// The bound a backend should scan from, and whether it is a lower bound (`key >`)
    /// rather than an upper one (`key <`).
    pub fn bound(&self) -> Option<(&str, bool)> {
        self.cursor.as_ref().map(|cursor| {
            let key = match cursor {
                Cursor::After(key) | Cursor::Before(key) => key.as_str(),
            };
            (key, self.scan_order() == Order::Ascending)
        })
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows scanned as [`ListQuery::scan_order`]
    /// directs; `key` gives each item's sort key.
    pub fn from_scan(mut rows: Vec<T>, query: &ListQuery, key: impl Fn(&T) -> String) -> Self {
        let done = rows.len() <= query.limit;
        rows.truncate(query.limit);
        if matches!(query.cursor, Some(Cursor::Before(_))) {
            rows.reverse();
        }
        let iterator = rows.last().map(&key);
        let prev_iterator = rows.first().map(|first| format!("-{}", key(first)));
        Page {
            data: rows,
            iterator,
            prev_iterator,
            done,
        }
    }

    /// Converts the items, keeping the cursors.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            iterator: self.iterator,
            prev_iterator: self.prev_iterator,
            done: self.done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backwards_pages_come_out_in_list_order() {
        let query = ListQuery {
            limit: 2,
            cursor: Some(Cursor::parse("-c")),
            order: Order::Ascending,
        };
        assert_eq!(query.scan_order(), Order::Descending);
        assert_eq!(query.bound(), Some(("c", false)));
        let page = Page::from_scan(vec!["b", "a"], &query, |s| s.to_string());
        assert_eq!(page.data, vec!["a", "b"]);
        assert_eq!(page.iterator.as_deref(), Some("b"));
        assert_eq!(page.prev_iterator.as_deref(), Some("-a"));
        assert!(page.done);
    }

    #[test]
    fn an_extra_row_means_more_pages() {
        let query = ListQuery::first(2, Order::Descending);
        let page = Page::from_scan(vec![3, 2, 1], &query, |n| n.to_string());
        assert_eq!(page.data, vec![3, 2]);
        assert!(!page.done);
        assert_eq!(page.iterator.as_deref(), Some("2"));
    }
}
