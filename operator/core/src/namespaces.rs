//! Which namespaces the core serves: `-n NAME` (a namespace by name) or Kopf's namespace patterns
//! (`-n 'app-*'`, `-n '!kube-*'`, `-n 'app-*, !*-pr-*, *-pr-1'`), with Kopf's rules exactly:
//!
//! - a pattern is a comma-separated list of globs (spaces around them are ignored);
//! - a glob has `*` (any characters), `?` (one character) and `[seq]`/`[!seq]` (Python's
//!   `fnmatch`, case-sensitive);
//! - a glob that starts with `!` excludes; when the first glob excludes, a leading `*` is implied;
//! - left to right: the first glob decides the initial match, an exclusion un-matches, and a later
//!   inclusion re-matches only a namespace that the first glob matched;
//! - a namespace is served when any of the patterns matches it.
//!
//! Plain names (no `*?!,` — Kopf's `select_specific_namespaces`) are watched one namespace at a
//! time; with any pattern, the core watches cluster-wide and drops the objects of the namespaces
//! that do not match ([`Namespaces::Patterns`]). The match depends on the namespace's name alone,
//! which never changes, so this serves exactly the objects that Kopf's per-namespace watches
//! would, also in namespaces created after the start.

/// The namespaces the core serves.
#[derive(Debug, Clone)]
pub enum Namespaces {
    /// Every namespace (`-A`).
    All,
    /// These namespaces, by name: one watch each.
    Named(Vec<String>),
    /// Patterns (and names, and regular expressions): watched cluster-wide, filtered by
    /// [`Namespaces::serves`].
    Patterns(Vec<String>, Vec<regex::Regex>),
}

impl PartialEq for Namespaces {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Namespaces::All, Namespaces::All) => true,
            (Namespaces::Named(a), Namespaces::Named(b)) => a == b,
            (Namespaces::Patterns(a, x), Namespaces::Patterns(b, y)) => {
                a == b
                    && x.iter()
                        .map(regex::Regex::as_str)
                        .eq(y.iter().map(regex::Regex::as_str))
            }
            _ => false,
        }
    }
}

/// A `--namespace-regex` that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("--namespace-regex {pattern:?} is not a valid regular expression")]
pub struct BadRegex {
    /// The expression.
    pub pattern: String,
    /// Why.
    #[source]
    pub source: regex::Error,
}

impl Namespaces {
    /// From the `-n` options: empty means all; any pattern makes them all patterns.
    pub fn from_options(options: &[String]) -> Self {
        if options.is_empty() {
            Namespaces::All
        } else if options.iter().any(|o| is_pattern(o)) {
            Namespaces::Patterns(options.to_vec(), Vec::new())
        } else {
            Namespaces::Named(options.to_vec())
        }
    }

    /// From the `-n` options and `--namespace-regex` expressions (Kopf's `re.compile(...)`
    /// namespaces: a namespace is served when the whole name matches): any expression makes
    /// them all patterns.
    ///
    /// # Errors
    /// An expression that does not compile.
    pub fn with_regexes(options: &[String], regexes: &[String]) -> Result<Self, BadRegex> {
        if regexes.is_empty() {
            return Ok(Self::from_options(options));
        }
        let compiled = regexes
            .iter()
            .map(|r| {
                regex::Regex::new(&format!(r"\A(?:{r})\z")).map_err(|source| BadRegex {
                    pattern: r.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Namespaces::Patterns(options.to_vec(), compiled))
    }

    /// Whether objects in `namespace` are served (a cluster-wide object: always).
    pub fn serves(&self, namespace: Option<&str>) -> bool {
        match (self, namespace) {
            (_, None | Some("")) | (Namespaces::All, _) => true,
            (Namespaces::Named(names), Some(ns)) => names.iter().any(|n| n == ns),
            (Namespaces::Patterns(patterns, regexes), Some(ns)) => {
                patterns.iter().any(|p| matches_pattern(ns, p))
                    || regexes.iter().any(|r| r.is_match(ns))
            }
        }
    }
}

/// Whether an `-n` option is a pattern rather than a name.
pub fn is_pattern(option: &str) -> bool {
    option.contains(['*', '?', '!', ','])
}

/// Kopf's `match_namespace` for one pattern (see the module's rules).
pub fn matches_pattern(name: &str, pattern: &str) -> bool {
    let mut globs: Vec<&str> = pattern.split(',').map(str::trim).collect();
    if globs.first().is_none_or(|g| g.starts_with('!')) {
        globs.insert(0, "*");
    }
    let first = glob(name, globs[0]);
    let mut matched = first;
    for g in &globs[1..] {
        if let Some(excluded) = g.strip_prefix('!') {
            // Kopf strips every leading `!`.
            let excluded = excluded.trim_start_matches('!');
            matched = matched && !glob(name, excluded);
        } else {
            matched = matched || (first && glob(name, g));
        }
    }
    matched
}

/// Python's `fnmatch.fnmatchcase`: `*`, `?`, `[seq]`, `[!seq]` (ranges `a-z`); a `[` without
/// its `]` is literal.
pub fn glob(name: &str, pattern: &str) -> bool {
    let n: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    glob_at(&n, &p)
}

fn glob_at(n: &[char], p: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| glob_at(&n[i..], &p[1..])),
        Some('?') => !n.is_empty() && glob_at(&n[1..], &p[1..]),
        Some('[') => match class(&p[1..]) {
            Some((set, rest)) => n
                .first()
                .is_some_and(|c| set.contains(*c) && glob_at(&n[1..], rest)),
            None => n.first() == Some(&'[') && glob_at(&n[1..], &p[1..]),
        },
        Some(c) => n.first() == Some(c) && glob_at(&n[1..], &p[1..]),
    }
}

/// A character class after its `[`: the set and the pattern after its `]`.
struct Class {
    negated: bool,
    items: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.items.iter().any(|(a, b)| *a <= c && c <= *b) != self.negated
    }
}

fn class(p: &[char]) -> Option<(Class, &[char])> {
    let (negated, mut i) = match p.first() {
        Some('!') => (true, 1),
        _ => (false, 0),
    };
    // A `]` right at the start is a member, as in Python.
    let start = i;
    let mut items = Vec::new();
    loop {
        let c = *p.get(i)?;
        if c == ']' && i > start {
            return Some((Class { negated, items }, &p[i + 1..]));
        }
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|e| *e != ']') {
            items.push((c, p[i + 2]));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_fnmatch() {
        assert!(glob("app-1", "app-*"));
        assert!(glob("app-", "app-*"));
        assert!(!glob("myapp-1", "app-*"));
        assert!(glob("app-1", "app-?"));
        assert!(!glob("app-12", "app-?"));
        assert!(glob("app-1", "app-[0-9]"));
        assert!(!glob("app-x", "app-[0-9]"));
        assert!(glob("app-x", "app-[!0-9]"));
        assert!(glob("a[b", "a[b"));
        assert!(!glob("App-1", "app-*"));
    }

    #[test]
    fn kopf_documented_examples() {
        let p = "myapp-*, !*-pr-*, *pr-123";
        assert!(matches_pattern("myapp-test", p));
        assert!(matches_pattern("myapp-live", p));
        assert!(matches_pattern("myapp-pr-123", p));
        assert!(!matches_pattern("myapp-pr-456", p));
        assert!(!matches_pattern("otherapp-pr-123", p));
        let q = "!*-pr-*, *pr-123";
        assert!(matches_pattern("myapp-test", q));
        assert!(matches_pattern("anyapp-anything", q));
        assert!(matches_pattern("otherapp-pr-123", q));
        assert!(!matches_pattern("myapp-pr-456", q));
    }

    #[test]
    fn an_exclusion_alone_implies_everything_else() {
        assert!(matches_pattern("default", "!kube-*"));
        assert!(!matches_pattern("kube-system", "!kube-*"));
        assert!(!matches_pattern("kube-system", "!!kube-*"));
    }

    #[test]
    fn regexes_match_whole_names() {
        let ns = Namespaces::with_regexes(&[], &["app-[0-9]+".into(), "(?i)TOOLS".into()]).unwrap();
        assert!(ns.serves(Some("app-12")));
        assert!(
            !ns.serves(Some("app-12x")),
            "the whole name, as Python's fullmatch"
        );
        assert!(!ns.serves(Some("my-app-1")));
        assert!(ns.serves(Some("tools")));
        let both = Namespaces::with_regexes(&["kube-*".into()], &["x|y".into()]).unwrap();
        assert!(both.serves(Some("kube-a")) && both.serves(Some("y")) && !both.serves(Some("xy")));
        assert!(Namespaces::with_regexes(&[], &["(?<=a)b".into()]).is_err());
    }

    #[test]
    fn options_become_names_or_patterns() {
        assert_eq!(Namespaces::from_options(&[]), Namespaces::All);
        let named = Namespaces::from_options(&["a".into(), "b".into()]);
        assert_eq!(named, Namespaces::Named(vec!["a".into(), "b".into()]));
        assert!(named.serves(Some("a")) && !named.serves(Some("c")) && named.serves(None));
        let pats = Namespaces::from_options(&["app-*".into(), "tools".into()]);
        assert!(pats.serves(Some("app-1")));
        assert!(pats.serves(Some("tools")));
        assert!(!pats.serves(Some("tools-2")));
        assert!(!pats.serves(Some("default")));
        assert!(pats.serves(None), "cluster-wide objects are always served");
    }
}
