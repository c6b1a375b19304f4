//! Pagination as the replaced service answers it: `{data, page, limit, total, totalPages}`.

use serde::Serialize;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use super::FieldError;

pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 100;
/// Far beyond any real catalogue; keeps `(page - 1) * limit` comfortably inside SQL integers.
pub const MAX_PAGE: u32 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub limit: u32,
}

impl PageRequest {
    /// Parses the raw query values. A `limit` above the cap is clamped (as the old service
    /// did); anything that is not a positive whole number in digits is refused (an empty
    /// value, white space or a sign too: the document says `integer`, and means it).
    pub fn parse(page: Option<&str>, limit: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = vec![];
        let page = match page {
            None => 1,
            Some(p) => match digits(p) {
                Some(n) if (1..=u64::from(MAX_PAGE)).contains(&n) => n as u32,
                _ => {
                    errors.push(FieldError::new(
                        "page",
                        format!("must be a whole number from 1 to {MAX_PAGE}"),
                    ));
                    1
                }
            },
        };
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) => match digits(l) {
                Some(n) if n >= 1 => n.min(u64::from(MAX_LIMIT)) as u32,
                _ => {
                    errors.push(FieldError::new(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        if errors.is_empty() {
            Ok(PageRequest { page, limit })
        } else {
            Err(errors)
        }
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.limit)
    }

    /// What [`PageRequest::parse`] accepts as `page`.
    pub fn page_schema() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_PAGE))
            .default(Some(1.into()))
            .description(Some("Page number, from 1"))
            .build()
    }

    /// What [`PageRequest::parse`] accepts as `limit`: any whole number it can read, from 1.
    pub fn limit_schema() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(u64::MAX))
            .default(Some(DEFAULT_LIMIT.into()))
            .description(Some(format!(
                "Page size, from 1; values above {MAX_LIMIT} are read as {MAX_LIMIT}"
            )))
            .build()
    }
}

/// A number written in decimal digits only, as `u64` reads it (which would also take a `+`).
fn digits(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub data: Vec<T>,
    pub page: u32,
    pub limit: u32,
    pub total: u64,
    pub total_pages: u64,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, req: PageRequest, total: u64) -> Self {
        Page {
            data,
            page: req.page,
            limit: req.limit,
            total,
            total_pages: total.div_ceil(u64::from(req.limit)),
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            page: self.page,
            limit: self.limit,
            total: self.total,
            total_pages: self.total_pages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_caps() {
        assert_eq!(
            PageRequest::parse(None, None).unwrap(),
            PageRequest { page: 1, limit: 10 }
        );
        assert_eq!(
            PageRequest::parse(Some("2"), Some("500")).unwrap(),
            PageRequest {
                page: 2,
                limit: 100
            }
        );
    }

    #[test]
    fn refuses_non_positive_or_non_numbers() {
        for (p, l) in [
            (Some("0"), None),
            (Some("-1"), None),
            (Some("x"), None),
            (None, Some("0")),
            (None, Some("1.5")),
            (Some(""), None),
            (Some(" 1"), None),
            (Some("+1"), None),
            (None, Some("")),
            (None, Some("99999999999999999999999")),
        ] {
            assert!(PageRequest::parse(p, l).is_err(), "{p:?} {l:?}");
        }
    }

    #[test]
    fn counts_pages() {
        let req = PageRequest { page: 1, limit: 10 };
        assert_eq!(Page::<()>::new(vec![], req, 0).total_pages, 0);
        assert_eq!(Page::<()>::new(vec![], req, 10).total_pages, 1);
        assert_eq!(Page::<()>::new(vec![], req, 11).total_pages, 2);
    }
}
