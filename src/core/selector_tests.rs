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
