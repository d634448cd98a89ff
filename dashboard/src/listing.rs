//! The object list as pure functions: a [`ListQuery`] read from the page's GET parameters, and
//! [`list`], which filters, sorts and paginates a model's objects for it. Also the counts the
//! overview and the filters show ([`Facets`]).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use crate::model::{ObjectPhase, ObjectView, PHASES};

/// Rows per page unless the query says otherwise.
pub(crate) const DEFAULT_PER_PAGE: usize = 100;
/// The page sizes offered (any in `MIN_PER_PAGE..=MAX_PER_PAGE` is accepted).
pub(crate) const PAGE_SIZES: [usize; 4] = [25, 50, 100, 250];
const MIN_PER_PAGE: usize = 10;
const MAX_PER_PAGE: usize = 1000;

/// A sortable column of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SortKey {
    /// Resource, then namespace and name: the model's own order.
    #[default]
    Resource,
    /// Namespace, then name.
    Namespace,
    /// Name, then namespace.
    Name,
    /// Phase by urgency (failed first), then resource, namespace and name.
    Phase,
    /// The most attempts of any handler.
    Attempts,
    /// When the view last changed.
    Updated,
}

impl SortKey {
    /// Every key, with its parameter value.
    pub(crate) const ALL: [(SortKey, &'static str); 6] = [
        (SortKey::Resource, "resource"),
        (SortKey::Namespace, "namespace"),
        (SortKey::Name, "name"),
        (SortKey::Phase, "phase"),
        (SortKey::Attempts, "attempts"),
        (SortKey::Updated, "updated"),
    ];

    /// The key's parameter value (`sort=name`).
    pub(crate) fn param(self) -> &'static str {
        SortKey::ALL
            .iter()
            .find(|(key, _)| *key == self)
            .map_or("resource", |(_, name)| name)
    }

    fn parse(value: &str) -> Option<SortKey> {
        SortKey::ALL
            .iter()
            .find(|(_, name)| *name == value)
            .map(|(key, _)| *key)
    }

    /// Whether a first click sorts this column descending (numbers and times: biggest first).
    fn descending_first(self) -> bool {
        matches!(self, SortKey::Attempts | SortKey::Updated)
    }
}

/// What the list page shows: its GET parameters, validated. Unknown or malformed parameters
/// fall back to the defaults, so any URL renders a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    /// Only this resource (`plural.group/version`); empty: all.
    pub(crate) resource: String,
    /// Only this namespace; empty: all.
    pub(crate) namespace: String,
    /// Only this phase; empty: all.
    pub(crate) phase: String,
    /// Only objects with this handler (or one of its sub-handlers); empty: all.
    pub(crate) handler: String,
    /// Words that must all occur (case-insensitively) in the name, namespace, resource, uid,
    /// cause, a handler id or a message.
    pub(crate) text: String,
    /// The sort column.
    pub(crate) sort: SortKey,
    /// Descending instead of ascending.
    pub(crate) descending: bool,
    /// The page, from 1.
    pub(crate) page: usize,
    /// Rows per page.
    pub(crate) per_page: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            resource: String::new(),
            namespace: String::new(),
            phase: String::new(),
            handler: String::new(),
            text: String::new(),
            sort: SortKey::default(),
            descending: false,
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

impl ListQuery {
    /// Reads the parameters (`resource`, `namespace`, `phase`, `handler`, `q`, `sort`, `dir`,
    /// `page`, `per_page`).
    pub(crate) fn from_params(params: &HashMap<String, String>) -> Self {
        let text = |name: &str| {
            params
                .get(name)
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let sort = params
            .get("sort")
            .and_then(|v| SortKey::parse(v))
            .unwrap_or_default();
        let descending = match params.get("dir").map(String::as_str) {
            Some("desc") => true,
            Some("asc") => false,
            _ => false,
        };
        let number = |name: &str| {
            params
                .get(name)
                .and_then(|v| v.trim().parse::<usize>().ok())
        };
        ListQuery {
            resource: text("resource"),
            namespace: text("namespace"),
            phase: text("phase"),
            handler: text("handler"),
            text: text("q"),
            sort,
            descending,
            page: number("page").unwrap_or(1).max(1),
            per_page: number("per_page")
                .unwrap_or(DEFAULT_PER_PAGE)
                .clamp(MIN_PER_PAGE, MAX_PER_PAGE),
        }
    }

    /// Whether any filter is set.
    pub(crate) fn is_filtered(&self) -> bool {
        !(self.resource.is_empty()
            && self.namespace.is_empty()
            && self.phase.is_empty()
            && self.handler.is_empty()
            && self.text.is_empty())
    }

    /// The list page's URL for this query; default values are left out.
    pub(crate) fn href(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (name, value) in [
            ("resource", &self.resource),
            ("namespace", &self.namespace),
            ("phase", &self.phase),
            ("handler", &self.handler),
            ("q", &self.text),
        ] {
            if !value.is_empty() {
                pairs.push((name, value.clone()));
            }
        }
        if self.sort != SortKey::default() || self.descending {
            pairs.push(("sort", self.sort.param().to_owned()));
            pairs.push(("dir", if self.descending { "desc" } else { "asc" }.into()));
        }
        if self.per_page != DEFAULT_PER_PAGE {
            pairs.push(("per_page", self.per_page.to_string()));
        }
        if self.page > 1 {
            pairs.push(("page", self.page.to_string()));
        }
        if pairs.is_empty() {
            return "/objects".to_owned();
        }
        let query = pairs
            .iter()
            .map(|(name, value)| format!("{name}={}", encode_component(value)))
            .collect::<Vec<_>>()
            .join("&");
        format!("/objects?{query}")
    }

    /// The query after clicking the header of `key`: ascending (descending for numbers and
    /// times) on a new column, the other direction on the current one; back to page 1.
    pub(crate) fn sorted_by(&self, key: SortKey) -> ListQuery {
        let descending = if self.sort == key {
            !self.descending
        } else {
            key.descending_first()
        };
        ListQuery {
            sort: key,
            descending,
            page: 1,
            ..self.clone()
        }
    }

    /// The same query on another page.
    pub(crate) fn on_page(&self, page: usize) -> ListQuery {
        ListQuery {
            page: page.max(1),
            ..self.clone()
        }
    }

    /// The objects in one phase (the overview links to it).
    pub(crate) fn for_phase(phase: ObjectPhase) -> ListQuery {
        ListQuery {
            phase: phase.as_str().to_owned(),
            ..ListQuery::default()
        }
    }

    fn matches(&self, object: &ObjectView, words: &[String]) -> bool {
        (self.resource.is_empty() || object.resource == self.resource)
            && (self.namespace.is_empty() || object.namespace == self.namespace)
            && (self.phase.is_empty() || object.phase.as_str() == self.phase)
            && (self.handler.is_empty()
                || object
                    .handlers
                    .iter()
                    .any(|h| is_same_or_child(&h.id, &self.handler)))
            && words.iter().all(|word| mentions(object, word))
    }
}

fn is_same_or_child(id: &str, handler: &str) -> bool {
    id == handler
        || id
            .strip_prefix(handler)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `word` (lower case) occurs in any of the object's searchable texts.
fn mentions(object: &ObjectView, word: &str) -> bool {
    let texts = [
        object.name.as_str(),
        object.namespace.as_str(),
        object.resource.as_str(),
        object.uid.as_str(),
        object.cause.as_str(),
        object.phase.as_str(),
    ];
    texts.iter().any(|text| contains_ignore_case(text, word))
        || object.handlers.iter().any(|h| {
            contains_ignore_case(&h.id, word)
                || h.message
                    .as_deref()
                    .is_some_and(|m| contains_ignore_case(m, word))
        })
}

/// Case-insensitive substring search; `needle` must be lower case. Allocation-free for ASCII.
pub(crate) fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if haystack.is_ascii() && needle.is_ascii() {
        let needle = needle.as_bytes();
        return haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle));
    }
    haystack.to_lowercase().contains(needle)
}

/// The most attempts of any handler.
pub(crate) fn attempts(object: &ObjectView) -> u32 {
    object.handlers.iter().map(|h| h.retries).max().unwrap_or(0)
}

fn compare(a: &ObjectView, b: &ObjectView, key: SortKey) -> Ordering {
    let natural = || {
        a.resource
            .cmp(&b.resource)
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    };
    match key {
        SortKey::Resource => natural(),
        SortKey::Namespace => a
            .namespace
            .cmp(&b.namespace)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(natural),
        SortKey::Name => a
            .name
            .cmp(&b.name)
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(natural),
        SortKey::Phase => a.phase.rank().cmp(&b.phase.rank()).then_with(natural),
        SortKey::Attempts => attempts(a).cmp(&attempts(b)).then_with(natural),
        SortKey::Updated => a.updated.cmp(&b.updated).then_with(natural),
    }
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listing {
    /// The rows of the page.
    pub(crate) rows: Vec<ObjectView>,
    /// Objects matching the filters.
    pub(crate) matched: usize,
    /// Objects in the model.
    pub(crate) total: usize,
    /// The page shown (clamped to the last page), from 1.
    pub(crate) page: usize,
    /// Pages in all (at least 1).
    pub(crate) pages: usize,
    /// The index of the first row among the matches (0-based).
    pub(crate) offset: usize,
}

/// Filters, sorts and paginates `objects` for `query`.
pub(crate) fn list<O: Borrow<ObjectView>>(objects: &[O], query: &ListQuery) -> Listing {
    let words: Vec<String> = query
        .text
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let mut matching: Vec<&ObjectView> = objects
        .iter()
        .map(Borrow::borrow)
        .filter(|o| query.matches(o, &words))
        .collect();
    let matched = matching.len();
    let pages = matched.div_ceil(query.per_page).max(1);
    let page = query.page.clamp(1, pages);
    let offset = (page - 1) * query.per_page;
    let end = (offset + query.per_page).min(matched);
    let ordering = |a: &&ObjectView, b: &&ObjectView| {
        let order = compare(a, b, query.sort);
        if query.descending {
            order.reverse()
        } else {
            order
        }
    };
    // Only the rows up to the page's end need to be in order.
    if end < matched && end > 0 {
        matching.select_nth_unstable_by(end - 1, ordering);
        matching.truncate(end);
    }
    matching.sort_unstable_by(ordering);
    let rows = matching
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|o| (*o).clone())
        .collect();
    Listing {
        rows,
        matched,
        total: objects.len(),
        page,
        pages,
        offset,
    }
}

/// Counts per phase, in [`PHASES`] order (phases without objects included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PhaseCounts {
    /// Per phase, at its [`ObjectPhase::rank`].
    counts: [usize; PHASES.len()],
    /// All objects counted.
    pub(crate) total: usize,
}

impl PhaseCounts {
    fn add(&mut self, phase: ObjectPhase) {
        self.counts[phase.rank()] += 1;
        self.total += 1;
    }

    /// The count of one phase.
    pub(crate) fn get(&self, phase: ObjectPhase) -> usize {
        self.counts[phase.rank()]
    }

    /// Every phase with its count, in their order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ObjectPhase, usize)> + '_ {
        PHASES.iter().map(|p| (*p, self.get(*p)))
    }
}

/// What the filters offer and the overview counts, over all objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facets {
    /// Objects per phase.
    pub(crate) phases: PhaseCounts,
    /// Objects per phase, per resource.
    pub(crate) resources: BTreeMap<String, PhaseCounts>,
    /// Objects per namespace.
    pub(crate) namespaces: BTreeMap<String, usize>,
    /// Objects per handler id (sub-handlers included).
    pub(crate) handlers: BTreeMap<String, usize>,
}

/// Counts `objects`; `resources` are listed even without objects.
pub(crate) fn facets<O: Borrow<ObjectView>>(objects: &[O], resources: &[String]) -> Facets {
    let mut facets = Facets::default();
    for resource in resources {
        facets.resources.entry(resource.clone()).or_default();
    }
    for object in objects {
        let object: &ObjectView = object.borrow();
        facets.phases.add(object.phase);
        match facets.resources.get_mut(&object.resource) {
            Some(counts) => counts.add(object.phase),
            None => {
                let mut counts = PhaseCounts::default();
                counts.add(object.phase);
                facets.resources.insert(object.resource.clone(), counts);
            }
        }
        match facets.namespaces.get_mut(&object.namespace) {
            Some(n) => *n += 1,
            None => {
                facets.namespaces.insert(object.namespace.clone(), 1);
            }
        }
        for handler in &object.handlers {
            match facets.handlers.get_mut(&handler.id) {
                Some(n) => *n += 1,
                None => {
                    facets.handlers.insert(handler.id.clone(), 1);
                }
            }
        }
    }
    facets
}

/// Percent-encodes a URL query component (RFC 3986 unreserved characters stay).
pub(crate) fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{ObjectExt, handler, object};
    use crate::model::{HandlerStatus as S, ObjectPhase as P};

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn names(listing: &Listing) -> Vec<&str> {
        listing.rows.iter().map(|o| o.name.as_str()).collect()
    }

    fn sample() -> Vec<ObjectView> {
        let mut retrying = handler("create_fn", S::Retrying);
        retrying.retries = 3;
        retrying.message = Some("Database is NOT ready".into());
        let mut failed = handler("create_fn/child", S::Failed);
        failed.retries = 1;
        vec![
            object("alpha", "a1", P::Handled).updated("2026-01-01T00:00:03Z"),
            object("alpha", "b2", P::Retrying)
                .handlers(vec![retrying])
                .updated("2026-01-01T00:00:01Z"),
            object("beta", "c3", P::Failed)
                .handlers(vec![handler("create_fn", S::Pending), failed])
                .updated("2026-01-01T00:00:02Z"),
            object("beta", "a0", P::InProgress)
                .resource("gadgets.example.com/v1")
                .handlers(vec![handler("update_fn", S::Pending)]),
        ]
    }

    #[test]
    fn parameters_are_validated_with_defaults() {
        let q = ListQuery::from_params(&params(&[
            ("namespace", " alpha "),
            ("sort", "bogus"),
            ("dir", "sideways"),
            ("page", "-3"),
            ("per_page", "100000"),
        ]));
        assert_eq!(q.namespace, "alpha");
        assert_eq!(q.sort, SortKey::Resource);
        assert!(!q.descending);
        assert_eq!(q.page, 1);
        assert_eq!(q.per_page, MAX_PER_PAGE);
        let q = ListQuery::from_params(&params(&[("sort", "updated"), ("dir", "desc")]));
        assert_eq!((q.sort, q.descending), (SortKey::Updated, true));
        assert_eq!(ListQuery::from_params(&params(&[])), ListQuery::default());
    }

    #[test]
    fn href_round_trips_and_leaves_defaults_out() {
        assert_eq!(ListQuery::default().href(), "/objects");
        let q = ListQuery {
            namespace: "a b&c".into(),
            text: "ü".into(),
            sort: SortKey::Name,
            descending: true,
            page: 3,
            ..ListQuery::default()
        };
        assert_eq!(
            q.href(),
            "/objects?namespace=a%20b%26c&q=%C3%BC&sort=name&dir=desc&page=3"
        );
        let decoded: HashMap<String, String> = q
            .href()
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), percent_decode(v))
            })
            .collect();
        assert_eq!(ListQuery::from_params(&decoded), q);
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn filters_combine() {
        let objects = sample();
        let by = |pairs: &[(&str, &str)]| {
            let listing = list(&objects, &ListQuery::from_params(&params(pairs)));
            names(&listing)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(by(&[]), ["a0", "a1", "b2", "c3"]);
        assert_eq!(by(&[("namespace", "alpha")]), ["a1", "b2"]);
        assert_eq!(by(&[("phase", "failed")]), ["c3"]);
        assert_eq!(by(&[("resource", "gadgets.example.com/v1")]), ["a0"]);
        // A handler matches itself and its sub-handlers, not a mere prefix.
        assert_eq!(by(&[("handler", "create_fn")]), ["a1", "b2", "c3"]);
        assert_eq!(by(&[("handler", "create_fn/child")]), ["c3"]);
        assert_eq!(by(&[("handler", "create")]), Vec::<String>::new());
        // Text: every word, case-insensitively, anywhere (messages included).
        assert_eq!(by(&[("q", "not READY")]), ["b2"]);
        assert_eq!(by(&[("q", "beta update")]), ["a0"]);
        assert_eq!(by(&[("q", "uid-c3")]), ["c3"]);
        assert_eq!(
            by(&[("namespace", "alpha"), ("q", "c3")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn sorting_by_every_column_both_ways() {
        let objects = sample();
        let sorted = |sort: &str, dir: &str| {
            let q = ListQuery::from_params(&params(&[("sort", sort), ("dir", dir)]));
            names(&list(&objects, &q))
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(sorted("name", "asc"), ["a0", "a1", "b2", "c3"]);
        assert_eq!(sorted("name", "desc"), ["c3", "b2", "a1", "a0"]);
        assert_eq!(sorted("namespace", "asc"), ["a1", "b2", "a0", "c3"]);
        assert_eq!(sorted("phase", "asc"), ["c3", "b2", "a0", "a1"]);
        assert_eq!(sorted("attempts", "desc"), ["b2", "c3", "a1", "a0"]);
        assert_eq!(sorted("updated", "desc"), ["a0", "a1", "c3", "b2"]);
        assert_eq!(sorted("resource", "asc"), ["a0", "a1", "b2", "c3"]);
    }

    #[test]
    fn header_clicks_toggle_direction_and_reset_the_page() {
        let q = ListQuery {
            page: 4,
            ..ListQuery::default()
        };
        let by_name = q.sorted_by(SortKey::Name);
        assert_eq!(
            (by_name.sort, by_name.descending, by_name.page),
            (SortKey::Name, false, 1)
        );
        assert!(by_name.sorted_by(SortKey::Name).descending);
        assert!(
            q.sorted_by(SortKey::Updated).descending,
            "times: newest first"
        );
    }

    #[test]
    fn pagination_clamps_and_counts() {
        let objects: Vec<ObjectView> = (0..250)
            .map(|i| object("ns", &format!("o{i:03}"), P::Handled))
            .collect();
        let page = |n: &str, per: &str| {
            list(
                &objects,
                &ListQuery::from_params(&params(&[("page", n), ("per_page", per)])),
            )
        };
        let first = page("1", "100");
        assert_eq!(
            (first.rows.len(), first.pages, first.matched, first.offset),
            (100, 3, 250, 0)
        );
        assert_eq!(first.rows[0].name, "o000");
        let last = page("3", "100");
        assert_eq!((last.rows.len(), last.page), (50, 3));
        assert_eq!(last.rows[0].name, "o200");
        assert_eq!(last.rows[49].name, "o249");
        let beyond = page("99", "100");
        assert_eq!((beyond.page, beyond.rows[0].name.as_str()), (3, "o200"));
        let empty = list::<ObjectView>(&[], &ListQuery::default());
        assert_eq!((empty.rows.len(), empty.page, empty.pages), (0, 1, 1));
    }

    #[test]
    fn a_partial_sort_gives_the_same_page_as_a_full_one() {
        let objects: Vec<ObjectView> = (0..1000)
            .map(|i| {
                let mut h = handler("h", S::Retrying);
                h.retries = (i * 7919 % 13) as u32;
                object(&format!("ns{}", i % 7), &format!("o{i}"), P::Retrying).handlers(vec![h])
            })
            .collect();
        for page in 1..=4 {
            let q = ListQuery {
                sort: SortKey::Attempts,
                descending: true,
                page,
                per_page: 250,
                ..ListQuery::default()
            };
            let mut all: Vec<&ObjectView> = objects.iter().collect();
            all.sort_by(|a, b| compare(a, b, SortKey::Attempts).reverse());
            let expected: Vec<&str> = all[(page - 1) * 250..page * 250]
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            assert_eq!(names(&list(&objects, &q)), expected, "page {page}");
        }
    }

    #[test]
    fn facets_count_phases_resources_namespaces_and_handlers() {
        let facets = facets(&sample(), &["empties.example.com/v1".to_owned()]);
        assert_eq!(facets.phases.total, 4);
        assert_eq!(facets.phases.get(P::Failed), 1);
        assert_eq!(facets.phases.get(P::Deleting), 0);
        let phases: Vec<P> = facets.phases.iter().map(|(p, _)| p).collect();
        assert_eq!(phases, PHASES);
        assert_eq!(facets.resources["widgets.example.com/v1"].total, 3);
        assert_eq!(facets.resources["empties.example.com/v1"].total, 0);
        assert_eq!(facets.namespaces["beta"], 2);
        assert_eq!(facets.handlers["create_fn"], 3);
        assert_eq!(facets.handlers["create_fn/child"], 1);
    }

    #[test]
    fn case_insensitive_search() {
        assert!(contains_ignore_case("Database NOT ready", "not r"));
        assert!(!contains_ignore_case("abc", "abcd"));
        assert!(contains_ignore_case("ÄRGER", "ärg"));
        assert!(contains_ignore_case("x", ""));
    }
}
