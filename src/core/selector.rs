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
//! The module knows nothing of AMQP: a message's values come from a
//! [`Values`] the protocol layer provides.

use std::fmt;

/// A value a selector compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
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
    /// The value of `identifier`, or None if the message has none.
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
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let tokens = lex(text)?;
        let mut p = Parser { tokens, at: 0 };
        let expr = p.or()?;
        match p.peek() {
            Tok::End => Ok(Self {
                text: text.to_string(),
                expr,
            }),
            _ => Err(p.error("unexpected text after the end of the expression")),
        }
    }

    /// The selector's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a message with these values is selected.
    pub fn matches(&self, values: &dyn Values) -> bool {
        eval(&self.expr, values) == Tri::Value(Value::Bool(true))
    }
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A literal.
    Lit(Value),
    /// `NULL`.
    Null,
    /// An identifier.
    Ident(String),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `a AND b`.
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`.
    Or(Box<Expr>, Box<Expr>),
    /// A comparison.
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    /// Arithmetic.
    Arith(char, Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// `e [NOT] BETWEEN lo AND hi`.
    Between(bool, Box<Expr>, Box<Expr>, Box<Expr>),
    /// `e [NOT] LIKE pattern [ESCAPE c]`.
    Like(bool, Box<Expr>, String, Option<char>),
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

/// A token.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier or keyword (keywords matched case-insensitively).
    Word(String),
    /// A string literal.
    Str(String),
    /// An exact number.
    Int(i64),
    /// An approximate number.
    Float(f64),
    /// An operator or parenthesis.
    Op(&'static str),
    /// The end of the text.
    End,
}

/// Splits selector text into tokens, each with its position.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, SelectorError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |position, message: &str| SelectorError {
        position,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(start, "unterminated string literal")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                // An exponent may carry a sign: 1E-3.
                if matches!(chars[i], 'e' | 'E') && matches!(chars.get(i + 1), Some('+' | '-')) {
                    i += 1;
                }
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let trimmed = word.trim_end_matches(['l', 'L']);
            let tok = if let Ok(n) = trimmed.parse::<i64>() {
                Tok::Int(n)
            } else if let Some(hex) = trimmed
                .strip_prefix("0x")
                .or_else(|| trimmed.strip_prefix("0X"))
            {
                i64::from_str_radix(hex, 16)
                    .map(Tok::Int)
                    .map_err(|_| err(start, "bad hexadecimal number"))?
            } else {
                let f = word.trim_end_matches(['f', 'F', 'd', 'D']);
                f.parse::<f64>()
                    .map(Tok::Float)
                    .map_err(|_| err(start, "bad number"))?
            };
            out.push((tok, start));
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '$'
                    || chars[i] == '.')
            {
                i += 1;
            }
            out.push((Tok::Word(chars[start..i].iter().collect()), start));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "<>" => Some("<>"),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(op) = op {
            out.push((Tok::Op(op), start));
            i += 2;
            continue;
        }
        let op = match c {
            '=' => "=",
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '(' => "(",
            ')' => ")",
            ',' => ",",
            _ => return Err(err(start, &format!("unexpected character '{c}'"))),
        };
        out.push((Tok::Op(op), start));
        i += 1;
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

/// A recursive-descent parser over the tokens.
struct Parser {
    /// The tokens and their positions.
    tokens: Vec<(Tok, usize)>,
    /// The next token.
    at: usize,
}

impl Parser {
    /// The next token.
    fn peek(&self) -> &Tok {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    /// An error at the next token.
    fn error(&self, message: &str) -> SelectorError {
        SelectorError {
            position: self.tokens[self.at.min(self.tokens.len() - 1)].1,
            message: message.to_string(),
        }
    }

    /// Takes the next token.
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.at += 1;
        t
    }

    /// Whether the next token is keyword `kw` (taken if so).
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(kw)) {
            self.at += 1;
            return true;
        }
        false
    }

    /// Takes a string literal, or fails with `message` at the next token.
    fn string(&mut self, message: &str) -> Result<String, SelectorError> {
        match self.peek() {
            Tok::Str(s) => {
                let s = s.clone();
                self.at += 1;
                Ok(s)
            }
            _ => Err(self.error(message)),
        }
    }

    /// Whether the next token is operator `op` (taken if so).
    fn op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Tok::Op(o) if *o == op) {
            self.at += 1;
            return true;
        }
        false
    }

    /// `a OR b OR ...`.
    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut e = self.and()?;
        while self.keyword("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    /// `a AND b AND ...`.
    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut e = self.not()?;
        while self.keyword("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    /// `NOT e`.
    fn not(&mut self) -> Result<Expr, SelectorError> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    /// A comparison, or the other predicates.
    fn comparison(&mut self) -> Result<Expr, SelectorError> {
        let left = self.sum()?;
        let cmp = match self.peek() {
            Tok::Op("=") => Some(Cmp::Eq),
            Tok::Op("<>") => Some(Cmp::Ne),
            Tok::Op("<") => Some(Cmp::Lt),
            Tok::Op("<=") => Some(Cmp::Le),
            Tok::Op(">") => Some(Cmp::Gt),
            Tok::Op(">=") => Some(Cmp::Ge),
            _ => None,
        };
        if let Some(cmp) = cmp {
            self.at += 1;
            let right = self.sum()?;
            return Ok(Expr::Cmp(cmp, Box::new(left), Box::new(right)));
        }
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if !self.keyword("NULL") {
                return Err(self.error("expected NULL after IS"));
            }
            return Ok(Expr::IsNull(negated, Box::new(left)));
        }
        let negated = self.keyword("NOT");
        if self.keyword("BETWEEN") {
            let lo = self.sum()?;
            if !self.keyword("AND") {
                return Err(self.error("expected AND in BETWEEN"));
            }
            let hi = self.sum()?;
            return Ok(Expr::Between(
                negated,
                Box::new(left),
                Box::new(lo),
                Box::new(hi),
            ));
        }
        if self.keyword("LIKE") {
            let pattern = self.string("expected a string pattern after LIKE")?;
            let escape = if self.keyword("ESCAPE") {
                let at = self.at;
                let e = self.string("ESCAPE needs a one-character string")?;
                if e.chars().count() != 1 {
                    self.at = at;
                    return Err(self.error("ESCAPE needs a one-character string"));
                }
                e.chars().next()
            } else {
                None
            };
            return Ok(Expr::Like(negated, Box::new(left), pattern, escape));
        }
        if self.keyword("IN") {
            if !self.op("(") {
                return Err(self.error("expected ( after IN"));
            }
            let mut items = Vec::new();
            loop {
                items.push(self.string("IN takes a list of string literals")?);
                if self.op(")") {
                    break;
                }
                if !self.op(",") {
                    return Err(self.error("expected , or ) in IN list"));
                }
            }
            return Ok(Expr::In(negated, Box::new(left), items));
        }
        if negated {
            return Err(self.error("expected BETWEEN, LIKE or IN after NOT"));
        }
        Ok(left)
    }

    /// `a + b - c ...`.
    fn sum(&mut self) -> Result<Expr, SelectorError> {
        let mut e = self.product()?;
        loop {
            if self.op("+") {
                e = Expr::Arith('+', Box::new(e), Box::new(self.product()?));
            } else if self.op("-") {
                e = Expr::Arith('-', Box::new(e), Box::new(self.product()?));
            } else {
                return Ok(e);
            }
        }
    }

    /// `a * b / c ...`.
    fn product(&mut self) -> Result<Expr, SelectorError> {
        let mut e = self.unary()?;
        loop {
            if self.op("*") {
                e = Expr::Arith('*', Box::new(e), Box::new(self.unary()?));
            } else if self.op("/") {
                e = Expr::Arith('/', Box::new(e), Box::new(self.unary()?));
            } else {
                return Ok(e);
            }
        }
    }

    /// `-e`, `+e`, or a primary.
    fn unary(&mut self) -> Result<Expr, SelectorError> {
        if self.op("-") {
            return Ok(match self.unary()? {
                Expr::Lit(Value::Int(n)) => Expr::Lit(Value::Int(n.wrapping_neg())),
                Expr::Lit(Value::Float(f)) => Expr::Lit(Value::Float(-f)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        if self.op("+") {
            return self.unary();
        }
        self.primary()
    }

    /// A literal, an identifier, or a parenthesised expression.
    fn primary(&mut self) -> Result<Expr, SelectorError> {
        match self.next() {
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Int(n) => Ok(Expr::Lit(Value::Int(n))),
            Tok::Float(f) => Ok(Expr::Lit(Value::Float(f))),
            Tok::Op("(") => {
                let e = self.or()?;
                if !self.op(")") {
                    return Err(self.error("expected )"));
                }
                Ok(e)
            }
            Tok::Word(w) => {
                let upper = w.to_ascii_uppercase();
                match upper.as_str() {
                    "TRUE" => Ok(Expr::Lit(Value::Bool(true))),
                    "FALSE" => Ok(Expr::Lit(Value::Bool(false))),
                    "NULL" => Ok(Expr::Null),
                    "AND" | "OR" | "NOT" | "BETWEEN" | "LIKE" | "IN" | "IS" | "ESCAPE" => {
                        self.at -= 1;
                        Err(self.error(&format!("unexpected keyword {upper}")))
                    }
                    _ => Ok(Expr::Ident(w)),
                }
            }
            Tok::End => {
                self.at -= 1;
                Err(self.error("unexpected end of selector"))
            }
            Tok::Op(op) => {
                self.at -= 1;
                Err(self.error(&format!("unexpected '{op}'")))
            }
        }
    }
}

/// A three-valued result.
#[derive(Debug, Clone, PartialEq)]
enum Tri {
    /// A value.
    Value(Value),
    /// NULL / unknown.
    Unknown,
}

/// Evaluates an expression.
fn eval(e: &Expr, v: &dyn Values) -> Tri {
    use Tri::{Unknown, Value as V};
    let boolean = |b: bool| V(Value::Bool(b));
    match e {
        Expr::Lit(x) => V(x.clone()),
        Expr::Null => Unknown,
        Expr::Ident(name) => v.get(name).map_or(Unknown, V),
        Expr::Not(a) => match eval(a, v) {
            V(Value::Bool(b)) => boolean(!b),
            _ => Unknown,
        },
        Expr::And(a, b) => match (truth(eval(a, v)), truth(eval(b, v))) {
            (Some(false), _) | (_, Some(false)) => boolean(false),
            (Some(true), Some(true)) => boolean(true),
            _ => Unknown,
        },
        Expr::Or(a, b) => match (truth(eval(a, v)), truth(eval(b, v))) {
            (Some(true), _) | (_, Some(true)) => boolean(true),
            (Some(false), Some(false)) => boolean(false),
            _ => Unknown,
        },
        Expr::Cmp(op, a, b) => match (eval(a, v), eval(b, v)) {
            (V(x), V(y)) => boolean(compare(*op, &x, &y)),
            _ => Unknown,
        },
        Expr::Arith(op, a, b) => match (number(eval(a, v)), number(eval(b, v))) {
            (Some(x), Some(y)) => arith(*op, x, y).map_or(Unknown, V),
            _ => Unknown,
        },
        Expr::Neg(a) => match number(eval(a, v)) {
            Some(Value::Int(n)) => V(Value::Int(n.wrapping_neg())),
            Some(Value::Float(f)) => V(Value::Float(-f)),
            _ => Unknown,
        },
        // `x BETWEEN l AND h` is `x >= l AND x <= h`, and `NOT BETWEEN` is
        // `x < l OR x > h` (as ActiveMQ and Artemis build them), so a value
        // of another type is in neither.
        Expr::Between(negated, a, lo, hi) => {
            let (x, l, h) = (eval(a, v), eval(lo, v), eval(hi, v));
            match (x, l, h) {
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
        Expr::Like(negated, a, pattern, escape) => match eval(a, v) {
            V(Value::Str(s)) => boolean(like(&s, pattern, *escape) != *negated),
            V(_) => boolean(*negated),
            Unknown => Unknown,
        },
        Expr::In(negated, a, items) => match eval(a, v) {
            V(Value::Str(s)) => boolean(items.contains(&s) != *negated),
            V(_) => boolean(*negated),
            Unknown => Unknown,
        },
        Expr::IsNull(negated, a) => boolean(matches!(eval(a, v), Unknown) != *negated),
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

/// SQL LIKE: `_` one character, `%` any, `escape` makes the next literal.
fn like(s: &str, pattern: &str, escape: Option<char>) -> bool {
    // Pattern items: Some(c) a literal, None for '_', and a separate marker
    // for '%'.
    #[derive(Clone, Copy)]
    enum P {
        Lit(char),
        One,
        Any,
    }
    let mut items = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            if let Some(n) = chars.next() {
                items.push(P::Lit(n));
            }
            continue;
        }
        items.push(match c {
            '_' => P::One,
            '%' => P::Any,
            c => P::Lit(c),
        });
    }
    let text: Vec<char> = s.chars().collect();
    // Dynamic programming over (pattern position, text position).
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for item in &items {
        let mut next = vec![false; text.len() + 1];
        match item {
            P::Any => {
                let mut seen = false;
                for i in 0..=text.len() {
                    seen |= row[i];
                    next[i] = seen;
                }
            }
            P::One => next[1..].copy_from_slice(&row[..text.len()]),
            P::Lit(c) => {
                for i in 0..text.len() {
                    next[i + 1] = row[i] && text[i] == *c;
                }
            }
        }
        row = next;
    }
    row[text.len()]
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
