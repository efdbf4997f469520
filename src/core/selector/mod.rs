//! JMS message selectors (SPEC, issue "JMS-era features"): the SQL-92
//! subset of the JMS specification (3.8.1), parsed once when a consumer
//! attaches and evaluated once per message per consumer.
//!
//! Grammar, loosest first: `OR`, `AND`, `NOT`, comparisons (`=`, `<>`, `<`,
//! `<=`, `>`, `>=`, `[NOT] BETWEEN a AND b`, `[NOT] LIKE 'pat' [ESCAPE 'c']`,
//! `[NOT] IN ('a', 'b')`, `IS [NOT] NULL`), `+ -`, `* /`, unary `+ -`,
//! then literals (`'string'` with `''` for a quote, integers, decimals and
//! exponents, `TRUE`, `FALSE`, `NULL`), identifiers and parentheses.
//! Keywords are case-insensitive, identifiers are not.
//!
//! Evaluation uses SQL's three-valued logic: an unknown identifier (or
//! arithmetic on a non-number) is unknown, and a message is selected only
//! when the whole selector is true. Values of different types compare as
//! JMS 3.8.1.2 and ActiveMQ/Artemis say: `=` false, `<>` true, ordering
//! false; strings order lexically (Artemis), LIKE and IN on a non-string
//! are false.
//!
//! A selector comes from any client, so what it may cost is bounded when
//! it is parsed ([`MAX_LENGTH`], [`MAX_DEPTH`], [`MAX_TERMS`],
//! [`MAX_LIKE_PATTERN`]): chains of `AND`, `OR`, `+` or `*` are flat lists,
//! so the parser's and the evaluator's recursion is as deep as the
//! selector's nesting (parentheses, `NOT`, unary signs) and no deeper; one
//! evaluation visits each term once, looks each identifier up once, and a
//! `LIKE` reads its value once (`like.rs`).
//!
//! The module knows nothing of AMQP: a message's values come from a
//! [`Values`] the protocol layer provides.

mod like;
mod parse;

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use like::LikePattern;

/// Longest selector accepted, in bytes of its text.
pub const MAX_LENGTH: usize = 16 * 1024;
/// Deepest nesting accepted: each parenthesis, `NOT` and unary sign opens a
/// level.
pub const MAX_DEPTH: usize = 64;
/// Most terms accepted: every literal, identifier, operator and `IN` list
/// item counts as one.
pub const MAX_TERMS: usize = 1000;
/// Longest `LIKE` pattern accepted, in characters.
pub const MAX_LIKE_PATTERN: usize = 256;

/// A value a selector compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (shared: a large property is read once per evaluation and
    /// never copied).
    Str(Arc<str>),
    /// An exact number (JMS byte, short, int, long).
    Int(i64),
    /// An approximate number (JMS float, double).
    Float(f64),
    /// A boolean.
    Bool(bool),
}

/// Where a selector reads a message's values: its JMS headers
/// (`JMSPriority`, `JMSMessageID`, ...) and application properties.
pub trait Values {
    /// The value of `identifier`, or None if the message has none. Asked
    /// at most once per identifier and evaluation.
    fn get(&self, identifier: &str) -> Option<Value>;
}

/// Evaluates a selector against a message: the protocol layer's reading
/// of the message's values (it knows how they are encoded).
pub type Evaluator = fn(&Selector, &crate::core::Message) -> bool;

/// A consumer's or a subscription's selector, with the function that
/// evaluates it against a message.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The selector.
    pub selector: Selector,
    /// How to evaluate it.
    pub evaluate: Evaluator,
}

impl Filter {
    /// Whether `message` is selected.
    pub fn matches(&self, message: &crate::core::Message) -> bool {
        (self.evaluate)(&self.selector, message)
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.selector.text == other.selector.text
    }
}

impl Eq for Filter {}

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at character {position}: {message}")]
pub struct SelectorError {
    /// Where (0-based character index).
    pub position: usize,
    /// What was wrong.
    pub message: String,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The text as given.
    text: String,
    /// Its expression.
    expr: Expr,
    /// The identifiers it reads, sorted and distinct; [`Expr::Ident`]
    /// holds an index into it, so one evaluation looks each up once.
    identifiers: Vec<String>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Selector {
    /// Parses a selector; one past a limit of this module is refused with
    /// an error naming the limit.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let (expr, identifiers) = parse::parse(text)?;
        Ok(Self {
            text: text.to_string(),
            expr,
            identifiers,
        })
    }

    /// The selector's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The identifiers the selector reads, sorted and distinct (so a
    /// [`Values`] can read them all in one pass over a message).
    pub fn identifiers(&self) -> &[String] {
        &self.identifiers
    }

    /// Whether a message with these values is selected.
    pub fn matches(&self, values: &dyn Values) -> bool {
        let scope = Scope {
            values,
            identifiers: &self.identifiers,
            looked_up: RefCell::new(vec![None; self.identifiers.len()]),
        };
        scope.eval(&self.expr) == Tri::Value(Value::Bool(true))
    }
}

/// An expression. Chains of one operator are flat lists, so that the tree
/// is only as deep as the text's nesting.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A literal.
    Lit(Value),
    /// `NULL`.
    Null,
    /// An identifier: its index in [`Selector::identifiers`].
    Ident(usize),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `a AND b AND ...`.
    And(Vec<Expr>),
    /// `a OR b OR ...`.
    Or(Vec<Expr>),
    /// A comparison.
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    /// `a + b - c ...` or `a * b / c ...`: the first operand, then each
    /// operator with its right operand, applied left to right.
    Arith(Box<Expr>, Vec<(char, Expr)>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// `e [NOT] BETWEEN lo AND hi`.
    Between(bool, Box<Expr>, Box<Expr>, Box<Expr>),
    /// `e [NOT] LIKE pattern [ESCAPE c]`.
    Like(bool, Box<Expr>, Box<LikePattern>),
    /// `e [NOT] IN (...)`.
    In(bool, Box<Expr>, Vec<String>),
    /// `e IS [NOT] NULL`.
    IsNull(bool, Box<Expr>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    /// `=`.
    Eq,
    /// `<>`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// A three-valued result.
#[derive(Debug, Clone, PartialEq)]
enum Tri {
    /// A value.
    Value(Value),
    /// NULL / unknown.
    Unknown,
}

/// One evaluation: the message's values, each identifier's looked up once.
struct Scope<'a> {
    /// The message's values.
    values: &'a dyn Values,
    /// The selector's identifiers.
    identifiers: &'a [String],
    /// Each identifier's value once looked up (outer None: not yet).
    looked_up: RefCell<Vec<Option<Option<Value>>>>,
}

impl Scope<'_> {
    /// The value of identifier `index`.
    fn ident(&self, index: usize) -> Tri {
        if let Some(Some(known)) = self.looked_up.borrow().get(index) {
            return known.clone().map_or(Tri::Unknown, Tri::Value);
        }
        let value = self
            .identifiers
            .get(index)
            .and_then(|name| self.values.get(name));
        if let Some(slot) = self.looked_up.borrow_mut().get_mut(index) {
            *slot = Some(value.clone());
        }
        value.map_or(Tri::Unknown, Tri::Value)
    }

    /// Evaluates an expression (recursion as deep as the selector's
    /// nesting, which parsing bounds).
    fn eval(&self, e: &Expr) -> Tri {
        use Tri::{Unknown, Value as V};
        let boolean = |b: bool| V(Value::Bool(b));
        match e {
            Expr::Lit(x) => V(x.clone()),
            Expr::Null => Unknown,
            Expr::Ident(index) => self.ident(*index),
            Expr::Not(a) => match self.eval(a) {
                V(Value::Bool(b)) => boolean(!b),
                _ => Unknown,
            },
            // False wins over unknown, which wins over true.
            Expr::And(items) => {
                let mut unknown = false;
                for item in items {
                    match truth(self.eval(item)) {
                        Some(false) => return boolean(false),
                        Some(true) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    Unknown
                } else {
                    boolean(true)
                }
            }
            // True wins over unknown, which wins over false.
            Expr::Or(items) => {
                let mut unknown = false;
                for item in items {
                    match truth(self.eval(item)) {
                        Some(true) => return boolean(true),
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    Unknown
                } else {
                    boolean(false)
                }
            }
            Expr::Cmp(op, a, b) => match (self.eval(a), self.eval(b)) {
                (V(x), V(y)) => boolean(compare(*op, &x, &y)),
                _ => Unknown,
            },
            Expr::Arith(first, rest) => {
                let mut acc = number(self.eval(first));
                for (op, operand) in rest {
                    let Some(x) = acc else {
                        return Unknown;
                    };
                    acc = number(self.eval(operand)).and_then(|y| arith(*op, x, y));
                }
                acc.map_or(Unknown, V)
            }
            Expr::Neg(a) => match number(self.eval(a)) {
                Some(Value::Int(n)) => V(Value::Int(n.wrapping_neg())),
                Some(Value::Float(f)) => V(Value::Float(-f)),
                _ => Unknown,
            },
            // `x BETWEEN l AND h` is `x >= l AND x <= h`, and `NOT BETWEEN` is
            // `x < l OR x > h` (as ActiveMQ and Artemis build them), so a value
            // of another type is in neither.
            Expr::Between(negated, a, lo, hi) => {
                match (self.eval(a), self.eval(lo), self.eval(hi)) {
                    (V(x), V(l), V(h)) => boolean(if *negated {
                        compare(Cmp::Lt, &x, &l) || compare(Cmp::Gt, &x, &h)
                    } else {
                        compare(Cmp::Ge, &x, &l) && compare(Cmp::Le, &x, &h)
                    }),
                    _ => Unknown,
                }
            }
            // LIKE and IN on a value that is not a string: false (so NOT LIKE
            // and NOT IN are true), as in ActiveMQ and Artemis.
            Expr::Like(negated, a, pattern) => match self.eval(a) {
                V(Value::Str(s)) => boolean(pattern.matches(&s) != *negated),
                V(_) => boolean(*negated),
                Unknown => Unknown,
            },
            Expr::In(negated, a, items) => match self.eval(a) {
                V(Value::Str(s)) => boolean(items.iter().any(|i| **i == *s) != *negated),
                V(_) => boolean(*negated),
                Unknown => Unknown,
            },
            Expr::IsNull(negated, a) => boolean(matches!(self.eval(a), Unknown) != *negated),
        }
    }
}

/// The boolean of a result, if it is one.
fn truth(t: Tri) -> Option<bool> {
    match t {
        Tri::Value(Value::Bool(b)) => Some(b),
        _ => None,
    }
}

/// The number of a result, if it is one.
fn number(t: Tri) -> Option<Value> {
    match t {
        Tri::Value(v @ (Value::Int(_) | Value::Float(_))) => Some(v),
        _ => None,
    }
}

/// Arithmetic: integers stay integers (division too, as in Java), a float
/// makes the result a float; dividing an integer by zero is unknown.
fn arith(op: char, x: Value, y: Value) -> Option<Value> {
    match (x, y) {
        (Value::Int(a), Value::Int(b)) => Some(Value::Int(match op {
            '+' => a.wrapping_add(b),
            '-' => a.wrapping_sub(b),
            '*' => a.wrapping_mul(b),
            _ => a.checked_div(b)?,
        })),
        (a, b) => {
            let (a, b) = (float(&a)?, float(&b)?);
            Some(Value::Float(match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ => a / b,
            }))
        }
    }
}

/// A number as a float.
fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Int(n) => Some(*n as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Compares two values as JMS (3.8.1.2) and ActiveMQ/Artemis do: numbers
/// with numbers of any width, strings with strings (lexically, as Artemis
/// allows), booleans for (in)equality; values of different types are
/// never equal (`=` is false, `<>` true) and never ordered (false).
fn compare(op: Cmp, x: &Value, y: &Value) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (x, y) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => match op {
            Cmp::Eq => return a == b,
            Cmp::Ne => return a != b,
            _ => None,
        },
        (a, b) => match (float(a), float(b)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
    };
    match (op, ord) {
        (Cmp::Eq, o) => o == Some(Ordering::Equal),
        (Cmp::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => false,
        (Cmp::Lt, Some(o)) => o == Ordering::Less,
        (Cmp::Le, Some(o)) => o != Ordering::Greater,
        (Cmp::Gt, Some(o)) => o == Ordering::Greater,
        (Cmp::Ge, Some(o)) => o != Ordering::Less,
    }
}

#[cfg(test)]
mod tests;
