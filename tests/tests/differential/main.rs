//! Differential tests of the pure core (`operon-core`) against real Kopf 1.45.2 from PyPI, case
//! by case (issue 18):
//!
//! - **essences**: random bodies through what a handling cycle first does — the stored diff-base
//!   read and cleared, the essence built and cleared, their diff, the cause
//!   ([`Essence::load`], [`Observed::of`]) — and the diff-base written
//!   ([`DiffBaseStorage::store`]); against Kopf's `processing._detect_causes` and
//!   `AnnotationsDiffBaseStorage.store`, compared as Python's JSON text, byte for byte;
//! - **diffs**: random pairs of essences through [`diff()`] against Kopf's `diffs.diff`;
//! - **causes**: every combination of what decides the changing cause (event type, deletion,
//!   finalizers, diff-base, change, initial listing), exhaustively.
//!
//! Kopf answers through one `tests/kopf/kopf_expect.py --serve` per target, in batches; no
//! control plane is involved. The random cases come from proptest strategies ([`generate`]) on
//! a fixed seed (`OPERON_DIFFERENTIAL_SEED` changes it); `OPERON_DIFFERENTIAL_CASES` sets their
//! number per target (default 2,000, as `./tests/run.sh` runs them). A disagreement is shrunk —
//! proptest's value trees, asking Kopf again at each step — and reported with the input and both
//! answers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::time::Instant;

use operon_core::cause::{self, Cause, Observation};
use operon_core::finalizer::DEFAULT_FINALIZER;
use operon_core::handling::{Essence, Observed, cause_name};
use operon_core::persistence::{
    DiffBaseStorage, DiffItem, MergePatch, ProgressStorage, diff, parse_field, pyjson,
};
use operon_e2e::kopf::{KOPF_VERSION, KopfServer};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

mod generate;

use generate::{blend, body, json_object, json_value};

/// Random cases per target unless `OPERON_DIFFERENTIAL_CASES` says otherwise.
const DEFAULT_CASES: usize = 2_000;
/// Cases per request to Kopf.
const BATCH: usize = 500;
/// Shrinking stops after this many questions to Kopf.
const MAX_SHRINK_STEPS: usize = 2_000;

#[test]
fn essences_and_diff_bases_are_kopfs() {
    let tally = differential::<Essences>();
    if cases() >= DEFAULT_CASES {
        // The generator reaches every outcome (a check that could fail on a degenerate one).
        for outcome in [
            "create",
            "update",
            "noop",
            "resume",
            "delete",
            "free",
            "gone",
            "refused",
            "kopf raises on a broken stanza",
            "kopf raises on a field through a non-object",
        ] {
            assert!(
                tally.contains_key(outcome),
                "no case gave {outcome}: {tally:?}"
            );
        }
    }
}

#[test]
fn diffs_are_kopfs() {
    let tally = differential::<Diffs>();
    if cases() >= DEFAULT_CASES {
        for outcome in ["empty", "add", "remove", "change", "nested"] {
            assert!(
                tally.contains_key(outcome),
                "no case gave {outcome}: {tally:?}"
            );
        }
    }
}

#[test]
fn causes_are_kopfs_for_every_combination() {
    let started = Instant::now();
    let cases = cause_cases();
    let items: Vec<Value> = cases.iter().map(CauseCase::request).collect();
    let mut kopf = KopfServer::start().expect("starting kopf_expect.py");
    let answers = ask_batch(&mut kopf, "causes", items);
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (case, answer) in cases.iter().zip(&answers) {
        let ours = case.ours();
        if let Err(mismatch) = case.compare(&ours, answer) {
            panic!(
                "the cause differs from Kopf's\n  case:  {}\n  input: {}\n{mismatch}",
                case.label,
                case.request()
            );
        }
        *tally.entry(ours.reason).or_default() += 1;
    }
    eprintln!(
        "[differential] causes: all {} combinations agree with Kopf {KOPF_VERSION} in {:.1?}: {tally:?}",
        cases.len(),
        started.elapsed()
    );
    for reason in [
        "gone", "free", "delete", "create", "resume", "noop", "update",
    ] {
        assert!(tally.contains_key(reason), "no combination gave {reason}");
    }
}

// ------------------------------------------------------------------------------------------------
// The driver: batches of generated cases, each compared with Kopf's answer; the first
// disagreement is shrunk and reported.

/// One differential target.
trait Target {
    /// A generated case.
    type Case: Clone + Debug;
    /// The request field of `kopf_expect.py` (a batch of [`Target::request`]s).
    const FIELD: &'static str;
    /// How cases are generated.
    fn strategy() -> BoxedStrategy<Self::Case>;
    /// The case as an item of the batch.
    fn request(case: &Self::Case) -> Value;
    /// Compares our answer with Kopf's; on agreement, the kind of case (for the tally).
    fn compare(case: &Self::Case, kopf: &Value) -> Result<&'static str, Mismatch>;
}

/// Where our answer and Kopf's differ.
#[derive(Debug)]
struct Mismatch {
    what: String,
    ours: String,
    kopf: String,
}

impl Mismatch {
    fn new(what: impl Into<String>, ours: impl ToString, kopf: impl ToString) -> Self {
        Mismatch {
            what: what.into(),
            ours: ours.to_string(),
            kopf: kopf.to_string(),
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {} differs:\n    ours: {}\n    Kopf: {}",
            self.what, self.ours, self.kopf
        )
    }
}

/// Equal values give no mismatch; otherwise `what` with both values.
fn expect_eq(what: &str, ours: &str, kopf: &str) -> Result<(), Mismatch> {
    if ours == kopf {
        Ok(())
    } else {
        Err(Mismatch::new(what, ours, kopf))
    }
}

fn cases() -> usize {
    std::env::var("OPERON_DIFFERENTIAL_CASES")
        .ok()
        .map(|n| {
            n.replace(['_', ','], "")
                .parse()
                .unwrap_or_else(|_| panic!("OPERON_DIFFERENTIAL_CASES={n} is not a number"))
        })
        .unwrap_or(DEFAULT_CASES)
}

/// A fixed seed per target (or `OPERON_DIFFERENTIAL_SEED`), so that a red run is reproducible.
fn runner(field: &str) -> TestRunner {
    let base = std::env::var("OPERON_DIFFERENTIAL_SEED").unwrap_or_else(|_| "operon".into());
    let mut seed = [0u8; 32];
    for (i, byte) in format!("{base}/{field}").bytes().enumerate() {
        seed[i % 32] ^= byte.rotate_left(i as u32 / 32);
    }
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    )
}

fn ask_batch(kopf: &mut KopfServer, field: &str, items: Vec<Value>) -> Vec<Value> {
    let count = items.len();
    let mut answer = kopf
        .ask(&json!({ field: items }))
        .unwrap_or_else(|err| panic!("asking Kopf for {field}: {err:#}"));
    match answer.get_mut(field).map(Value::take) {
        Some(Value::Array(answers)) if answers.len() == count => answers,
        other => panic!("Kopf answered {count} {field} with {other:?}"),
    }
}

fn differential<T: Target>() -> BTreeMap<&'static str, usize> {
    let cases = cases();
    let started = Instant::now();
    let mut kopf = KopfServer::start().expect("starting kopf_expect.py");
    let mut runner = runner(T::FIELD);
    let strategy = T::strategy();
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut asking = std::time::Duration::ZERO;
    let mut done = 0;
    while done < cases {
        let trees: Vec<_> = (0..BATCH.min(cases - done))
            .map(|_| strategy.new_tree(&mut runner).expect("no rejections"))
            .collect();
        let values: Vec<T::Case> = trees.iter().map(ValueTree::current).collect();
        let items = values.iter().map(T::request).collect();
        let asked = Instant::now();
        let answers = ask_batch(&mut kopf, T::FIELD, items);
        asking += asked.elapsed();
        for (i, ((tree, case), answer)) in trees.into_iter().zip(&values).zip(&answers).enumerate()
        {
            match T::compare(case, answer) {
                Ok(kind) => *tally.entry(kind).or_default() += 1,
                Err(mismatch) => {
                    let original = T::request(case);
                    let (input, mismatch, steps) = shrink::<T>(&mut kopf, tree, mismatch);
                    panic!(
                        "{} case #{} differs from Kopf {KOPF_VERSION} (shrunk in {steps} steps)\n  \
                         input: {input}\n{mismatch}\n  original input: {original}",
                        T::FIELD,
                        done + i,
                    );
                }
            }
        }
        done += answers.len();
    }
    eprintln!(
        "[differential] {}: {cases} cases agree with Kopf {KOPF_VERSION} in {:.1?} \
         ({:.1?} of it waiting for Kopf): {tally:?}",
        T::FIELD,
        started.elapsed(),
        asking,
    );
    tally
}

/// Shrinks a disagreeing case: simpler and simpler versions, each asked of Kopf, while they
/// still disagree. Returns the simplest input, its mismatch and the number of questions.
fn shrink<T: Target>(
    kopf: &mut KopfServer,
    mut tree: BoxedTree<T::Case>,
    mismatch: Mismatch,
) -> (Value, Mismatch, usize) {
    let mut best = (T::request(&tree.current()), mismatch);
    let mut steps = 0;
    if !tree.simplify() {
        return (best.0, best.1, steps);
    }
    while steps < MAX_SHRINK_STEPS {
        steps += 1;
        let case = tree.current();
        let answer = ask_batch(kopf, T::FIELD, vec![T::request(&case)]).remove(0);
        let more = match T::compare(&case, &answer) {
            Err(mismatch) => {
                best = (T::request(&case), mismatch);
                tree.simplify()
            }
            Ok(_) => tree.complicate(),
        };
        if !more {
            break;
        }
    }
    (best.0, best.1, steps)
}

type BoxedTree<T> = Box<dyn ValueTree<Value = T>>;

// ------------------------------------------------------------------------------------------------
// Target 1: essences, diff-bases, diffs and causes of random bodies.

#[derive(Debug, Clone)]
struct EssenceCase {
    body: Value,
    extra_fields: Vec<String>,
    event: Option<&'static str>,
    initial: bool,
}

struct Essences;

impl Target for Essences {
    type Case = EssenceCase;
    const FIELD: &'static str = "essences";

    fn strategy() -> BoxedStrategy<EssenceCase> {
        (
            body(),
            prop::sample::select(EXTRA_FIELDS),
            prop::sample::select(EVENTS),
            any::<bool>(),
        )
            .prop_map(|(body, extra, event, initial)| EssenceCase {
                body,
                extra_fields: extra.iter().map(|f| (*f).to_owned()).collect(),
                event,
                initial,
            })
            .boxed()
    }

    fn request(case: &EssenceCase) -> Value {
        json!({
            "body": case.body,
            "extra_fields": case.extra_fields,
            "type": case.event,
            "initial": case.initial,
        })
    }

    fn compare(case: &EssenceCase, kopf: &Value) -> Result<&'static str, Mismatch> {
        let diffbase = DiffBaseStorage::default();
        let extra: Vec<_> = case.extra_fields.iter().map(|f| parse_field(f)).collect();
        let loaded = Essence::load(&diffbase, &ProgressStorage::default(), &case.body, &extra);
        let essence = match (loaded, kopf.get("error")) {
            (Err(_), Some(_)) => return Ok("refused"),
            (Err(ours), None) => return Err(Mismatch::new("the outcome", ours, "no error")),
            (Ok(_), Some(_)) if has_broken_stanza(&diffbase, case, &extra) => {
                return Ok("kopf raises on a broken stanza");
            }
            (Ok(_), Some(_)) if extra_field_through_a_non_object(case) => {
                return Ok("kopf raises on a field through a non-object");
            }
            (Ok(_), Some(error)) => return Err(Mismatch::new("the outcome", "no error", error)),
            (Ok(essence), None) => essence,
        };
        let text = |v: Option<&Value>| v.map_or_else(|| "null".to_owned(), pyjson::dumps);
        let kopf_text = |field: &str| match &kopf[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        expect_eq(
            "the stored essence (old)",
            &text(essence.old.as_ref()),
            &kopf_text("old"),
        )?;
        expect_eq(
            "the essence (new)",
            &pyjson::dumps(&essence.new),
            &kopf_text("new"),
        )?;
        let mut patch = MergePatch::new();
        diffbase.store(&case.body, &mut patch, &essence.new);
        expect_eq(
            "the diff-base patch",
            &pyjson::dumps(patch.as_value()),
            &kopf_text("stored"),
        )?;
        compare_diffs(
            essence.old.as_ref(),
            Some(&essence.new),
            &essence.diff,
            &kopf["diff"],
        )?;
        let cause = our_cause(&case.body, case.event, case.initial, &essence);
        expect_eq("the cause", cause_name(cause), &kopf_text("reason"))?;
        Ok(cause_name(cause))
    }
}

/// A known divergence (documented at [`DiffBaseStorage`]): an extra field whose path passes
/// through a value that is not an object (`spec.a.b` with `spec.a: null`). Kopf's `cherrypick`
/// raises `TypeError` there; Operon copies nothing, as Kopf's `dicts.resolve` says it should.
fn extra_field_through_a_non_object(case: &EssenceCase) -> bool {
    case.extra_fields.iter().any(|field| {
        let mut current = &case.body;
        for key in parse_field(field) {
            match current {
                Value::Object(map) => match map.get(&key) {
                    Some(next) => current = next,
                    None => return false,
                },
                _ => return true,
            }
        }
        false
    })
}

/// A known divergence (documented at [`DiffBaseStorage::fetch`]): where the stored
/// essence or the new one (before `clear()`) has a `metadata`, `metadata.annotations`, `status`
/// or `status.kopf` that is not an object, Kopf's storages raise in `clear()`; Operon reads the
/// broken part as it is.
fn has_broken_stanza(
    diffbase: &DiffBaseStorage,
    case: &EssenceCase,
    extra: &[Vec<String>],
) -> bool {
    let broken = |essence: &Value| {
        let not_an_object =
            |pointer: &str| essence.pointer(pointer).is_some_and(|v| !v.is_object());
        [
            "/metadata",
            "/metadata/annotations",
            "/status",
            "/status/kopf",
        ]
        .into_iter()
        .any(not_an_object)
    };
    let old = diffbase.fetch(&case.body).ok().flatten();
    old.as_ref().is_some_and(broken) || broken(&diffbase.build(&case.body, extra))
}

/// Our cause, as the runtime reaches it: a DELETED event is GONE before anything else is looked
/// at; any other event goes through [`Observed::of`].
fn our_cause(body: &Value, event: Option<&str>, initial: bool, essence: &Essence) -> Cause {
    let observed = Observed::of(body, DEFAULT_FINALIZER, essence, initial);
    if event == Some("DELETED") {
        cause::detect(Observation {
            gone: true,
            deletion_ongoing: observed.deleting,
            has_our_finalizer: observed.blocked,
            has_diffbase: essence.old.is_some(),
            changed: !essence.diff.is_empty(),
            initial,
        })
    } else {
        observed.cause
    }
}

/// The fields of field handlers (`extra_fields`): none or one. With two or more that create new
/// keys, Kopf's key order depends on Python's hash seed (a documented caveat of
/// [`DiffBaseStorage`]).
const EXTRA_FIELDS: &[&[&str]] = &[
    &[],
    &[],
    &[],
    &["status.phase"],
    &["status"],
    &["status.kopf.progress"],
    &["metadata.name"],
    &["metadata.labels"],
    &["metadata.annotations"],
    &["spec.a"],
    &["spec.a.b"],
    &["data"],
];

const EVENTS: &[Option<&str>] = &[
    None,
    Some("ADDED"),
    Some("MODIFIED"),
    Some("MODIFIED"),
    Some("DELETED"),
];

// ------------------------------------------------------------------------------------------------
// Target 2: diffs of random essence pairs.

struct Diffs;

impl Target for Diffs {
    type Case = (Value, Value);
    const FIELD: &'static str = "diffs";

    fn strategy() -> BoxedStrategy<(Value, Value)> {
        prop_oneof![
            1 => (json_value(), json_value()),
            4 => (json_object(), json_object(), any::<u64>(), any::<bool>()).prop_map(
                |(a, b, seed, swap)| {
                    let blended = blend(&a, &b, seed);
                    if swap { (blended, a) } else { (a, blended) }
                }
            ),
        ]
        .boxed()
    }

    fn request((old, new): &(Value, Value)) -> Value {
        json!([old, new])
    }

    fn compare((old, new): &(Value, Value), kopf: &Value) -> Result<&'static str, Mismatch> {
        let ours = diff(Some(old), Some(new));
        compare_diffs(Some(old), Some(new), &ours, kopf)?;
        Ok(match ours.as_slice() {
            [] => "empty",
            items if items.iter().any(|i| i.path.len() > 1) => "nested",
            [first, ..] => first.op.as_str(),
        })
    }
}

/// Compares a diff with Kopf's, item by item: ops, paths and values (as Python's JSON text).
///
/// Kopf walks each level's keys through `frozenset`s, so its order within a level varies with
/// Python's hash seed; what it does fix is checked for both: a depth-first walk (a field's items
/// are consecutive), and at every level the added keys first, then the removed ones, then the
/// keys on both sides. The items are then matched in a canonical order (by that grouping, then
/// by key).
fn compare_diffs(
    old: Option<&Value>,
    new: Option<&Value>,
    ours: &[DiffItem],
    kopf: &Value,
) -> Result<(), Mismatch> {
    let ours: Vec<Item> = ours
        .iter()
        .map(|i| Item {
            op: i.op.as_str().to_owned(),
            path: i.path.clone(),
            old: i.old.as_ref().map_or_else(|| "null".into(), pyjson::dumps),
            new: i.new.as_ref().map_or_else(|| "null".into(), pyjson::dumps),
        })
        .collect();
    let theirs: Vec<Item> = match kopf.as_array() {
        Some(items) => items.iter().map(Item::from_kopf).collect(),
        None => return Err(Mismatch::new("the diff", "a list", kopf)),
    };
    let show = |items: &[Item]| {
        let items: Vec<String> = items.iter().map(Item::to_string).collect();
        format!("[{}]", items.join(", "))
    };
    let mismatch = |what: &str| Mismatch::new(what, show(&ours), show(&theirs));
    if !walk_order_is_kopfs(old, new, &theirs) {
        return Err(mismatch(
            "the diff (Kopf's own order breaks the assumed rule)",
        ));
    }
    if !walk_order_is_kopfs(old, new, &ours) {
        return Err(mismatch("the diff's order"));
    }
    let canonical = |items: &[Item]| {
        let mut sorted: Vec<(Vec<(u8, String)>, String)> = items
            .iter()
            .map(|i| (sort_key(old, new, &i.path), i.to_string()))
            .collect();
        sorted.sort();
        sorted.into_iter().map(|(_, text)| text).collect::<Vec<_>>()
    };
    if canonical(&ours) != canonical(&theirs) {
        return Err(mismatch("the diff"));
    }
    Ok(())
}

/// A diff item as text: `op path old new`.
struct Item {
    op: String,
    path: Vec<String>,
    old: String,
    new: String,
}

impl Item {
    fn from_kopf(item: &Value) -> Item {
        let text = |v: &Value| pyjson::dumps(v);
        Item {
            op: item[0].as_str().unwrap_or("?").to_owned(),
            path: item[1]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|k| k.as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            old: text(&item[2]),
            new: text(&item[3]),
        }
    }
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = pyjson::dumps(&json!(self.path));
        write!(f, "({} {path} {} {})", self.op, self.old, self.new)
    }
}

/// Where a key is in Kopf's walk of its level: 0 only in `new`, 1 only in `old`, 2 in both.
fn group(old: Option<&Value>, new: Option<&Value>, key: &str) -> u8 {
    let has = |v: Option<&Value>| {
        v.and_then(Value::as_object)
            .is_some_and(|m| m.contains_key(key))
    };
    match (has(old), has(new)) {
        (false, true) => 0,
        (true, false) => 1,
        _ => 2,
    }
}

/// `(group, key)` for every level of `path`, walking `old` and `new` side by side.
fn sort_key(old: Option<&Value>, new: Option<&Value>, path: &[String]) -> Vec<(u8, String)> {
    let (mut old, mut new) = (old, new);
    path.iter()
        .map(|key| {
            let level = (group(old, new, key), key.clone());
            old = old.and_then(|v| v.get(key));
            new = new.and_then(|v| v.get(key));
            level
        })
        .collect()
}

/// Whether `items` are in an order Kopf's walk can produce (see [`compare_diffs`]).
fn walk_order_is_kopfs(old: Option<&Value>, new: Option<&Value>, items: &[Item]) -> bool {
    let mut last_seen: HashMap<&[String], usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        for depth in 1..item.path.len() {
            let prefix = &item.path[..depth];
            if last_seen
                .insert(prefix, i)
                .is_some_and(|last| last + 1 != i)
            {
                return false;
            }
        }
    }
    items.windows(2).all(|pair| {
        let (a, b) = (
            sort_key(old, new, &pair[0].path),
            sort_key(old, new, &pair[1].path),
        );
        match a.iter().zip(&b).find(|(x, y)| x.1 != y.1) {
            Some((x, y)) => x.0 <= y.0,
            None => true,
        }
    })
}

// ------------------------------------------------------------------------------------------------
// Target 3: the changing cause, every combination of what decides it.

struct CauseCase {
    label: String,
    body: Value,
    event: Option<&'static str>,
    initial: bool,
}

struct OurCause {
    reason: String,
    initial: bool,
    deleted: bool,
}

impl CauseCase {
    fn request(&self) -> Value {
        json!({"body": self.body, "type": self.event, "initial": self.initial})
    }

    fn ours(&self) -> OurCause {
        let essence = Essence::load(
            &DiffBaseStorage::default(),
            &ProgressStorage::default(),
            &self.body,
            &[],
        )
        .expect("the cause cases store readable diff-bases");
        let cause = our_cause(&self.body, self.event, self.initial, &essence);
        let observed = Observed::of(&self.body, DEFAULT_FINALIZER, &essence, self.initial);
        let view = observed.view(&self.body, &essence);
        OurCause {
            reason: cause_name(cause).to_owned(),
            initial: view.initial,
            deleted: view.deleted,
        }
    }

    /// The reason; for causes that run (not GONE: the runtime stops there), also whether resume
    /// handlers are mixed in (`initial`) and whether the object is being deleted.
    fn compare(&self, ours: &OurCause, kopf: &Value) -> Result<(), Mismatch> {
        let kopf_reason = kopf["reason"].as_str().unwrap_or("?");
        expect_eq("the reason", &ours.reason, kopf_reason)?;
        if ours.reason != "gone" {
            expect_eq(
                "initial (resume handlers mixed in)",
                &ours.initial.to_string(),
                &kopf["initial"].to_string(),
            )?;
            expect_eq(
                "deleted",
                &ours.deleted.to_string(),
                &kopf["deleted"].to_string(),
            )?;
        }
        Ok(())
    }
}

/// Every combination of: the raw event type, `deletionTimestamp`, the finalizers, the stored
/// diff-base (absent, `null`, equal, equal once cleared or by Python's `==`, different) and
/// the initial listing.
fn cause_cases() -> Vec<CauseCase> {
    let stored_meta = json!({"labels": {"app": "a"}, "annotations": {"note": "kept"}});
    let python = |essence: &Value| DiffBaseStorage::encode(essence);
    let diffbases: Vec<(&str, Option<String>)> = vec![
        ("no diff-base", None),
        ("diff-base null", Some("null".into())),
        (
            "same essence",
            Some(python(
                &json!({"spec": {"n": 1, "s": "x"}, "metadata": stored_meta}),
            )),
        ),
        (
            "same once cleared",
            Some(python(&json!({
                "spec": {"n": 1, "s": "x"},
                "metadata": {
                    "labels": {"app": "a"},
                    "annotations": {"note": "kept", "kopf.zalando.org/h": "{}"},
                },
                "status": {"kopf": {"progress": {"h": {}}}},
            }))),
        ),
        (
            "same for Python (true for 1, another key order)",
            Some(format!(
                r#"{{"metadata":{stored_meta},"spec":{{"s":"x","n":true}}}}"#
            )),
        ),
        (
            "changed",
            Some(python(
                &json!({"spec": {"n": 2, "s": "x"}, "metadata": stored_meta}),
            )),
        ),
    ];
    let finalizers: Vec<(&str, Option<Value>)> = vec![
        ("no finalizers", None),
        ("finalizers []", Some(json!([]))),
        ("another finalizer", Some(json!(["example.com/other"]))),
        ("ours", Some(json!([DEFAULT_FINALIZER]))),
        (
            "another and ours",
            Some(json!(["example.com/other", DEFAULT_FINALIZER])),
        ),
        (
            "a near miss of ours",
            Some(json!(["kopf.zalando.org/kopffinalizermarker"])),
        ),
    ];
    let deletions: Vec<(&str, Option<Value>)> = vec![
        ("not deleted", None),
        ("deleted", Some(json!("2026-01-01T00:00:00Z"))),
        ("deletionTimestamp null", Some(Value::Null)),
    ];
    let mut cases = Vec::new();
    for event in [None, Some("ADDED"), Some("MODIFIED"), Some("DELETED")] {
        for (deletion_label, deletion) in &deletions {
            for (finalizer_label, finalizer_list) in &finalizers {
                for (diffbase_label, diffbase) in &diffbases {
                    for initial in [false, true] {
                        let mut annotations = Map::new();
                        annotations.insert("note".into(), json!("kept"));
                        if let Some(stored) = diffbase {
                            annotations.insert(
                                "kopf.zalando.org/last-handled-configuration".into(),
                                json!(stored),
                            );
                        }
                        let mut metadata = json!({
                            "name": "c", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
                            "labels": {"app": "a"},
                        });
                        if let Some(deletion) = deletion {
                            metadata["deletionTimestamp"] = deletion.clone();
                        }
                        if let Some(list) = finalizer_list {
                            metadata["finalizers"] = list.clone();
                        }
                        metadata["annotations"] = Value::Object(annotations);
                        let body = json!({
                            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
                            "metadata": metadata,
                            "spec": {"n": 1, "s": "x"},
                            "status": {"phase": "Running"},
                        });
                        let label = format!(
                            "event {event:?}, {deletion_label}, {finalizer_label}, {diffbase_label}, initial={initial}"
                        );
                        cases.push(CauseCase {
                            label,
                            body,
                            event,
                            initial,
                        });
                    }
                }
            }
        }
    }
    cases
}
