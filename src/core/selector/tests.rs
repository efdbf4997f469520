use std::collections::HashMap;

use super::*;

struct Props(HashMap<&'static str, Value>);

impl Values for Props {
    fn get(&self, identifier: &str) -> Option<Value> {
        self.0.get(identifier).cloned()
    }
}

fn props() -> Props {
    Props(HashMap::from([
        ("color", Value::Str("red".into())),
        ("weight", Value::Int(42)),
        ("price", Value::Float(9.5)),
        ("rush", Value::Bool(true)),
        ("JMSPriority", Value::Int(7)),
        ("quote", Value::Str("it's".into())),
        ("path", Value::Str("a_b%c".into())),
    ]))
}

fn yes(s: &str) -> bool {
    Selector::parse(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .matches(&props())
}

#[test]
fn comparisons_of_each_type() {
    assert!(yes("color = 'red'"));
    assert!(yes("color <> 'blue'"));
    assert!(yes("color < 'z'"), "strings order lexically, as in Artemis");
    assert!(yes("weight > 40 AND weight <= 42"));
    assert!(yes("price < 10"));
    assert!(yes("weight = 42.0"), "numbers compare across widths");
    assert!(yes("rush = TRUE"));
    assert!(!yes("rush = 1"), "a boolean is not a number");
    assert!(
        yes("rush <> 1"),
        "values of different types are never equal"
    );
    assert!(
        yes("NOT (color = 3)"),
        "a type mismatch is false, not unknown"
    );
    assert!(!yes("color > 3") && !yes("color < 3"), "nor ordered");
    assert!(!yes("weight LIKE '4%'") && yes("weight NOT LIKE '4%'"));
    assert!(!yes("weight IN ('42')") && yes("weight NOT IN ('42')"));
    assert!(!yes("color BETWEEN 1 AND 2") && !yes("color NOT BETWEEN 1 AND 2"));
    assert!(yes("JMSPriority >= 5"));
    assert!(yes("quote = 'it''s'"));
}

#[test]
fn logic_is_three_valued() {
    assert!(!yes("missing = 1"));
    assert!(!yes("NOT (missing = 1)"), "NOT unknown is unknown");
    assert!(yes("missing = 1 OR color = 'red'"));
    assert!(!yes("missing = 1 AND color = 'red'"));
    assert!(yes("missing IS NULL"));
    assert!(yes("color IS NOT NULL"));
    assert!(!yes("NULL = NULL"));
}

#[test]
fn like_between_in() {
    assert!(yes("color LIKE 'r%'"));
    assert!(yes("color LIKE '_ed'"));
    assert!(!yes("color LIKE 'r'"));
    assert!(yes("color NOT LIKE 'b%'"));
    assert!(yes(r"path LIKE 'a\_b\%c' ESCAPE '\'"));
    assert!(!yes(r"path LIKE 'a\_bx%' ESCAPE '\'"));
    assert!(yes("weight BETWEEN 40 AND 50"));
    assert!(yes("weight NOT BETWEEN 1 AND 10"));
    assert!(yes("color IN ('green', 'red')"));
    assert!(yes("color NOT IN ('green', 'blue')"));
    assert!(!yes("missing IN ('x')"));
}

#[test]
fn arithmetic_and_precedence() {
    assert!(yes("weight * 2 + 1 = 85"));
    assert!(yes("weight - 2 * 10 = 22"));
    assert!(yes("(weight - 2) * 10 = 400"));
    assert!(yes("weight / 5 = 8"), "integer division");
    assert!(yes("price * 2 = 19"));
    assert!(yes("-weight = -42"));
    assert!(!yes("weight / 0 = 1"), "division by zero is unknown");
    assert!(!yes("color + 1 = 1"));
    assert!(yes("1E2 = 100 AND 2.5e-1 = 0.25"));
}

#[test]
fn keywords_are_case_insensitive_identifiers_are_not() {
    assert!(yes("color = 'red' and not (weight < 0)"));
    assert!(!yes("Color = 'red'"));
}

#[test]
fn bad_selectors_say_where() {
    for (text, at) in [
        ("color = ", 8),
        ("color == 'red'", 7),
        ("'unterminated", 0),
        ("weight BETWEEN 1", 16),
        ("color IN (1, 2)", 10),
        ("AND", 0),
        ("color = 'red' extra", 14),
        ("weight # 3", 7),
    ] {
        let e = Selector::parse(text).expect_err(text);
        assert_eq!(e.position, at, "{text}: {e}");
    }
}

/// The message of a parse error for `text`.
fn refusal(text: &str) -> String {
    Selector::parse(text)
        .map(|_| ())
        .expect_err("refused")
        .message
}

#[test]
fn nesting_past_the_limit_is_refused_naming_it() {
    let ok = format!("{}a = 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    Selector::parse(&ok).expect("at the limit");
    let deep = format!("{}a = 1{}", "(".repeat(1500), ")".repeat(1500));
    assert!(refusal(&deep).contains("64 levels (the limit)"));
    for text in [
        format!("{}a = 1", "NOT ".repeat(20_000)),
        format!("a = {}1", "- ".repeat(20_000)),
        format!("a = {}1", "+ ".repeat(20_000)),
        format!("a = {}b", "-".repeat(20_000)),
    ] {
        assert!(refusal(&text).contains("(the limit)"), "{}", &text[..20]);
    }
}

#[test]
fn long_chains_are_refused_by_their_terms_or_length() {
    let chain = |op: &str, n: usize| vec!["a = 1"; n].join(op);
    Selector::parse(&chain(" OR ", 200)).expect("200 comparisons");
    assert!(refusal(&chain(" OR ", 300)).contains("1000 terms"));
    assert!(refusal(&chain(" OR ", 10_000)).contains("16384"));
    let sum = format!("a = {}", vec!["1"; 600].join(" + "));
    assert!(refusal(&sum).contains("1000 terms"));
    let items = vec!["'x'"; 1200].join(", ");
    assert!(refusal(&format!("a IN ({items})")).contains("1000 terms"));
}

#[test]
fn like_patterns_past_the_limit_are_refused() {
    let ok = format!("s LIKE '{}'", "%_".repeat(MAX_LIKE_PATTERN / 2));
    Selector::parse(&ok).expect("at the limit");
    let long = format!("s LIKE '{}z'", "%_".repeat(30_000));
    assert!(refusal(&long).contains("16384"));
    let long = format!("s LIKE '{}z'", "%_".repeat(MAX_LIKE_PATTERN / 2));
    assert!(refusal(&long).contains("256 characters (the limit)"));
}

/// Half a runtime worker's stack (tokio's default is 2 MiB): the deepest
/// selector parses and evaluates on it even in a debug build, whose frames
/// are several times larger than an optimised build's.
const SMALL_STACK: usize = 1024 * 1024;

#[test]
fn the_deepest_and_longest_selectors_run_on_a_small_stack() {
    let levels = MAX_DEPTH / 2;
    let selectors = [
        format!(
            "{}a = 1{}",
            "(b = 2 OR ".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        ),
        format!(
            "weight = {}42{}",
            "-(0 + ".repeat(levels),
            ")".repeat(levels)
        ),
        format!(
            "{}color LIKE '%e_%'{}",
            "NOT (".repeat(levels),
            ")".repeat(levels)
        ),
        vec!["weight > 1"; 240].join(" AND "),
    ];
    let outcome = std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            selectors
                .iter()
                .map(|text| {
                    Selector::parse(text)
                        .expect("within the limits")
                        .matches(&props())
                })
                .collect::<Vec<_>>()
        })
        .expect("thread")
        .join()
        .expect("no stack overflow");
    assert_eq!(outcome, [false, levels.is_multiple_of(2), true, true]);
}

#[test]
fn identifiers_are_listed_once_and_looked_up_once() {
    use std::cell::Cell;
    struct Counting(Cell<usize>);
    impl Values for Counting {
        fn get(&self, _: &str) -> Option<Value> {
            self.0.set(self.0.get() + 1);
            Some(Value::Str("abc".into()))
        }
    }
    let s = Selector::parse("z LIKE 'a%' AND a = 'abc' AND z <> 'q' AND a IN ('abc')").unwrap();
    assert_eq!(s.identifiers(), ["a", "z"]);
    let values = Counting(Cell::new(0));
    assert!(s.matches(&values));
    assert_eq!(values.0.get(), 2);
}

#[test]
fn chains_keep_three_valued_logic_and_left_to_right_arithmetic() {
    assert!(yes("missing = 1 OR weight = 0 OR color = 'red'"));
    assert!(!yes("missing = 1 OR weight = 0"));
    assert!(!yes("color = 'red' AND missing = 1 AND rush"));
    assert!(
        yes("NOT (color = 'blue' AND missing = 1)"),
        "false AND unknown is false"
    );
    assert!(
        !yes("NOT (color = 'red' AND missing = 1)"),
        "true AND unknown is unknown"
    );
    assert!(yes(
        "100 - 10 - 5 = 85 AND 100 / 10 / 5 = 2 AND 2 * 3 - 4 / 2 = 4"
    ));
    assert!(!yes("weight + missing - 1 = 41"));
}

proptest::proptest! {
    #[test]
    fn like_agrees_with_the_textbook_algorithm(
        pattern in "[ab%_\\\\]{0,12}",
        value in "[abc_%]{0,16}",
    ) {
        let text = format!("v LIKE '{pattern}' ESCAPE '\\'");
        let selector = Selector::parse(&text).unwrap();
        let values = Props(HashMap::from([("v", Value::Str(value.as_str().into()))]));
        proptest::prop_assert_eq!(selector.matches(&values), textbook_like(&value, &pattern, '\\'));
    }
}

/// SQL LIKE by dynamic programming over (pattern, value) positions: the
/// reference the one-pass matcher is checked against.
pub(super) fn textbook_like(value: &str, pattern: &str, escape: char) -> bool {
    let mut items: Vec<Option<Option<char>>> = Vec::new(); // None: %, Some(None): _
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        items.push(match c {
            c if c == escape => match chars.next() {
                Some(n) => Some(Some(n)),
                None => continue,
            },
            '%' => None,
            '_' => Some(None),
            c => Some(Some(c)),
        });
    }
    let text: Vec<char> = value.chars().collect();
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for item in items {
        let mut next = vec![false; text.len() + 1];
        match item {
            None => {
                let mut seen = false;
                for i in 0..=text.len() {
                    seen |= row[i];
                    next[i] = seen;
                }
            }
            Some(lit) => {
                for i in 0..text.len() {
                    next[i + 1] = row[i] && lit.is_none_or(|l| l == text[i]);
                }
            }
        }
        row = next;
    }
    row[text.len()]
}
